//! Bearer-token verification (`host/src/access/tokens.rs`, `Verifier::principal`): what
//! every request with `Authorization: Bearer ...` goes through before kvs decides
//! anything. The target compiles that one file (it uses only jsonwebtoken, serde and
//! dashmap), not the host around it.
//!
//! Checks: any bytes as a token are refused or accepted without panic; a token the
//! input describes — claims, algorithm, signing secret — is accepted exactly when it is
//! HS256/384/512 signed with the configured secret, unexpired, issued by the configured
//! issuer, and names a non-empty principal, and then names that principal (asked twice:
//! the second answer comes from the verifier's cache).
#![no_main]

#[path = "../../host/src/access/tokens.rs"]
mod tokens;

use arbitrary::{Arbitrary, Unstructured};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"kvs-fuzz-secret-of-at-least-32-bytes!";
const ISSUER: &str = "kvs-fuzz";

#[derive(Debug)]
struct Claims {
    sub: Option<String>,
    /// Seconds from now (the verifier allows 30 s of leeway).
    exp_offset: Option<i32>,
    iss: Option<String>,
    right_issuer: bool,
    nbf_offset: Option<i32>,
}

#[derive(Debug)]
enum Input {
    Raw(String),
    Signed {
        claims: Claims,
        algorithm: u8,
        right_secret: bool,
        kid: Option<String>,
    },
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        if u.arbitrary::<bool>()? {
            return Ok(Input::Raw(u.arbitrary()?));
        }
        Ok(Input::Signed {
            claims: Claims {
                sub: u.arbitrary()?,
                exp_offset: u.arbitrary()?,
                iss: u.arbitrary()?,
                right_issuer: u.arbitrary()?,
                nbf_offset: u.arbitrary()?,
            },
            algorithm: u.arbitrary()?,
            right_secret: u.arbitrary()?,
            kid: u.arbitrary()?,
        })
    }
}

fn verifier() -> &'static tokens::Verifier {
    static VERIFIER: std::sync::OnceLock<tokens::Verifier> = std::sync::OnceLock::new();
    VERIFIER.get_or_init(|| {
        // SAFETY: set once, before the verifier reads it, while libFuzzer runs inputs
        // on this one thread.
        unsafe { std::env::set_var("KVS_FUZZ_SECRET", std::str::from_utf8(SECRET).unwrap()) };
        let config = tokens::JwtConfig {
            hs256_secret_env: Some("KVS_FUZZ_SECRET".into()),
            issuer: Some(ISSUER.into()),
            ..tokens::JwtConfig::default()
        };
        tokens::Verifier::from_config(&config)
            .expect("the fuzz config loads")
            .expect("it names a key")
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fuzz_target!(|input: Input| {
    let verifier = verifier();
    match input {
        Input::Raw(token) => {
            let _ = verifier.principal(&token);
        }
        Input::Signed {
            claims,
            algorithm,
            right_secret,
            kid,
        } => {
            let now = now();
            let mut body = serde_json::Map::new();
            if let Some(sub) = &claims.sub {
                body.insert("sub".into(), sub.clone().into());
            }
            if let Some(offset) = claims.exp_offset {
                body.insert("exp".into(), (now + offset as i64).into());
            }
            let iss = if claims.right_issuer {
                Some(ISSUER.to_string())
            } else {
                claims.iss.clone()
            };
            if let Some(iss) = &iss {
                body.insert("iss".into(), iss.clone().into());
            }
            if let Some(offset) = claims.nbf_offset {
                body.insert("nbf".into(), (now + offset as i64).into());
            }
            let algorithm =
                [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512][algorithm as usize % 3];
            let header = Header {
                kid,
                ..Header::new(algorithm)
            };
            let secret: &[u8] = if right_secret {
                SECRET
            } else {
                b"another secret, also 32 bytes long"
            };
            let Ok(key) = EncodingKey::from_secret(secret) else {
                return;
            };
            let Ok(token) = jsonwebtoken::encode(&header, &body, &key) else {
                return;
            };
            // Clear of the leeway on both sides, so the clock cannot flip the answer.
            let exp_ok = claims.exp_offset.is_some_and(|o| o > 60);
            let exp_bad = claims.exp_offset.is_none_or(|o| o < -60);
            // A time before the epoch is not a NumericDate (RFC 7519): malformed, refused.
            let nbf_ok = claims
                .nbf_offset
                .is_none_or(|o| o < -60 && (now + o as i64) >= 0);
            let nbf_bad = claims
                .nbf_offset
                .is_some_and(|o| o > 60 || (now + o as i64) < 0);
            let principal = claims.sub.clone().filter(|s| !s.is_empty());
            let valid = right_secret && iss.as_deref() == Some(ISSUER) && principal.is_some();
            for _ in 0..2 {
                let got = verifier.principal(&token);
                if valid && exp_ok && nbf_ok {
                    assert_eq!(
                        got.as_deref().ok(),
                        principal.as_deref(),
                        "a good token refused: {got:?}"
                    );
                } else if !valid || exp_bad || nbf_bad {
                    assert!(got.is_err(), "a bad token accepted: {claims:?} {got:?}");
                }
            }
        }
    }
});
