//! The `[plugins.rest]` table and its defaults.

use kvs_plugin_api::PluginError;
use serde::Deserialize;

/// The `[plugins.rest]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Threads of the plug-in's tokio runtime. Default 2.
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
    /// Longest a request may take before it is answered 504. Default 30000.
    #[serde(default = "default_timeout")]
    pub request_timeout_ms: u64,
    /// Requests served at once; more wait their turn. Default 1024.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// TLS (`tls = { cert = "...", key = "...", client_ca = "..." }`); plain TCP without.
    pub tls: Option<kvs_serve::TlsConfig>,
    /// Most connections open at once; more are closed on accept. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections one client address may have open at once; more from it are
    /// closed on accept. 0: no per-peer cap (behind a proxy on one address). Default 256.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request header block in bytes (431 beyond it). Default 32768.
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
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_workers() -> usize {
    2
}
fn default_timeout() -> u64 {
    30_000
}
fn default_concurrency() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    kvs_serve::DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_connections() -> usize {
    kvs_serve::DEFAULT_MAX_CONNECTIONS
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

impl Config {
    /// Parses the plug-in's TOML table; errors name the bad key.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let c: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("[plugins.rest]: {e}")))?;
        if c.worker_threads == 0 || c.max_concurrent_requests == 0 || c.request_timeout_ms == 0 {
            return Err(PluginError::invalid_input(
                "[plugins.rest]: worker_threads, max_concurrent_requests and request_timeout_ms must be at least 1",
            ));
        }
        Ok(c)
    }
}
