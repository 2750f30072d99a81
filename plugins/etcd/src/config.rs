//! The `[plugins.etcd]` table and its defaults.

use kvs_plugin_api::PluginError;
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
    pub(crate) fn options(&self) -> Result<etcd_client::TlsOptions, PluginError> {
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
