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
//! * **Multi-key writes are not split.** A frontend asks the host about every key of a
//!   multi-key write before making any (`check`). That question is refused if the client
//!   has no token left; otherwise it takes nothing and grants one operation that will be
//!   admitted even past the client's last token, within [`crate::overload::BURST`]. So
//!   an `MSET` of ten keys whose questions pass is written whole: its ten writes take
//!   the bucket into debt, which later operations repay, and the long-run rate holds.
//!   Only as many operations as questions are granted, so nothing else rides along.
//!
//! Hand-rolled rather than `governor`: its GCRA cannot peek without consuming, nor go
//! into debt, which the two rules above need; the bucket itself is a few lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use kvs_plugin_api::PluginError;

use crate::caller::Caller;

/// Most clients tracked at once. Past it, full buckets (idle clients) are dropped; if
/// none is, new clients share one bucket, so a flood of addresses cannot grow memory.
const MAX_CLIENTS: usize = 65_536;

/// `[rate_limit]` as written: off unless `per_client` is set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Store operations a second one client may make (0: no limit; the default).
    #[serde(default)]
    pub per_client: f64,
    /// How many it may make at once after a quiet spell (default: one second's worth,
    /// at least 1).
    #[serde(default)]
    pub burst: Option<u64>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_client: 0.0,
            burst: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.per_client.is_finite() || self.per_client < 0.0 {
            return Err(format!(
                "[rate_limit] per_client = {}: operations a second, 0 (no limit) or more",
                self.per_client
            ));
        }
        if self.burst == Some(0) {
            return Err(
                "[rate_limit] burst = 0: at least 1 (or leave it out: one second's \
                        worth)"
                    .into(),
            );
        }
        Ok(())
    }

    fn burst_or_default(&self) -> f64 {
        self.burst
            .map_or(self.per_client.ceil().max(1.0), |b| b as f64)
    }
}

/// One client's bucket.
struct Bucket {
    /// Whole and partial tokens; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// Operations granted by `check`s (a multi-key write's keys), admitted into debt
    /// until `granted_until`.
    granted: u32,
    granted_until: Instant,
}

/// The host's per-client limiter (one per store; reloads change its settings).
#[derive(Default)]
pub struct RateLimiter {
    /// `per_client` as f64 bits; 0: off.
    rate: AtomicU64,
    /// `burst` as f64 bits.
    burst: AtomicU64,
    buckets: DashMap<Arc<str>, Bucket>,
    /// When idle buckets were last dropped to make room (at most once a second: with
    /// every tracked client busy, a flood of new addresses must not cost a scan each).
    swept: Mutex<Option<Instant>>,
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

    /// One operation of `caller`'s. `principal` says whom the request hook verified
    /// (asked only when a limit is set).
    pub fn take(
        &self,
        caller: &Caller<'_>,
        principal: impl FnOnce() -> Option<Arc<str>>,
    ) -> Result<(), PluginError> {
        self.decide(caller, principal, false)
    }

    /// A frontend's question before a multi-key write: refused if the client has no
    /// token left, else opens its window. Takes nothing.
    pub fn precheck(
        &self,
        caller: &Caller<'_>,
        principal: impl FnOnce() -> Option<Arc<str>>,
    ) -> Result<(), PluginError> {
        self.decide(caller, principal, true)
    }

    fn decide(
        &self,
        caller: &Caller<'_>,
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
                let key = self.admit_client(&client, now, rate, burst);
                self.buckets.entry(key).or_insert(Bucket {
                    tokens: burst,
                    at: now,
                    granted: 0,
                    granted_until: now,
                })
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if now >= bucket.granted_until {
            bucket.granted = 0;
        }
        let has_token = bucket.tokens >= 1.0;
        if precheck {
            if has_token {
                bucket.granted = bucket.granted.saturating_add(1);
                bucket.granted_until = now + crate::overload::BURST;
                return Ok(());
            }
        } else if bucket.granted > 0 {
            bucket.granted -= 1;
            bucket.tokens -= 1.0;
            return Ok(());
        } else if has_token {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / rate;
        drop(bucket);
        Err(PluginError::rate_limited(format!(
            "{} is over its rate limit of {rate} operations a second ([rate_limit] \
             per_client): nothing was done; retry in {wait:.3} s",
            describe(&client)
        )))
    }

    /// The key a new client's bucket goes under: its own while there is room.
    fn admit_client(&self, client: &str, now: Instant, rate: f64, burst: f64) -> Arc<str> {
        if self.buckets.len() >= MAX_CLIENTS {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if swept.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
                *swept = Some(now);
                // Full buckets are idle clients: forgetting them changes nothing.
                self.buckets.retain(|_, b| {
                    b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
                });
            }
        }
        if self.buckets.len() >= MAX_CLIENTS {
            return Arc::from(OVERFLOW);
        }
        Arc::from(client)
    }
}

/// Where new clients go while [`MAX_CLIENTS`] are tracked.
const OVERFLOW: &str = "overflow:";

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
        _ => "a client".into(),
    }
}

#[cfg(test)]
mod tests;
