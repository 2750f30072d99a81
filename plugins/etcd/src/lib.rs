//! The `etcd` logger: a *shared* log (plugin-api 1.3). Every kvs node configured with
//! the same etcd cluster and `prefix` appends to one ordered log — etcd's revisions —
//! and applies it back in that order, so the nodes' maps are prefixes of one history.
//!
//! * **Keys** are the kvs keys under `prefix` (bytes, unescaped); a put or a delete is
//!   an etcd put or delete of that key.
//! * **Append**: one etcd transaction per group-commit batch (split at `max_txn_ops`,
//!   etcd's per-transaction limit; two writes to one key in one transaction collapse
//!   into the later, which is what the batch amounts to). The position is the revision
//!   of the last transaction.
//! * **Follow**: a paginated range read pinned at one revision (the snapshot), then a
//!   watch from the next revision with progress notifications; a watch that breaks is
//!   resumed from where it was, one that fell behind etcd's compaction reloads the
//!   snapshot.
//! * **Barrier**: a linearizable (quorum) read's revision, plus a watch progress request
//!   so an idle node catches up.
//! * **Health** is false while etcd does not answer (appends fail or the watch is down).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions, WatchRequestSender,
};
use kvs_plugin_api::{
    Event, EventKind, Follower, Health, PluginError, SharedLog, export_plugin, log,
};
use serde::Deserialize;

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
    /// Longest one etcd request may take, in ms. Default 5000.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Most operations per etcd transaction (etcd's `--max-txn-ops`, default 128).
    #[serde(default = "default_max_txn_ops")]
    pub max_txn_ops: usize,
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
fn default_max_txn_ops() -> usize {
    128
}
fn default_page() -> i64 {
    1000
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> PluginError {
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
    /// The follow task's watch stream handle, for progress requests.
    watch: Arc<tokio::sync::Mutex<Option<WatchRequestSender>>>,
    follow_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn open(text: &str) -> Result<EtcdLog, PluginError> {
    let config: Config = toml::from_str(text)
        .map_err(|e| PluginError::invalid_input(format!("[plugins.etcd]: {e}")))?;
    if config.endpoints.is_empty() || config.max_txn_ops == 0 || config.page_size <= 0 {
        return Err(PluginError::invalid_input(
            "[plugins.etcd]: endpoints must not be empty; max_txn_ops and page_size must be at least 1",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kvs-etcd")
        .enable_all()
        .build()
        .map_err(|e| PluginError::internal(format!("cannot start the runtime: {e}")))?;
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout)
        .with_keep_alive(Duration::from_secs(5), timeout);
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls.options()?);
    }
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
    Ok(EtcdLog {
        runtime,
        client,
        prefix: config.prefix.as_bytes().to_vec(),
        config,
        health: Health::new(true),
        watch: Arc::new(tokio::sync::Mutex::new(None)),
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

    /// The batch as etcd transactions: at most `max_txn_ops` operations each, no key
    /// twice in one (etcd refuses that; the later write wins, as it would anyway).
    fn transactions(&self, batch: &[Event<'_>]) -> Vec<Vec<TxnOp>> {
        let mut txns = Vec::new();
        let mut ops: Vec<(Vec<u8>, TxnOp)> = Vec::new();
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
            if ops.len() == self.config.max_txn_ops {
                txns.push(ops.drain(..).map(|(_, op)| op).collect());
            }
            ops.push((key, op));
        }
        if !ops.is_empty() {
            txns.push(ops.into_iter().map(|(_, op)| op).collect());
        }
        txns
    }
}

impl SharedLog for EtcdLog {
    fn append(&self, batch: &[Event<'_>]) -> Result<u64, PluginError> {
        let txns = self.transactions(batch);
        let kv = self.client.kv_client();
        let timeout = self.timeout();
        let result = self.runtime.block_on(async {
            let mut revision = 0;
            for ops in txns {
                // Retried only when the request never left (no connection to the member
                // the client picked): a retried transaction that had been applied would
                // apply twice, after writes that followed it.
                let response = retry(timeout, true, || {
                    let (mut kv, ops) = (kv.clone(), ops.clone());
                    async move { kv.txn(Txn::new().and_then(ops)).await }
                })
                .await
                .map_err(|e| unavailable("transaction", e))?;
                revision = response.header().map_or(0, |h| h.revision());
            }
            Ok::<i64, PluginError>(revision)
        });
        self.health.set(result.is_ok());
        result.map(|r| r as u64)
    }

    fn follow(&self, follower: Follower) -> Result<(), PluginError> {
        let task = self.runtime.spawn(follow(
            self.client.clone(),
            self.prefix.clone(),
            self.config.page_size,
            follower,
            self.watch.clone(),
            self.health.clone(),
        ));
        *self.follow_task.lock().unwrap() = Some(task);
        Ok(())
    }

    fn barrier(&self) -> Result<u64, PluginError> {
        let kv = self.client.kv_client();
        let timeout = self.timeout();
        let watch = self.watch.clone();
        // The empty kvs key (the bare prefix) is never written, so this reads nothing;
        // a linearizable read's header still carries the quorum's revision.
        let key = self.prefix.clone();
        self.runtime.block_on(async {
            let response = retry(timeout, false, || {
                let (mut kv, key) = (kv.clone(), key.clone());
                async move { kv.get(key, Some(GetOptions::new().with_keys_only())).await }
            })
            .await
            .map_err(|e| unavailable("barrier read", e))?;
            if let Some(stream) = watch.lock().await.as_mut() {
                let _ = stream.request_progress().await;
            }
            Ok(response.header().map_or(0, |h| h.revision()) as u64)
        })
    }

    fn close(&self) -> Result<(), PluginError> {
        if let Some(task) = self.follow_task.lock().unwrap().take() {
            task.abort();
        }
        Ok(())
    }

    fn health(&self) -> Option<Health> {
        Some(self.health.clone())
    }
}

/// Runs `request` until it succeeds or `timeout` has passed. A request that failed
/// only to connect (the member the client picked is down) is always tried again, on
/// another member; any other failure only if `only_unsent` is false (reads).
async fn retry<T, F, Fut>(timeout: Duration, only_unsent: bool, mut request: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let why = match tokio::time::timeout(left, request()).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => {
                let text = e.to_string();
                if only_unsent && !text.contains("connect error") {
                    return Err(text);
                }
                text
            }
            Err(_) => return Err(format!("timed out after {} ms", timeout.as_millis())),
        };
        if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
            return Err(why);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Delivers the log under `prefix` to `follower` for as long as the task runs.
async fn follow(
    client: Client,
    prefix: Vec<u8>,
    page_size: i64,
    follower: Follower,
    watch_slot: Arc<tokio::sync::Mutex<Option<WatchRequestSender>>>,
    health: Health,
) {
    // The revision to watch from; `None` until a snapshot has been read.
    let mut from: Option<i64> = None;
    let mut retry = Duration::from_millis(100);
    loop {
        if from.is_none() {
            match snapshot(&client, &prefix, page_size, &follower).await {
                Ok(revision) => from = Some(revision + 1),
                Err(e) => {
                    health.set(false);
                    log::warn(&format!("etcd snapshot failed, retrying: {e}"));
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let start = from.expect("set above");
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_progress_notify();
        let stream = match client.clone().watch(prefix.clone(), Some(options)).await {
            Ok(s) => s,
            Err(e) => {
                health.set(false);
                log::debug(&format!("etcd watch from {start} failed, retrying: {e}"));
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // The stream's request side goes to the slot (for progress requests); its
        // responses are read here.
        let (sender, mut responses) = stream.split();
        *watch_slot.lock().await = Some(sender);
        retry = Duration::from_millis(100);
        health.set(true);
        loop {
            let message = match responses.message().await {
                Ok(Some(m)) => m,
                Err(e) => {
                    log::debug(&format!("etcd watch broke, resuming from {from:?}: {e}"));
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
            if message.created() {
                continue; // says nothing about progress: history may still follow
            }
            let kvs_events: Vec<Event<'_>> = message
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let key = kv.key().strip_prefix(prefix.as_slice())?;
                    let position = kv.mod_revision() as u64;
                    Some(match e.event_type() {
                        EventType::Put => Event::put(position, key, kv.value()),
                        EventType::Delete => Event::delete(position, key),
                    })
                })
                .collect();
            let through = match kvs_events.last() {
                Some(last) => last.sequence,
                // A progress notification: everything through its revision was sent.
                None => message.header().map_or(0, |h| h.revision()) as u64,
            };
            follower.deliver(&kvs_events, through);
            if through > 0 {
                from = Some(through as i64 + 1);
            }
        }
        *watch_slot.lock().await = None;
        health.set(false);
        tokio::time::sleep(retry).await;
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
    let mut kv = client.kv_client();
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
