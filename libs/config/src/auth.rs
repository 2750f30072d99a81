//! `[auth]`: access control as written. The host resolves it (`kvs_host::access`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The `[auth]` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Turn access control on (default off: anyone who reaches a listener may do anything).
    #[serde(default)]
    pub enabled: bool,
    /// Roles every caller has, including those that present nothing. Default none.
    #[serde(default)]
    pub anonymous: Vec<String>,
    /// How bearer tokens are verified.
    #[serde(default)]
    pub jwt: JwtConfig,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleConfig>,
    /// Principals (a token's principal claim, or a client certificate's common name)
    /// and the roles they have.
    #[serde(default)]
    pub principals: BTreeMap<String, Vec<String>>,
}

/// One `[auth.roles.NAME]` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Key prefixes the role may read. `*` is every key; `%XX` escapes any byte.
    #[serde(default)]
    pub read: Vec<String>,
    /// Key prefixes the role may write (put and delete).
    #[serde(default)]
    pub write: Vec<String>,
}

/// The `[auth.jwt]` table as written. Secrets are never written here, only where to
/// find them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Environment variable holding the HS256 secret (at least 32 bytes).
    pub hs256_secret_env: Option<String>,
    /// File holding the HS256 secret (at least 32 bytes; one trailing newline ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM files of public keys: RSA (RS256/384/512), P-256/P-384 (ES256/384),
    /// Ed25519 (EdDSA), told apart by the key itself.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`); a token's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    /// If set, every token must carry an `iss` claim equal to it (a token without one
    /// is refused).
    pub issuer: Option<String>,
    /// If set, every token must carry an `aud` claim naming it (one of the token's; a
    /// token without `aud` is refused).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The claim that names the caller. Default `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret_env: None,
            hs256_secret_file: None,
            public_keys: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: default_leeway(),
            principal_claim: default_principal_claim(),
        }
    }
}

fn default_leeway() -> u64 {
    30
}
fn default_principal_claim() -> String {
    "sub".into()
}
