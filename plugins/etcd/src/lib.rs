//! The `etcd` logger: a *shared* log (plugin-api 1.3). Every kvs node configured with
//! the same etcd cluster and `prefix` appends to one ordered log — etcd's revisions —
//! and applies it back in that order, so the nodes' maps are prefixes of one history.
//!
//! * **Keys** are the kvs keys under `prefix` (bytes, unescaped); a put or a delete is
//!   an etcd put or delete of that key.
//! * **Conditional append** (capability `log:conditional`, plugin-api 1.4): a batch led
//!   by `EXPECT` events is one transaction that also compares each of their keys'
//!   `mod_revision` with the expected position, and fails with CONFLICT if one moved:
//!   how kvs nodes make compare-and-set, counters and transactions linearizable.
//! * **Expiry** (capability `log:expiry`, plugin-api 1.4): a `PUT_UNTIL` is a put under
//!   an etcd lease whose id carries the deadline (`lease`): nodes read the deadline back
//!   from the key, and etcd deletes the key once the lease runs out.
//! * **Append** (capability `log:atomic_batch`, plugin-api 1.6): one etcd transaction
//!   per group-commit batch, so a batch is applied whole or not at all (two writes to
//!   one key collapse into the later, which is what the batch amounts to). A batch over
//!   one transaction (`max_txn_ops`, etcd's per-transaction limit, or `max_txn_bytes`,
//!   under its request limit) is refused with TOO_LARGE, never split here: the host
//!   then appends it in parts between requests. The position is the transaction's
//!   revision. Each transaction is safe to retry on another member (`writer`), and
//!   members that hang are routed around (`members`).
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, PutOptions, TxnOp};
use kvs_plugin_api::{
    ErrorCode, Event, EventKind, Follower, Health, PluginError, SharedLog, export_plugin,
};

mod config;
mod follow;
mod lease;
mod members;
mod writer;

pub use config::{Config, TlsConfig};
use follow::{FollowParts, Readiness, put_marker};

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

    /// The batch as one etcd transaction's operations, no key twice (etcd refuses that;
    /// the later write wins, as it would anyway), then the marker's put. A `PUT_UNTIL`
    /// is a put under its deadline's lease (`lease`). A batch that does not fit one
    /// transaction (`max_txn_ops`, `max_txn_bytes`) is refused whole with
    /// `TOO_LARGE`, never split: an append is all or none (`log:atomic_batch`), and
    /// the host then appends the batch in parts, each of whole requests.
    fn transaction(&self, batch: &[Event<'_>]) -> Result<Vec<TxnOp>, PluginError> {
        // Two operations of each transaction are kvs's own: the writer key's, and the
        // marker's (so that every transaction, even one that only deletes missing
        // keys, comes back through the watch as an event at its revision).
        let max_ops = self.config.max_txn_ops - 2;
        let mut ops: Vec<TxnOp> = Vec::with_capacity(batch.len().min(max_ops) + 1);
        let mut slots: HashMap<&[u8], usize> = HashMap::with_capacity(batch.len().min(max_ops));
        let mut bytes = 0;
        for e in batch {
            let key = self.key(e.key.as_slice());
            let op = match e.kind {
                EventKind::DELETE => TxnOp::delete(key.clone(), None),
                EventKind::PUT_UNTIL => {
                    let (deadline, value) = until(e)?;
                    let lease = PutOptions::new().with_lease(lease::lease_id(deadline)?);
                    TxnOp::put(key.clone(), value, Some(lease))
                }
                _ => TxnOp::put(key.clone(), e.value.as_slice(), None),
            };
            bytes += key.len() + e.value.len();
            match slots.get(e.key.as_slice()) {
                Some(&slot) => ops[slot] = op,
                None => {
                    slots.insert(e.key.as_slice(), ops.len());
                    ops.push(op);
                }
            }
            // One write alone is sent whatever it weighs: etcd says if it is over its
            // request limit.
            if ops.len() > max_ops || (ops.len() > 1 && bytes > self.config.max_txn_bytes) {
                return Err(PluginError::new(
                    ErrorCode::TOO_LARGE,
                    format!(
                        "a batch of {} write(s) does not fit one etcd transaction ([plugins.etcd] \
                         max_txn_ops = {} with 2 of kvs's own, max_txn_bytes = {}; etcd's \
                         --max-txn-ops and --max-request-bytes bound them); write fewer keys \
                         at once",
                        batch.len(),
                        self.config.max_txn_ops,
                        self.config.max_txn_bytes
                    ),
                ));
            }
        }
        ops.push(TxnOp::put(self.prefix.clone(), Vec::new(), None));
        Ok(ops)
    }
}

/// A `PUT_UNTIL` event's deadline and value.
fn until<'e>(e: &'e Event<'_>) -> Result<(u64, &'e [u8]), PluginError> {
    kvs_plugin_api::event::split_deadline(e.value.as_slice()).ok_or_else(|| {
        PluginError::invalid_input(format!(
            "event {} is a PUT_UNTIL without a deadline",
            e.sequence
        ))
    })
}

impl SharedLog for EtcdLog {
    fn append(&self, batch: &[Event<'_>]) -> Result<u64, PluginError> {
        // The EXPECTs leading the batch make it conditional on their keys' mod
        // revisions (each the position of the key's newest event; 0 when absent): one
        // transaction, which etcd applies only if every compare holds.
        let conditions = batch
            .iter()
            .take_while(|e| e.kind == EventKind::EXPECT)
            .count();
        let (expects, batch) = batch.split_at(conditions);
        // The writer key's compare is kvs's own.
        if expects.len() + 1 > self.config.max_txn_ops {
            return Err(PluginError::new(
                ErrorCode::TOO_LARGE,
                format!(
                    "a transaction of {} keys does not fit one etcd transaction ([plugins.etcd] \
                     max_txn_ops = {}, etcd's --max-txn-ops); use fewer keys at once",
                    expects.len(),
                    self.config.max_txn_ops
                ),
            ));
        }
        let expects: Vec<(Vec<u8>, i64)> = expects
            .iter()
            .map(|e| (self.key(e.key.as_slice()), e.sequence as i64))
            .collect();
        let ops = self.transaction(batch)?;
        // The leases first: a put under a lease that does not exist fails.
        let mut deadlines: Vec<u64> = batch
            .iter()
            .filter(|e| e.kind == EventKind::PUT_UNTIL)
            .map(|e| until(e).map(|(deadline, _)| deadline))
            .collect::<Result<_, _>>()?;
        deadlines.sort_unstable();
        deadlines.dedup();
        let kv = self.client.kv_client();
        let (timeout, attempt) = (self.timeout(), self.attempt());
        let result = self.runtime.block_on(async {
            lease::grant(&self.client, &deadlines, timeout, attempt).await?;
            let revision = self
                .writer
                .commit(&kv, ops, &expects, timeout, attempt)
                .await?;
            self.awaited.fetch_max(revision, Ordering::AcqRel);
            Ok::<u64, PluginError>(revision)
        });
        let conflict = matches!(&result, Err(e) if e.code() == kvs_plugin_api::ErrorCode::CONFLICT);
        self.readiness.set_appending(result.is_ok() || conflict);
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
        let task = self.runtime.spawn(follow::follow(parts, follower));
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

/// Whether etcd's answer `text` refuses a request as too large (over its
/// `--max-request-bytes` or `--max-txn-ops`): every member does, every time, and
/// before applying anything.
pub(crate) fn too_large(text: &str) -> bool {
    text.contains("too large")
        || text.contains("larger than max")
        || text.contains("too many operations")
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
                if too_large(&text) {
                    return Err(format!(
                        "{text} (etcd's --max-request-bytes and --max-txn-ops; lower \
                         [plugins.etcd] max_txn_bytes and max_txn_ops, or kvs's \
                         limits.max_value_bytes)"
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

export_plugin!(
    shared_logger: open,
    name: "etcd",
    description: "a log shared by many kvs nodes on one etcd cluster",
    capabilities: ["net:connect", "log:conditional", "log:expiry", "log:atomic_batch"]
);

#[cfg(test)]
mod tests;
