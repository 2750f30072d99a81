//! What every network listener takes (a frontend's, the admin one): TLS files and the
//! defaults of its caps and deadlines. `kvs-serve` applies them and re-exports these.

use std::path::PathBuf;

use serde::Deserialize;

/// A listener's `tls = { ... }` table. Only paths: keys never live in config.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM (leaf first).
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1). Should be readable by kvs alone.
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. Set: clients must
    /// present one (mTLS), and its subject's common name becomes the caller's identity.
    pub client_ca: Option<PathBuf>,
}

/// Default cap on open connections per listener (like Redis's `maxclients`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on a request's header block, in bytes: larger ones get 431 (HTTP/1.1)
/// or a stream reset (HTTP/2).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default cap on one address's open connections per listener.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;
/// Default `handshake_timeout_ms`: the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default `idle_timeout_ms`: silence allowed between requests.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
