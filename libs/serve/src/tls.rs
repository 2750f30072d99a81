//! TLS for a listener: certificates from PEM files, optional client certificates
//! (mTLS), re-read on SIGHUP without touching open connections.
//!
//! The live `rustls::ServerConfig` sits behind a lock and is taken once per handshake;
//! a reload builds a whole new one and swaps it in only if every file parses and the
//! key matches the certificate, so a broken new file leaves the old certificate serving.

use std::path::Path;
use std::sync::{Arc, RwLock};

pub use kvs_config::TlsConfig;
use rustls::RootCertStore;
use rustls::server::{ServerConfig, ServerConnection, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A listener's TLS state: the config in use, and how to rebuild it.
pub struct Tls {
    config: TlsConfig,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the files now; an error says which file and what is wrong with it.
    /// `alpn` is what the listener speaks, most preferred first (e.g. `h2`, `http/1.1`).
    pub fn load(config: &TlsConfig, alpn: &[&[u8]]) -> Result<Tls, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let built = build(config, &alpn)?;
        Ok(Tls {
            config: config.clone(),
            alpn,
            current: RwLock::new(Arc::new(built)),
        })
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files; on any error the old config stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let built = build(&self.config, &self.alpn)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
        Ok(())
    }

    /// The certificate file, for messages.
    pub fn cert_path(&self) -> &Path {
        &self.config.cert
    }

    /// Warnings about the files, e.g. a private key others can read.
    pub fn warnings(&self) -> Vec<String> {
        key_permission_warning(&self.config.key)
            .into_iter()
            .collect()
    }
}

fn build(config: &TlsConfig, alpn: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e} (PEM: PKCS#8, PKCS#1 or SEC1)",
            config.key.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| {
                    format!("client_ca {} holds a bad CA certificate: {e}", ca.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {} do not make a usable pair: {e}",
            config.cert.display(),
            config.key.display()
        )
    })?;
    server.alpn_protocols = alpn.to_vec();
    Ok(server)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(chain)
}

#[cfg(unix)]
fn key_permission_warning(key: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key {} is readable by other users (mode {:o}); chmod 600 it",
            key.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn key_permission_warning(_key: &Path) -> Option<String> {
    None
}

/// The verified client certificate's identity: its subject's common name, or the whole
/// subject (RFC 4514) if it has none. `None` without a client certificate.
pub fn client_identity(connection: &ServerConnection) -> Option<Arc<str>> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| subject.to_string());
    Some(name.into())
}
