//! Bearer tokens: JWTs verified against the keys `[auth.jwt]` names.
//!
//! Each configured key accepts only the algorithms of its own kind (a secret: HS*; an
//! RSA key: RS*; ...), so a token cannot choose how it is checked: an HS256 token
//! "signed" with an RSA public key's bytes finds no HS256 key and is refused
//! (algorithm confusion), and `alg=none` is not an algorithm jsonwebtoken can parse.
//! HMAC signatures are compared in constant time (the `hmac` crate's `verify_slice`).
//!
//! Verified tokens are remembered until they expire ([`TokenCache`]): clients send the
//! same token with every request, and verifying one costs more than serving a GET.
//!
//! This file uses external crates only (its config type is `kvs-config`'s), so `fuzz/` compiles it alone (the `token`
//! target); keep it that way.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use anyhow::{Context, Result, bail};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use kvs_config::JwtConfig;

/// One key a token may be signed with.
struct Key {
    /// The JWKS `kid`, if the key came from one.
    kid: Option<String>,
    key: DecodingKey,
    /// What it checks: the algorithms of its kind, and the configured claims.
    validation: Validation,
}

/// Verifies tokens and names their principal.
pub struct Verifier {
    keys: Vec<Key>,
    principal_claim: String,
    leeway_secs: u64,
    cache: TokenCache,
}

/// Tokens that verified, with their principal, until they expire. Bounded: when full it
/// is emptied (clients simply re-verify once). Its hasher is std's SipHash with a
/// per-process random key, so a lookup compares bytes only with a cached token whose
/// keyed hash matches the presented one: timing reveals nothing about cached tokens.
#[derive(Default)]
struct TokenCache {
    entries: DashMap<Box<str>, (Arc<str>, u64)>,
}

/// Most tokens remembered at once.
const CACHE_CAPACITY: usize = 10_000;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Shortest HS256 secret accepted: the hash's own size (RFC 7518, 3.2).
const MIN_SECRET_BYTES: usize = 32;

impl Verifier {
    /// Loads every key the config names. `None` if it names none (tokens are then
    /// refused, and only client certificates identify callers).
    pub fn from_config(config: &JwtConfig) -> Result<Option<Verifier>> {
        let mut keys = Vec::new();
        let mut add = |kid: Option<String>, key: DecodingKey, algorithms: &[Algorithm]| {
            let mut validation = Validation::new(algorithms[0]);
            validation.algorithms = algorithms.to_vec();
            validation.leeway = config.leeway_secs;
            validation.validate_nbf = true;
            validation.validate_aud = config.audience.is_some();
            // jsonwebtoken checks `aud` and `iss` only when a token carries them: a
            // configured one must also be present, or a token minted for another
            // service (no `aud`) or by anyone holding the key (no `iss`) would pass.
            let mut required = vec!["exp"];
            if let Some(aud) = &config.audience {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            if let Some(iss) = &config.issuer {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            keys.push(Key {
                kid,
                key,
                validation,
            });
        };
        let hmac = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        if let Some(var) = &config.hs256_secret_env {
            let secret = std::env::var(var).with_context(|| {
                format!("hs256_secret_env = {var:?}, but that environment variable is not set")
            })?;
            add(None, secret_key(secret.as_bytes(), var)?, &hmac);
        }
        if let Some(path) = &config.hs256_secret_file {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read hs256_secret_file {}", path.display()))?;
            let secret = text.strip_suffix(b"\n").unwrap_or(&text);
            add(
                None,
                secret_key(secret, &path.display().to_string())?,
                &hmac,
            );
        }
        for path in &config.public_keys {
            let (key, algorithms) = public_key(path)?;
            add(None, key, algorithms);
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read jwks_file {}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("jwks_file {} is not a JWK set", path.display()))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).with_context(|| {
                    format!("jwks_file {}: key {:?}", path.display(), jwk.common.key_id)
                })?;
                let algorithms = family_algorithms(&key);
                if algorithms.contains(&Algorithm::HS256) {
                    bail!(
                        "jwks_file {}: symmetric keys (\"kty\": \"oct\") are not accepted from \
                         a JWKS; use hs256_secret_env or hs256_secret_file",
                        path.display()
                    );
                }
                add(jwk.common.key_id.clone(), key, algorithms);
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Verifier {
            keys,
            principal_claim: config.principal_claim.clone(),
            leeway_secs: config.leeway_secs,
            cache: TokenCache::default(),
        }))
    }

    /// The token's principal, or why it is refused (never quoting the token).
    pub fn principal(&self, token: &str) -> Result<Arc<str>, String> {
        if let Some(hit) = self.cache.entries.get(token) {
            let (principal, valid_until) = hit.value();
            if unix_now() <= *valid_until {
                return Ok(principal.clone());
            }
        }
        let (principal, exp) = self.verify(token)?;
        if self.cache.entries.len() >= CACHE_CAPACITY {
            self.cache.entries.clear();
        }
        // Checked against `exp` with the same leeway the verification allowed.
        let valid_until = exp.saturating_add(self.leeway_secs);
        self.cache
            .entries
            .insert(token.into(), (principal.clone(), valid_until));
        Ok(principal)
    }

    /// Verifies a token: its principal and its `exp`.
    fn verify(&self, token: &str) -> Result<(Arc<str>, u64), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| describe(e.kind()))?;
        let mut last = None;
        for key in &self.keys {
            let kid_matches = match (&key.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if !kid_matches || !key.validation.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &key.validation,
            ) {
                Ok(data) => {
                    // `exp` is a required claim: verification checked it is a number.
                    let exp = data.claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
                    return match data.claims.get(&self.principal_claim) {
                        Some(serde_json::Value::String(p)) if !p.is_empty() => {
                            Ok((p.as_str().into(), exp))
                        }
                        _ => Err(format!(
                            "the token has no {:?} claim naming the caller",
                            self.principal_claim
                        )),
                    };
                }
                // A bad signature may just mean "another key"; try the rest.
                Err(e) => last = Some(describe(e.kind())),
            }
        }
        Err(last.unwrap_or_else(|| format!("no configured key accepts algorithm {:?}", header.alg)))
    }
}

fn secret_key(secret: &[u8], source: &str) -> Result<DecodingKey> {
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "the HS256 secret from {source} is {} bytes; use at least {MIN_SECRET_BYTES} \
             (e.g. `openssl rand -hex 32`)",
            secret.len()
        );
    }
    Ok(DecodingKey::from_secret(secret)?)
}

/// A PEM public key and the algorithms of its kind.
fn public_key(path: &Path) -> Result<(DecodingKey, &'static [Algorithm])> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    let key = DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| {
            anyhow::anyhow!(
                "{} is not a PEM public key of a kind kvs accepts (RSA, EC P-256/P-384, Ed25519)",
                path.display()
            )
        })?;
    let algorithms = family_algorithms(&key);
    Ok((key, algorithms))
}

fn family_algorithms(key: &DecodingKey) -> &'static [Algorithm] {
    use jsonwebtoken::AlgorithmFamily;
    match key.family() {
        AlgorithmFamily::Hmac => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        AlgorithmFamily::Rsa => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmFamily::Ec => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmFamily::Ed => &[Algorithm::EdDSA],
    }
}

/// Why a token was refused, for the client and the audit log.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is for another audience (aud)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer (iss)".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted".into()
        }
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("the token's {c:?} claim is malformed"),
        _ => "the token is malformed".into(),
    }
}
