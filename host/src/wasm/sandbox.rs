//! Sandbox settings: the host's keys in a WASM plug-in's table.

use std::path::{Path, PathBuf};

use kvs_plugin_api::PluginError;
use serde::Deserialize;

/// Sandbox settings: the host's keys in a WASM plug-in's table.
#[derive(Debug, Clone, Deserialize)]
pub struct Sandbox {
    /// A directory the guest may use, mounted at `/data`. None: no file system at all.
    pub data_dir: Option<PathBuf>,
    /// Memory cap per instance, MiB. Default 64.
    #[serde(default = "default_memory")]
    pub memory_max_mb: u32,
    /// Longest a single call may run. Default 5000.
    #[serde(default = "default_timeout")]
    pub call_timeout_ms: u64,
    /// Instances serving a frontend concurrently. Default 4.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Where the host listens for a WASM HTTP frontend. Default `127.0.0.1:8081`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Async worker threads of a WASM HTTP frontend's server. Default 2.
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
    /// TLS for a WASM HTTP frontend's listener (`tls = { cert, key, client_ca }`).
    pub tls: Option<kvs_serve::TlsConfig>,
    /// Most connections a WASM frontend's listener keeps open. Default 10000 for HTTP,
    /// 1024 for a stream frontend (each of whose connections holds an instance).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Most connections one client address may keep open; 0: no per-peer cap. Default
    /// 256.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request header block, bytes. Default 32768.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Longest a TLS handshake may take, in ms (see kvs-serve's `deadline`). Default
    /// 5000.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A connection that receives nothing for this long with no request in progress is
    /// closed (one that never sends a byte, after 10 s or this if shorter). 0: never.
    /// Default 300000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most writes one guest call keeps queued and not yet durable (frontends). A
    /// `kvs_put`/`kvs_delete` past it first waits for the call's earlier writes to
    /// become durable. Default 1024.
    #[serde(default = "default_call_max_writes")]
    pub call_max_writes: usize,
    /// Most bytes (keys and values) one guest call keeps queued and not yet durable,
    /// MiB; past it a write waits as for `call_max_writes`. Default 64.
    #[serde(default = "default_call_max_write_mb")]
    pub call_max_write_mb: u32,
    /// Total guest memory a frontend's instances may reserve, MiB: instances x
    /// `memory_max_mb` stays within it. A stream frontend (an instance per connection)
    /// refuses new connections past it; an HTTP frontend's `pool_size` x
    /// `memory_max_mb` must fit. Default 1024.
    #[serde(default = "default_memory_budget")]
    pub memory_budget_mb: u32,
    /// Longest a WASM logger's whole replay may take before start-up fails. Default
    /// 600000 (10 minutes).
    #[serde(default = "default_replay_timeout")]
    pub replay_timeout_ms: u64,
    /// Guest log lines (`kvs_log`) per second the host passes on for this plug-in; the
    /// rest are dropped and counted. Default 100.
    #[serde(default = "default_log_lines")]
    pub log_lines_per_sec: u32,
    /// Longest guest log line, bytes; longer ones are cut. Default 4096.
    #[serde(default = "default_log_line_bytes")]
    pub log_line_max_bytes: usize,
    /// A WASM HTTP frontend's request deadline, in ms, as `rest`'s: a request whose body
    /// has not arrived (or that found no free instance) by then is answered 504. Default
    /// 30000. (A guest call is bounded by `call_timeout_ms` on its own.)
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_memory() -> u32 {
    64
}
fn default_timeout() -> u64 {
    5000
}
fn default_pool() -> usize {
    4
}
fn default_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_workers() -> usize {
    2
}
fn default_max_connections_per_peer() -> usize {
    kvs_serve::DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_header_bytes() -> usize {
    kvs_serve::DEFAULT_MAX_HEADER_BYTES
}
fn default_handshake_timeout_ms() -> u64 {
    kvs_serve::deadline::DEFAULT_HANDSHAKE_TIMEOUT_MS
}
fn default_idle_timeout_ms() -> u64 {
    kvs_serve::deadline::DEFAULT_IDLE_TIMEOUT_MS
}
fn default_call_max_writes() -> usize {
    1024
}
fn default_call_max_write_mb() -> u32 {
    64
}
fn default_memory_budget() -> u32 {
    1024
}
fn default_replay_timeout() -> u64 {
    600_000
}
fn default_log_lines() -> u32 {
    100
}
fn default_log_line_bytes() -> usize {
    4096
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

pub(super) const SANDBOX_KEYS: [&str; 19] = [
    "data_dir",
    "memory_max_mb",
    "call_timeout_ms",
    "pool_size",
    "listen",
    "worker_threads",
    "tls",
    "max_connections",
    "max_connections_per_peer",
    "max_header_bytes",
    "handshake_timeout_ms",
    "idle_timeout_ms",
    "call_max_writes",
    "call_max_write_mb",
    "memory_budget_mb",
    "replay_timeout_ms",
    "log_lines_per_sec",
    "log_line_max_bytes",
    "request_timeout_ms",
];

impl Sandbox {
    /// Splits a plug-in table into the host's sandbox settings and the guest's config.
    pub fn split(table: &str) -> Result<(Sandbox, String), PluginError> {
        let mut all: toml::Table =
            toml::from_str(table).map_err(|e| PluginError::invalid_input(e.to_string()))?;
        let mut ours = toml::Table::new();
        for key in SANDBOX_KEYS {
            if let Some(v) = all.remove(key) {
                ours.insert(key.into(), v);
            }
        }
        let sandbox: Sandbox = ours.try_into().map_err(|e: toml::de::Error| {
            PluginError::invalid_input(format!("sandbox settings: {e}"))
        })?;
        if sandbox.pool_size == 0
            || sandbox.memory_max_mb == 0
            || sandbox.call_timeout_ms == 0
            || sandbox.worker_threads == 0
            || sandbox.call_max_writes == 0
            || sandbox.call_max_write_mb == 0
            || sandbox.replay_timeout_ms == 0
            || sandbox.log_lines_per_sec == 0
            || sandbox.log_line_max_bytes == 0
            || sandbox.request_timeout_ms == 0
        {
            return Err(PluginError::invalid_input(
                "pool_size, memory_max_mb, call_timeout_ms, worker_threads, call_max_writes, \
                 call_max_write_mb, replay_timeout_ms, log_lines_per_sec, \
                 log_line_max_bytes and request_timeout_ms must be at least 1",
            ));
        }
        if sandbox.memory_budget_mb < sandbox.memory_max_mb {
            return Err(PluginError::invalid_input(format!(
                "memory_budget_mb = {} is less than memory_max_mb = {}: not even one instance \
                 would fit",
                sandbox.memory_budget_mb, sandbox.memory_max_mb
            )));
        }
        let guest = toml::to_string(&all).map_err(|e| PluginError::internal(e.to_string()))?;
        Ok((sandbox, guest))
    }

    /// The sandbox a file is scanned in at discovery: tighter than any plug-in's, since
    /// a handshake only returns a few bytes, and a file dropped into the plugins
    /// directory must not be able to stall `kvs plugins list` or start-up.
    pub(super) fn for_discovery() -> Sandbox {
        Sandbox {
            data_dir: None,
            memory_max_mb: 32,
            call_timeout_ms: 1000,
            pool_size: 1,
            listen: default_listen(),
            worker_threads: 1,
            tls: None,
            max_connections: Some(1),
            max_connections_per_peer: 1,
            max_header_bytes: default_max_header_bytes(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            call_max_writes: default_call_max_writes(),
            call_max_write_mb: default_call_max_write_mb(),
            memory_budget_mb: default_memory_budget(),
            replay_timeout_ms: default_replay_timeout(),
            log_lines_per_sec: default_log_lines(),
            log_line_max_bytes: default_log_line_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }

    /// What one guest call may keep queued: [`Sandbox::call_max_writes`] and
    /// [`Sandbox::call_max_write_mb`].
    pub(super) fn write_limits(&self) -> super::host_fns::WriteLimits {
        super::host_fns::WriteLimits {
            max_writes: self.call_max_writes,
            max_bytes: u64::from(self.call_max_write_mb) << 20,
        }
    }
}

/// Most entries of a `data_dir` [`remove_escaping_links`] looks at.
const MAX_SWEEP_ENTRIES: usize = 100_000;

/// Removes the symbolic links under `dir` (canonical) that lead outside it or nowhere,
/// never following one, and returns how many. The guest itself cannot follow them
/// (wasi-common resolves every path inside its preopened directory and refuses a link
/// out), but the operator's tools and backups might, and a guest can create one (a
/// relative target climbing out with `..`; wasi-common refuses an absolute one), so what
/// it left behind is swept when the plug-in opens. Hard links need no
/// sweep: WASI's `path_link` stays inside the preopen, so a guest cannot make one to a
/// file outside.
pub(super) fn remove_escaping_links(dir: &Path, name: &str) -> usize {
    let (mut removed, mut seen) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_SWEEP_ENTRIES {
                tracing::warn!(
                    plugin = name,
                    "data_dir {}: more than {MAX_SWEEP_ENTRIES} entries; stopped looking for \
                     links that leave it",
                    dir.display()
                );
                return removed;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_symlink() {
                let inside = std::fs::canonicalize(&path).is_ok_and(|t| t.starts_with(dir));
                if !inside {
                    let target = std::fs::read_link(&path).unwrap_or_default();
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            removed += 1;
                            tracing::warn!(
                                plugin = name,
                                "removed {} from its data_dir: a symbolic link to {}, outside it",
                                path.display(),
                                target.display()
                            );
                        }
                        Err(e) => tracing::warn!(
                            plugin = name,
                            "cannot remove {}, a symbolic link out of its data_dir: {e}",
                            path.display()
                        ),
                    }
                }
            }
        }
    }
    removed
}

/// For a guest that takes no config of its own (`what` says which), any key besides the
/// sandbox settings would be silently ignored: refuse it, as kvs does every unknown key.
pub(super) fn refuse_guest_keys(
    name: &str,
    guest_config: &str,
    what: &str,
) -> Result<(), PluginError> {
    let unknown: Vec<String> = toml::from_str::<toml::Table>(guest_config)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(PluginError::invalid_input(format!(
        "[plugins.{name}]: unknown key(s) {}: {what} takes no config of its own, only the \
         host's sandbox settings ({})",
        unknown.join(", "),
        SANDBOX_KEYS.join(", ")
    )))
}
