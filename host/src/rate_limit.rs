//! Per-client rate limits (`[rate_limit]`): how many store operations a second one
//! client may make, whatever frontend it comes through, decided in the host so every
//! frontend (a third party's and a WASM one too) gets the same limit.
//!
//! * **Who is a client.** The principal the request hook verified (a token's subject, a
//!   client certificate's name) when there is one, so a client keeps its limit across
//!   connections and addresses; else the peer's IP address (every port of it); else,
//!   for a frontend that carries no peer, the frontend.
//! * **What is counted.** Each read, write, delete and atomic update is one operation
//!   (an `MSET` of ten keys is ten). A token bucket per client refills at `per_client`
//!   a second up to `burst`; an operation with no whole token left is refused at once
//!   with `rate limited` (REST 429 with `Retry-After`, gRPC RESOURCE_EXHAUSTED, a RESP
//!   error), and nothing of it is done.
//! * **Multi-key commands are not split.** A frontend asks the host about every key of a
//!   multi-key command before making any of it (`check`: `MSET`, `DEL`, `MGET`). That
//!   question is refused if the client has no token left; otherwise it takes nothing
//!   and grants that connection one operation on that key, admitted even past the
//!   client's last token, within [`crate::overload::BURST`]. So an `MSET` of ten keys
//!   whose questions pass is written whole: its ten writes take the bucket into debt,
//!   which later operations repay, and the long-run rate holds. A grant is good only
//!   for its key on its connection (the peer address with its port), so neither another
//!   connection of the client nor another command rides along on it.
//!
//! Hand-rolled rather than `governor`: its GCRA cannot peek without consuming, nor go
//! into debt, which the two rules above need; the bucket itself is a few lines.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use kvs_plugin_api::PluginError;

use crate::caller::Caller;

pub use kvs_config::RateLimitConfig;

/// Most clients tracked at once. Past it, buckets that are full or idle for
/// [`FORGET_AFTER`] are dropped; a new client that still finds no room is let through
/// untracked (and logged), so a flood of addresses can neither grow memory nor lock out
/// clients it has nothing to do with.
const MAX_CLIENTS: usize = 65_536;
/// A bucket untouched this long may be forgotten to make room (its debt with it).
const FORGET_AFTER: Duration = Duration::from_secs(10);

/// One client's bucket.
struct Bucket {
    /// Whole and partial tokens; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// What `check`s of multi-key commands granted, per connection.
    grants: Vec<Grants>,
}

/// The operations one connection was granted by the `check`s of a multi-key command:
/// one per key asked about (by a hash of the key), usable only on that key by that
/// connection, admitted into debt, until `until`. So a command asked about whole is
/// served whole, and nothing else — another key, another connection — rides along.
struct Grants {
    /// The connection (the peer address with its port).
    peer: Box<str>,
    keys: HashMap<u64, u32>,
    /// Grants left, all keys.
    count: usize,
    until: Instant,
}

/// Most keys one connection may have granted at once (a command of more keys is
/// refused whole while a rate limit is set).
const MAX_GRANTED_KEYS: usize = 100_000;
/// Most connections of one client with a multi-key command in progress at once.
const MAX_GRANTED_CONNECTIONS: usize = 64;

/// The host's per-client limiter (one per store; reloads change its settings).
#[derive(Default)]
pub struct RateLimiter {
    /// `per_client` as f64 bits; 0: off.
    rate: AtomicU64,
    /// `burst` as f64 bits.
    burst: AtomicU64,
    buckets: DashMap<Arc<str>, Bucket>,
    /// Hashes keys for grants.
    hasher: std::hash::RandomState,
    /// When idle buckets were last dropped to make room (at most once a second: with
    /// every tracked client busy, a flood of new addresses must not cost a scan each),
    /// and when an untracked client was last logged.
    swept: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl RateLimiter {
    /// Applies `config` (at start and on reload). Buckets keep their tokens, capped to
    /// the new burst as they are next used.
    pub fn set(&self, config: &RateLimitConfig) {
        self.burst
            .store(config.burst_or_default().to_bits(), Ordering::Relaxed);
        self.rate
            .store(config.per_client.to_bits(), Ordering::Relaxed);
        if config.per_client == 0.0 {
            self.buckets.clear();
        }
    }

    /// Whether a limit is set at all (the common case, off, costs one load).
    fn settings(&self) -> Option<(f64, f64)> {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        (rate > 0.0).then(|| (rate, f64::from_bits(self.burst.load(Ordering::Relaxed))))
    }

    /// One operation of `caller`'s on `key`. `principal` says whom the request hook
    /// verified (asked only when a limit is set).
    pub fn take(
        &self,
        caller: &Caller<'_>,
        key: &[u8],
        principal: impl FnOnce() -> Option<Arc<str>>,
    ) -> Result<(), PluginError> {
        self.decide(caller, key, principal, false)
    }

    /// A frontend's question about one key of a multi-key command, before any of it:
    /// refused if the client has no token left, else grants the connection one
    /// operation on that key (see [`Grants`]). Takes no token.
    pub fn precheck(
        &self,
        caller: &Caller<'_>,
        key: &[u8],
        principal: impl FnOnce() -> Option<Arc<str>>,
    ) -> Result<(), PluginError> {
        self.decide(caller, key, principal, true)
    }

    fn decide(
        &self,
        caller: &Caller<'_>,
        key: &[u8],
        principal: impl FnOnce() -> Option<Arc<str>>,
        precheck: bool,
    ) -> Result<(), PluginError> {
        let Some((rate, burst)) = self.settings() else {
            return Ok(());
        };
        let client = client_key(caller, principal().as_deref());
        let now = Instant::now();
        let mut bucket = match self.buckets.get_mut(client.as_str()) {
            Some(bucket) => bucket,
            None => {
                if !self.make_room(now, rate, burst) {
                    return Ok(()); // untracked: see MAX_CLIENTS
                }
                self.buckets
                    .entry(Arc::from(client.as_str()))
                    .or_insert(Bucket {
                        tokens: burst,
                        at: now,
                        grants: Vec::new(),
                    })
            }
        };
        let bucket = &mut *bucket;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        bucket.grants.retain(|g| now < g.until && g.count > 0);
        let peer = caller.peer.unwrap_or("");
        let hash = self.hasher.hash_one(key);
        let has_token = bucket.tokens >= 1.0;
        if precheck {
            if has_token {
                return grant(&mut bucket.grants, peer, hash, now);
            }
        } else if let Some(g) = bucket.grants.iter_mut().find(|g| &*g.peer == peer)
            && let Some(left) = g.keys.get_mut(&hash).filter(|left| **left > 0)
        {
            *left -= 1;
            g.count -= 1;
            bucket.tokens -= 1.0;
            return Ok(());
        } else if has_token {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / rate;
        Err(PluginError::rate_limited(format!(
            "{} is over its rate limit of {rate} operations a second ([rate_limit] \
             per_client): nothing was done; retry in {wait:.3} s",
            describe(&client)
        )))
    }

    /// Whether a new client's bucket fits: room, or room made by forgetting full and
    /// idle buckets (at most once a second).
    fn make_room(&self, now: Instant, rate: f64, burst: f64) -> bool {
        if self.buckets.len() < MAX_CLIENTS {
            return true;
        }
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if swept
            .0
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
        {
            swept.0 = Some(now);
            // A full bucket is a client forgetting changes nothing for; an idle one
            // is forgiven what it still owed.
            self.buckets.retain(|_, b| {
                let idle = now.saturating_duration_since(b.at);
                idle < FORGET_AFTER && b.tokens + idle.as_secs_f64() * rate < burst
            });
        }
        if self.buckets.len() < MAX_CLIENTS {
            return true;
        }
        if swept
            .1
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60))
        {
            swept.1 = Some(now);
            tracing::warn!(
                "rate limits: {MAX_CLIENTS} clients active in the last {} s are tracked; \
                 new clients go unlimited until some are idle (shedding still applies)",
                FORGET_AFTER.as_secs()
            );
        }
        false
    }
}

/// Grants `peer` one operation on the key hashed `hash`.
fn grant(grants: &mut Vec<Grants>, peer: &str, hash: u64, now: Instant) -> Result<(), PluginError> {
    let at = match grants.iter().position(|g| &*g.peer == peer) {
        Some(at) => at,
        None if grants.len() >= MAX_GRANTED_CONNECTIONS => {
            return Err(PluginError::rate_limited(format!(
                "{MAX_GRANTED_CONNECTIONS} connections of this client have multi-key \
                 commands in progress ([rate_limit]); retry in a moment"
            )));
        }
        None => {
            grants.push(Grants {
                peer: peer.into(),
                keys: HashMap::new(),
                count: 0,
                until: now,
            });
            grants.len() - 1
        }
    };
    let g = &mut grants[at];
    if g.count >= MAX_GRANTED_KEYS {
        return Err(PluginError::invalid_input(format!(
            "a command of more than {MAX_GRANTED_KEYS} keys cannot be admitted while \
             [rate_limit] is on: send fewer keys at a time"
        )));
    }
    *g.keys.entry(hash).or_default() += 1;
    g.count += 1;
    g.until = now + crate::overload::BURST;
    Ok(())
}

/// `principal:NAME`, `addr:IP` or `frontend:NAME`.
fn client_key(caller: &Caller<'_>, principal: Option<&str>) -> String {
    if let Some(name) = principal {
        return format!("principal:{name}");
    }
    match caller.peer {
        Some(peer) => format!("addr:{}", ip_of(peer)),
        None => format!("frontend:{}", caller.frontend),
    }
}

/// The address without its port: `127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000` ->
/// `::1` (anything else as it is).
fn ip_of(peer: &str) -> &str {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(_) => {
            let host = peer.rsplit_once(':').map_or(peer, |(host, _)| host);
            host.trim_start_matches('[').trim_end_matches(']')
        }
        Err(_) => peer,
    }
}

fn describe(client: &str) -> String {
    match client.split_once(':') {
        Some(("principal", name)) => format!("principal {name}"),
        Some(("addr", ip)) => format!("client {ip}"),
        Some(("frontend", name)) => format!("frontend {name} (it carries no client address)"),
        _ => "this client".into(),
    }
}

#[cfg(test)]
mod tests;
