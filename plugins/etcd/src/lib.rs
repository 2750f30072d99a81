//! The `etcd` logger: a *shared* log (plugin-api 1.3). Every kvs node configured with
//! the same etcd cluster and `prefix` appends to one ordered log — etcd's revisions —
//! and applies it back in that order, so the nodes' maps are prefixes of one history.
//!
//! * **Keys** are the kvs keys under `prefix` (bytes, unescaped); a put or a delete is
//!   an etcd put or delete of that key.
//! * **Append**: one etcd transaction per group-commit batch (split at `max_txn_ops`,
//!   etcd's per-transaction limit, and at `max_txn_bytes`, under its request limit; two writes to one key in one transaction collapse
//!   into the later, which is what the batch amounts to). The position is the revision
//!   of the last transaction. Each transaction is safe to retry on another member
//!   (`writer`), and members that hang are routed around (`members`).
//! * **Follow**: a paginated range read pinned at one revision (the snapshot), then a
//!   watch from the next revision; a watch that breaks is resumed from the revision
//!   after the last event delivered, one that fell behind etcd's compaction reloads
//!   the snapshot. Only events move the position delivered: etcd before 3.4.31 / 3.5.8
//!   (Debian's is 3.4.23) can send a progress notification while the watcher is still
//!   catching up (etcd-io/etcd#15220), so one is never taken as proof of delivery.
//! * **Barrier**: a put of the *marker* — the etcd key that is `prefix` itself, the
//!   empty kvs key, which kvs refuses as a key — whose revision is the barrier. Its
//!   event comes back through the watch like any other, after every earlier event
//!   under the prefix, so delivery reaching the barrier proves the node has everything
//!   a quorum had when the barrier began, on every etcd version. Cost: one etcd write
//!   (a raft round and a quorum fsync) per barrier, shared by the reads waiting on it.
//! * **Health** is false while etcd does not answer (appends fail or the watch is down)
//!   and, after a watch (re)starts, until a marker written then has come back: a node
//!   catching up after a partition is not ready.
//! * **Order check**: events must come in increasing revisions, from where the watch
//!   was asked to start; anything else is a gap this node cannot explain, so it logs
//!   it, turns unready and reloads the snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, TxnOp, WatchOptions};
use kvs_plugin_api::{
    Event, EventKind, Follower, Health, PluginError, SharedLog, export_plugin, log,
};
use serde::Deserialize;

mod members;
mod writer;

/// The `[plugins.etcd]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// etcd client URLs. Default `["http://127.0.0.1:2379"]`.
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<String>,
    /// Where this kvs's keys live in etcd; nodes sharing it share a store. Default `kvs/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// etcd user, if etcd has authentication on; the password comes from the
    /// environment variable `password_env`, never from the file.
    pub username: Option<String>,
    /// The environment variable holding the password. Default `KVS_ETCD_PASSWORD`.
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// Longest one etcd request may take, in ms, over all its attempts. Default 5000.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Longest one attempt at a request may take before it is tried again (another
    /// member is picked if this one hangs), in ms. Default 1000.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_ms: u64,
    /// Most operations per etcd transaction (etcd's `--max-txn-ops`, default 128).
    #[serde(default = "default_max_txn_ops")]
    pub max_txn_ops: usize,
    /// Most bytes of keys and values per etcd transaction: keep it under etcd's
    /// `--max-request-bytes` (default 1.5 MiB). A single write larger than this still
    /// goes alone. Default 1048576.
    #[serde(default = "default_max_txn_bytes")]
    pub max_txn_bytes: usize,
    /// Keys per page of the snapshot read. Default 1000.
    #[serde(default = "default_page")]
    pub page_size: i64,
    /// TLS to etcd (`https://` endpoints): `tls = { ca = "ca.pem" }` verifies the
    /// members against that CA; with `cert` and `key` too, kvs presents that client
    /// certificate (etcd's `--client-cert-auth`).
    pub tls: Option<TlsConfig>,
}

/// `tls = { ca, cert, key }` in `[plugins.etcd]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the members' certificates.
    pub ca: std::path::PathBuf,
    /// PEM file of kvs's client certificate, for client-certificate auth.
    pub cert: Option<std::path::PathBuf>,
    /// PEM file of its private key.
    pub key: Option<std::path::PathBuf>,
}

impl TlsConfig {
    fn options(&self) -> Result<etcd_client::TlsOptions, PluginError> {
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                PluginError::invalid_input(format!(
                    "[plugins.etcd] tls.{what}: cannot read {}: {e}",
                    path.display()
                ))
            })
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca", &self.ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read("cert", cert)?,
                    read("key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(PluginError::invalid_input(
                    "[plugins.etcd] tls: give both cert and key, or neither",
                ));
            }
        }
        Ok(tls)
    }
}

fn default_endpoints() -> Vec<String> {
    vec!["http://127.0.0.1:2379".into()]
}
fn default_prefix() -> String {
    "kvs/".into()
}
fn default_password_env() -> String {
    "KVS_ETCD_PASSWORD".into()
}
fn default_timeout() -> u64 {
    5000
}
fn default_attempt_timeout() -> u64 {
    1000
}
fn default_max_txn_bytes() -> usize {
    1 << 20
}
fn default_max_txn_ops() -> usize {
    128
}
fn default_page() -> i64 {
    1000
}

/// The largest response kvs accepts from etcd (etcd's own Go client allows as much):
/// a watch catching up sends up to 1000 revisions in one response, and a snapshot page
/// `page_size` keys, whatever their values weigh.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::unavailable(format!("etcd {what}: {e}"))
}

/// The first key after every key starting with `prefix` (etcd's range end for it).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

/// The shared log on one etcd cluster.
pub struct EtcdLog {
    runtime: tokio::runtime::Runtime,
    client: Client,
    config: Config,
    prefix: Vec<u8>,
    health: Health,
    readiness: Readiness,
    follow_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One task per member, routing around those that hang (`members`).
    member_checks: Vec<tokio::task::JoinHandle<()>>,
    /// This node's idempotent transactions (`writer`).
    writer: writer::Writer,
    /// The newest revision this node wrote (a batch or a marker): the watch must
    /// deliver it soon, or it is stuck (on a hung member) and is restarted.
    awaited: Arc<AtomicU64>,
}

fn open(text: &str) -> Result<EtcdLog, PluginError> {
    let config: Config = toml::from_str(text)
        .map_err(|e| PluginError::invalid_input(format!("[plugins.etcd]: {e}")))?;
    if config.endpoints.is_empty()
        || config.max_txn_ops < 3
        || config.page_size <= 0
        || config.attempt_timeout_ms == 0
    {
        return Err(PluginError::invalid_input(
            "[plugins.etcd]: endpoints must not be empty; max_txn_ops must be at least 3 (two \
             operations of each transaction are kvs's own); page_size and attempt_timeout_ms \
             at least 1",
        ));
    }
    // One spelling per member: the balancer matches endpoints by URI when one is taken
    // out (`members`), and a duplicate would count twice.
    let mut endpoints: Vec<String> = Vec::new();
    for endpoint in &config.endpoints {
        let endpoint = if endpoint.contains("://") {
            endpoint.trim_end_matches('/').to_string()
        } else {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", endpoint.trim_end_matches('/'))
        };
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    let config = Config {
        endpoints,
        ..config
    };
    if config.prefix.is_empty() || config.prefix.starts_with('\0') {
        return Err(PluginError::invalid_input(
            "[plugins.etcd] prefix: must not be empty or start with a NUL byte (kvs keeps \
             its own bookkeeping under \\0kvs-writer/)",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kvs-etcd")
        .enable_all()
        .build()
        .map_err(|e| PluginError::internal(format!("cannot start the runtime: {e}")))?;
    let timeout = Duration::from_millis(config.timeout_ms);
    // require_leader: a member cut off from the majority cancels our watch ("no
    // leader") instead of keeping it open and silent, so the node resumes elsewhere.
    let mut options = ConnectOptions::new()
        .with_require_leader(true)
        .with_timeout(timeout)
        .with_connect_timeout(timeout)
        .with_keep_alive(Duration::from_secs(5), timeout);
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls.options()?);
    }
    // The member checks need no credentials: a member's status is public.
    let check_options = options.clone();
    if let Some(user) = &config.username {
        let password = std::env::var(&config.password_env).map_err(|_| {
            PluginError::invalid_input(format!(
                "[plugins.etcd]: username is set but the environment variable {} (password_env) is not",
                config.password_env
            ))
        })?;
        options = options.with_user(user.clone(), password);
    }
    // Connecting is lazy about members that are down: one reachable endpoint suffices.
    let client = runtime
        .block_on(Client::connect(config.endpoints.clone(), Some(options)))
        .map_err(|e| unavailable("connect", e))?;
    let health = Health::new(false);
    let member_checks = {
        let _in_runtime = runtime.enter();
        members::watch_members(&client, &config.endpoints, check_options)
    };
    let prefix = config.prefix.as_bytes().to_vec();
    Ok(EtcdLog {
        member_checks,
        writer: writer::Writer::new(&prefix),
        awaited: Arc::new(AtomicU64::new(0)),
        runtime,
        client,
        prefix,
        config,
        readiness: Readiness::new(health.clone()),
        health,
        follow_task: Mutex::new(None),
    })
}

impl EtcdLog {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        [&self.prefix[..], key].concat()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn attempt(&self) -> Duration {
        Duration::from_millis(self.config.attempt_timeout_ms.min(self.config.timeout_ms))
    }

    /// The batch as etcd transactions: at most `max_txn_ops` operations each, no key
    /// twice in one (etcd refuses that; the later write wins, as it would anyway).
    fn transactions(&self, batch: &[Event<'_>]) -> Vec<Vec<TxnOp>> {
        let mut txns: Vec<Vec<TxnOp>> = Vec::new();
        let mut ops: Vec<(Vec<u8>, TxnOp)> = Vec::new();
        let mut bytes = 0;
        for e in batch {
            let key = self.key(e.key.as_slice());
            let op = if e.kind == EventKind::DELETE {
                TxnOp::delete(key.clone(), None)
            } else {
                TxnOp::put(key.clone(), e.value.as_slice(), None)
            };
            if let Some(slot) = ops.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = op;
                continue;
            }
            // Two operations of each transaction are kvs's own: the writer key's, and the
            // marker's (so that every transaction, even one that only deletes missing
            // keys, comes back through the watch as an event at its revision).
            let size = key.len() + e.value.len();
            let full = ops.len() == self.config.max_txn_ops - 2
                || (!ops.is_empty() && bytes + size > self.config.max_txn_bytes);
            if full {
                txns.push(ops.drain(..).map(|(_, op)| op).collect());
                bytes = 0;
            }
            bytes += size;
            ops.push((key, op));
        }
        if !ops.is_empty() {
            txns.push(ops.into_iter().map(|(_, op)| op).collect());
        }
        for txn in &mut txns {
            txn.push(TxnOp::put(self.prefix.clone(), Vec::new(), None));
        }
        txns
    }
}

impl SharedLog for EtcdLog {
    fn append(&self, batch: &[Event<'_>]) -> Result<u64, PluginError> {
        let txns = self.transactions(batch);
        let kv = self.client.kv_client();
        let (timeout, attempt) = (self.timeout(), self.attempt());
        let result = self.runtime.block_on(async {
            let mut revision = 0;
            for ops in txns {
                revision = self.writer.commit(&kv, ops, timeout, attempt).await?;
                self.awaited.fetch_max(revision, Ordering::AcqRel);
            }
            Ok::<u64, PluginError>(revision)
        });
        self.readiness.set_appending(result.is_ok());
        result
    }

    fn follow(&self, follower: Follower) -> Result<(), PluginError> {
        let parts = FollowParts {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            page_size: self.config.page_size,
            timeout: self.timeout(),
            attempt: self.attempt(),
            readiness: self.readiness.clone(),
            awaited: self.awaited.clone(),
        };
        let task = self.runtime.spawn(follow(parts, follower));
        *self.follow_task.lock().unwrap() = Some(task);
        Ok(())
    }

    fn barrier(&self) -> Result<u64, PluginError> {
        let kv = self.client.kv_client();
        let (timeout, attempt) = (self.timeout(), self.attempt());
        let marker = self.prefix.clone();
        self.runtime.block_on(async {
            let revision = put_marker(kv, marker, timeout, attempt).await?;
            self.awaited.fetch_max(revision, Ordering::AcqRel);
            self.readiness.set_appending(true);
            Ok(revision)
        })
    }

    fn close(&self) -> Result<(), PluginError> {
        if let Some(task) = self.follow_task.lock().unwrap().take() {
            task.abort();
        }
        for task in &self.member_checks {
            task.abort();
        }
        let kv = self.client.kv_client();
        self.runtime
            .block_on(self.writer.remove(&kv, self.attempt()));
        Ok(())
    }

    fn health(&self) -> Option<Health> {
        Some(self.health.clone())
    }
}

/// Writes the marker (the etcd key `prefix`: the empty kvs key, never a kvs key) and
/// returns the revision of that write.
async fn put_marker(
    kv: etcd_client::KvClient,
    marker: Vec<u8>,
    timeout: Duration,
    attempt: Duration,
) -> Result<u64, PluginError> {
    // Retried on any failure: a marker written twice costs a raft round, nothing more.
    let response = retry(timeout, attempt, false, || {
        let (mut kv, marker) = (kv.clone(), marker.clone());
        async move { kv.put(marker, Vec::new(), None).await }
    })
    .await
    .map_err(|e| unavailable("barrier (marker write)", e))?;
    Ok(response.header().map_or(0, |h| h.revision()) as u64)
}

/// Runs `request` until it succeeds or `timeout` has passed, each attempt for at most
/// `attempt`. A request that failed only to connect (the member the client picked is
/// down) is always tried again, on another member; any other failure (a timed-out
/// attempt included) only if `only_unsent` is false: the request must be safe to
/// apply twice, or made so (see `writer`).
pub(crate) async fn retry<T, F, Fut>(
    timeout: Duration,
    attempt: Duration,
    only_unsent: bool,
    mut request: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let why = match tokio::time::timeout(left.min(attempt), request()).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => {
                let text = e.to_string();
                // A request etcd finds too large is refused by every member, every time.
                if text.contains("too large") || text.contains("larger than max") {
                    return Err(format!(
                        "{text} (etcd's --max-request-bytes; lower [plugins.etcd] \
                         max_txn_bytes or kvs's limits.max_value_bytes)"
                    ));
                }
                if only_unsent && !text.contains("connect error") {
                    return Err(text);
                }
                text
            }
            Err(_) if only_unsent || left <= attempt => {
                return Err(format!("timed out after {} ms", timeout.as_millis()));
            }
            Err(_) => format!("no answer within {} ms", attempt.as_millis()),
        };
        if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
            return Err(why);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this node may say it is current: the watch has caught up (a marker written
/// after it started has come back) and appends succeed. Both feed the one `Health`.
#[derive(Clone)]
struct Readiness {
    health: Health,
    /// (caught up, appends succeed), changed and published together.
    state: Arc<Mutex<(bool, bool)>>,
}

impl Readiness {
    fn new(health: Health) -> Readiness {
        health.set(false);
        Readiness {
            health,
            state: Arc::new(Mutex::new((false, true))),
        }
    }

    fn set_caught_up(&self, yes: bool) {
        let mut state = self.state.lock().unwrap();
        state.0 = yes;
        self.health.set(state.0 && state.1);
    }

    /// Whether writes to etcd succeed: set by appends, and by any other write (markers),
    /// so a node that failed an append is ready again once etcd takes writes, without
    /// waiting for a client's write to prove it.
    fn set_appending(&self, yes: bool) {
        let mut state = self.state.lock().unwrap();
        state.1 = yes;
        self.health.set(state.0 && state.1);
    }

    fn appending(&self) -> bool {
        self.state.lock().unwrap().1
    }
}

/// What the follow task needs besides the follower.
struct FollowParts {
    client: Client,
    prefix: Vec<u8>,
    page_size: i64,
    timeout: Duration,
    attempt: Duration,
    readiness: Readiness,
    awaited: Arc<AtomicU64>,
}

/// Delivers the log under `prefix` to `follower` for as long as the task runs.
async fn follow(parts: FollowParts, follower: Follower) {
    let FollowParts {
        client,
        prefix,
        page_size,
        timeout,
        attempt,
        readiness,
        awaited,
    } = parts;
    // The revision to watch from: one past the last event (or snapshot) delivered;
    // `None` until a snapshot has been read. It moves only with what was delivered.
    let mut from: Option<i64> = None;
    let mut retry = Duration::from_millis(100);
    loop {
        readiness.set_caught_up(false);
        if from.is_none() {
            match snapshot(&client, &prefix, page_size, &follower).await {
                Ok(revision) => from = Some(revision + 1),
                Err(e) => {
                    log::warn(&format!("etcd snapshot failed, retrying: {e}"));
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let start = from.expect("set above");
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let (_watcher, mut responses) = match client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(prefix.clone(), Some(options))
            .await
        {
            Ok(stream) => stream.split(),
            Err(e) => {
                log::debug(&format!("etcd watch from {start} failed, retrying: {e}"));
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        retry = Duration::from_millis(100);
        // Caught up once a marker written after the watch began has come back through
        // it: everything a quorum had before then has been delivered.
        let mut marker = tokio::spawn(marker_until_written(
            client.kv_client(),
            prefix.clone(),
            timeout,
            attempt,
            awaited.clone(),
            readiness.clone(),
        ));
        // A watch that delivers nothing while a revision this node wrote is awaited is
        // stuck (its member hangs): restart it, on a member that answers.
        let mut check = tokio::time::interval(attempt / 4);
        let mut probe: Option<tokio::task::JoinHandle<()>> = None;
        let mut heard = tokio::time::Instant::now();
        let mut caught_up_at: Option<u64> = None;
        // The last revision delivered: events must not go back before it.
        let mut last = start as u64 - 1;
        loop {
            let message = tokio::select! {
                written = &mut marker, if caught_up_at.is_none() => {
                    let revision = written.unwrap_or(u64::MAX);
                    caught_up_at = Some(revision);
                    if last >= revision {
                        readiness.set_caught_up(true);
                    }
                    continue;
                }
                _ = check.tick() => {
                    // After a failed append, probe with a marker until etcd takes writes
                    // again (a node nobody writes through would otherwise stay unready).
                    if !readiness.appending() && probe.as_ref().is_none_or(|p| p.is_finished()) {
                        let (kv, marker, readiness) =
                            (client.kv_client(), prefix.clone(), readiness.clone());
                        probe = Some(tokio::spawn(async move {
                            if put_marker(kv, marker, timeout, attempt).await.is_ok() {
                                readiness.set_appending(true);
                            }
                        }));
                    }
                    let waiting_for = awaited.load(Ordering::Acquire);
                    if waiting_for > last && heard.elapsed() >= attempt {
                        log::warn(&format!(
                            "the etcd watch delivered nothing for {} ms while revision \
                             {waiting_for} is awaited: restarting it from {}",
                            heard.elapsed().as_millis(),
                            last + 1
                        ));
                        break;
                    }
                    continue;
                }
                message = responses.message() => message,
            };
            heard = tokio::time::Instant::now();
            let message = match message {
                Ok(Some(m)) => m,
                Err(e) => {
                    log::debug(&format!(
                        "etcd watch broke, resuming from revision {start}: {e}",
                        start = last + 1
                    ));
                    break;
                }
                Ok(None) => break,
            };
            if message.canceled() {
                if message.compact_revision() > 0 {
                    log::warn(&format!(
                        "this node fell behind etcd's compaction (revision {}): reloading the snapshot",
                        message.compact_revision()
                    ));
                    from = None;
                }
                break;
            }
            // A creation or a progress notification says nothing this node can trust
            // about delivery (see the module docs): only events move it.
            let Some(newest) = message.events().iter().filter_map(|e| e.kv()).next_back() else {
                continue;
            };
            let newest = newest.mod_revision() as u64;
            let in_order =
                message
                    .events()
                    .iter()
                    .filter_map(|e| e.kv())
                    .try_fold(last, |before, kv| {
                        let revision = kv.mod_revision() as u64;
                        // A transaction's events share a revision.
                        (revision >= before && revision >= start as u64).then_some(revision)
                    });
            if in_order.is_none() {
                log::error(&format!(
                    "the etcd watch delivered revisions out of order (after {last}, from \
                     {start}): this node cannot tell what it missed, so it stops answering \
                     as current and reloads the snapshot"
                ));
                from = None;
                break;
            }
            let kvs_events: Vec<Event<'_>> = message
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let key = kv.key().strip_prefix(prefix.as_slice())?;
                    if key.is_empty() {
                        return None; // the marker: a position, not a kvs key
                    }
                    let position = kv.mod_revision() as u64;
                    Some(match e.event_type() {
                        EventType::Put => Event::put(position, key, kv.value()),
                        EventType::Delete => Event::delete(position, key),
                    })
                })
                .collect();
            follower.deliver(&kvs_events, newest);
            last = newest;
            from = Some(newest as i64 + 1);
            if caught_up_at.is_some_and(|m| last >= m) {
                readiness.set_caught_up(true);
            }
        }
        marker.abort();
        if let Some(probe) = probe {
            probe.abort();
        }
        readiness.set_caught_up(false);
        tokio::time::sleep(retry).await;
    }
}

/// Writes a marker, retrying every half second while etcd has no quorum; its revision.
async fn marker_until_written(
    kv: etcd_client::KvClient,
    marker: Vec<u8>,
    timeout: Duration,
    attempt: Duration,
    awaited: Arc<AtomicU64>,
    readiness: Readiness,
) -> u64 {
    loop {
        match put_marker(kv.clone(), marker.clone(), timeout, attempt).await {
            Ok(revision) => {
                awaited.fetch_max(revision, Ordering::AcqRel);
                readiness.set_appending(true);
                return revision;
            }
            Err(e) => {
                log::debug(&format!("catch-up marker not written yet: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Reads every key under `prefix` at one revision, page by page, into `follower`;
/// returns that revision.
async fn snapshot(
    client: &Client,
    prefix: &[u8],
    page_size: i64,
    follower: &Follower,
) -> Result<i64, etcd_client::Error> {
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let end = prefix_end(prefix);
    follower.begin_snapshot();
    let mut key = prefix.to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(page_size);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = kv.get(key.clone(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let events: Vec<Event<'_>> = page
            .kvs()
            .iter()
            .filter_map(|kv| {
                let k = kv.key().strip_prefix(prefix)?;
                if k.is_empty() {
                    return None; // the barrier marker, not a kvs key
                }
                Some(Event::put(kv.mod_revision() as u64, k, kv.value()))
            })
            .collect();
        follower.deliver(&events, 0);
        match page.kvs().last() {
            Some(last) if page.more() => key = [last.key(), &[0]].concat(),
            _ => break,
        }
    }
    follower.end_snapshot(revision as u64);
    Ok(revision)
}

export_plugin!(
    shared_logger: open,
    name: "etcd",
    description: "a log shared by many kvs nodes on one etcd cluster",
    capabilities: ["net:connect"]
);
