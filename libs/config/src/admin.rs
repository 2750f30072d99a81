//! `[admin]`: the admin listener (`/metrics`, `/healthz`, `/readyz`, `/plugins`).

use serde::Deserialize;

use crate::listener::TlsConfig;

/// The `[admin]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, e.g. `127.0.0.1:9090`; port 0 picks a free one.
    pub listen: String,
    /// TLS, as for a frontend's listener.
    pub tls: Option<TlsConfig>,
    /// Most connections open at once. Default 64.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections one client address may have open at once; more from it are
    /// closed on accept. 0: no per-peer cap (behind a proxy on one address). Default 256.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request header block in bytes. Default 32768.
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

fn default_max_connections_per_peer() -> usize {
    crate::listener::DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_connections() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    crate::listener::DEFAULT_MAX_HEADER_BYTES
}
fn default_handshake_timeout_ms() -> u64 {
    crate::listener::DEFAULT_HANDSHAKE_TIMEOUT_MS
}
fn default_idle_timeout_ms() -> u64 {
    crate::listener::DEFAULT_IDLE_TIMEOUT_MS
}
