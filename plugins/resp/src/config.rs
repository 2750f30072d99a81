//! The `[plugins.resp]` table and its defaults.

use kvs_plugin_api::PluginError;
use serde::Deserialize;

/// The `[plugins.resp]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:6379`, Redis's port; port 0 picks a free
    /// port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Threads of the plug-in's tokio runtime. Default 1, as Redis has: the frontend
    /// commits its connections' writes on its thread (`frontend:commits`), so more
    /// threads mostly wait for each other's commits; more help TLS and long commands
    /// on a machine with cores to spare (docs/benchmarks.md).
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
    /// Most connections open at once; more are closed on accept. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections one client address may have open at once; more from it are
    /// closed on accept. 0: no per-peer cap (behind a proxy on one address). Default 256.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Most bytes one command may span (a long `MSET`); beyond it the command is skipped
    /// and answered with an error. Default 64 MiB.
    #[serde(default = "default_max_command_bytes")]
    pub max_command_bytes: usize,
    /// TLS (`tls = { cert = "...", key = "...", client_ca = "..." }`, as for the HTTP
    /// frontends: `redis-cli --tls`); plain TCP without.
    pub tls: Option<kvs_serve::TlsConfig>,
    /// Largest reply one command may have (an `MGET` of many large values); a larger
    /// one is answered with an error instead. Default 64 MiB.
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: usize,
    /// Longest a TLS handshake may take, in ms (see kvs-serve's `deadline`). Default
    /// 5000.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed, like Redis's `timeout`
    /// (one that never sends a byte, after 10 s or this if shorter). 0: never. Default
    /// 300000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// A command must arrive whole within this many ms of its first byte; a connection
    /// whose command is still incomplete then is answered an error and closed, so a
    /// client trickling a command byte by byte cannot hold its slot. 0: no bound.
    /// Default 30000 (as long as an HTTP client gets for its headers).
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
}

fn default_listen() -> String {
    "127.0.0.1:6379".into()
}
fn default_workers() -> usize {
    1
}
fn default_max_connections_per_peer() -> usize {
    kvs_serve::DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_command_bytes() -> usize {
    64 << 20
}
fn default_max_reply_bytes() -> usize {
    64 << 20
}
fn default_handshake_timeout_ms() -> u64 {
    kvs_serve::deadline::DEFAULT_HANDSHAKE_TIMEOUT_MS
}
fn default_idle_timeout_ms() -> u64 {
    kvs_serve::deadline::DEFAULT_IDLE_TIMEOUT_MS
}
fn default_command_timeout_ms() -> u64 {
    30_000
}

impl Config {
    /// Parses the plug-in's TOML table; errors name the bad key.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let c: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("[plugins.resp]: {e}")))?;
        if c.worker_threads == 0
            || c.max_connections == 0
            || c.max_command_bytes == 0
            || c.max_reply_bytes == 0
        {
            return Err(PluginError::invalid_input(
                "[plugins.resp]: worker_threads, max_connections, max_command_bytes and \
                 max_reply_bytes must be at least 1",
            ));
        }
        Ok(c)
    }
}
