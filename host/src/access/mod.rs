//! Access control: who the caller is (a verified bearer token, or the TLS client
//! certificate its frontend verified) and whether it may read or write a key.
//!
//! One [`AccessControl`] is the host's [`RequestHook`]: every frontend's reads and writes
//! pass through it — native, WASM and third parties' alike — so a frontend never decides,
//! it only carries what the client presented ([`crate::caller`]). Off unless `[auth]`
//! says `enabled = true`.
//!
//! * [`tokens`]: JWT verification (HS256 secret; RS256/ES256/EdDSA public keys, PEM or JWKS).
//! * [`rules`]: roles with read/write key prefixes, principals mapped to roles.
//!
//! The decision: a presented token must verify (else `unauthenticated`), and its
//! principal claim names the caller; without a token, a verified TLS identity names
//! it; without either the caller is anonymous. The caller's roles (plus the anonymous
//! ones, which everyone has) must grant the operation on the key: else
//! `permission_denied`, or `unauthenticated` for an anonymous caller (it should log in).
//! Each refusal is one `warn` line under the `kvs::audit` target, at most
//! [`AUDIT_LINES_PER_SEC`] a second; those left out are counted in a line of their own.
//! A call for the empty key (which the store refuses anyway) has only its credentials
//! checked, and an anonymous caller is refused as unauthenticated: that is how a frontend
//! verifies a token as it is presented (RESP `AUTH`) and learns whether its caller is
//! authenticated (RESP `INFO`, gRPC reflection). The admin listener's `/metrics` and
//! `/plugins` ask [`RequestHook::check_admin`]: a caller with a role.

pub mod rules;
pub mod tokens;

use std::sync::Arc;

use anyhow::{Context, Result};
use kvs_plugin_api::PluginError;

use crate::caller::{Action, Caller, RequestHook};
pub use kvs_config::{AuthConfig, JwtConfig, RoleConfig};
use rules::Rules;
use tokens::Verifier;

/// Whether an endpoint URL (`http://127.0.0.1:8080`, `grpc://[::1]:50051`) listens
/// where other machines may reach it: any address but loopback or `localhost`. kvs
/// warns at start about such a listener when access control is off.
pub fn reachable_beyond_loopback(endpoint: &str) -> bool {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
    .trim_matches(['[', ']']);
    !host
        .parse::<std::net::IpAddr>()
        .map_or(host == "localhost", |ip| ip.is_loopback())
}

/// The host's access control, built from `[auth]`.
pub struct AccessControl {
    verifier: Option<Verifier>,
    rules: Rules,
    audit: AuditLimit,
}

/// Who a request is from, once credentials are checked.
#[derive(Debug, PartialEq, Eq)]
enum Principal<'a> {
    /// A verified token's principal claim.
    Token(Arc<str>),
    /// The common name of a client certificate the frontend verified.
    Certificate(&'a str),
    /// Nobody in particular.
    Anonymous,
}

impl Principal<'_> {
    fn name(&self) -> &str {
        match self {
            Principal::Token(name) => name,
            Principal::Certificate(name) => name,
            Principal::Anonymous => "anonymous",
        }
    }
}

impl AccessControl {
    /// Builds it from the config: reads key files and secrets now, so a mistake stops
    /// kvs at start, not at the first request. `None` when access control is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<AccessControl>> {
        if !config.enabled {
            return Ok(None);
        }
        let verifier = Verifier::from_config(&config.jwt).context("[auth.jwt]")?;
        let rules = Rules::from_config(config).context("[auth]")?;
        Ok(Some(AccessControl {
            verifier,
            rules,
            audit: AuditLimit::default(),
        }))
    }

    fn principal<'a>(&self, caller: &Caller<'a>) -> Result<Principal<'a>, String> {
        if let Some(token) = caller.bearer_token {
            let Some(verifier) = &self.verifier else {
                return Err(
                    "bearer tokens are not accepted here: [auth.jwt] configures no key \
                     (use a client certificate)"
                        .into(),
                );
            };
            return verifier.principal(token).map(Principal::Token);
        }
        Ok(match caller.client_identity {
            Some(identity) => Principal::Certificate(identity),
            None => Principal::Anonymous,
        })
    }

    fn refuse(
        &self,
        op: Action,
        key: &[u8],
        caller: &Caller<'_>,
        principal: &str,
        error: PluginError,
    ) -> PluginError {
        if self.audit.admit() {
            let shown = &key[..key.len().min(32)];
            tracing::warn!(
                target: "kvs::audit",
                frontend = caller.frontend,
                principal,
                op = ?op,
                key_prefix = %shown.escape_ascii(),
                peer = caller.peer.unwrap_or("-"),
                reason = error.message(),
                "request refused"
            );
        }
        error
    }

    fn refuse_admin(
        &self,
        caller: &Caller<'_>,
        principal: &str,
        error: PluginError,
    ) -> PluginError {
        if self.audit.admit() {
            tracing::warn!(
                target: "kvs::audit",
                frontend = caller.frontend,
                principal,
                op = "Admin",
                peer = caller.peer.unwrap_or("-"),
                reason = error.message(),
                "request refused"
            );
        }
        error
    }
}

/// Audit lines written per second at most: a flood of refused requests (a bad token
/// retried in a loop, a scanner) cannot flood the log. What is left out is counted, and
/// one `kvs::audit` line says how many once the second is over.
pub const AUDIT_LINES_PER_SEC: u32 = 20;

/// The audit lines' rate limit: a one-second window of [`AUDIT_LINES_PER_SEC`] lines.
#[derive(Clone, Default)]
struct AuditLimit {
    window: Arc<std::sync::Mutex<AuditWindow>>,
}

#[derive(Default)]
struct AuditWindow {
    started: Option<std::time::Instant>,
    written: u32,
    suppressed: u64,
}

impl AuditLimit {
    /// Whether this refusal's line is written; if not, it is counted, and the first one
    /// left out in a window starts a thread that reports the count when the window ends
    /// (so the count is written even if the flood stops).
    fn admit(&self) -> bool {
        let now = std::time::Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = w
            .started
            .is_none_or(|s| now.duration_since(s) >= std::time::Duration::from_secs(1));
        if fresh && w.suppressed == 0 {
            w.started = Some(now);
            w.written = 0;
        }
        if fresh && w.suppressed > 0 {
            // The reporter has not run yet; it will report this window too.
        } else if w.written < AUDIT_LINES_PER_SEC {
            w.written += 1;
            return true;
        }
        w.suppressed += 1;
        if w.suppressed == 1 {
            let ends = w.started.unwrap_or(now) + std::time::Duration::from_secs(1);
            let limit = self.clone();
            let spawned = std::thread::Builder::new()
                .name("kvs-audit".into())
                .spawn(move || {
                    std::thread::sleep(ends.saturating_duration_since(std::time::Instant::now()));
                    limit.report();
                });
            if spawned.is_err() {
                drop(w);
                self.report();
            }
        }
        false
    }

    /// Writes how many lines were left out, and starts a new window.
    fn report(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let suppressed = std::mem::take(&mut w.suppressed);
        w.started = Some(std::time::Instant::now());
        w.written = 0;
        drop(w);
        if suppressed > 0 {
            tracing::warn!(
                target: "kvs::audit",
                suppressed,
                limit_per_sec = AUDIT_LINES_PER_SEC,
                "{suppressed} refusals not logged (at most {AUDIT_LINES_PER_SEC} audit lines a second)"
            );
        }
    }
}

impl RequestHook for AccessControl {
    fn check(&self, op: Action, key: &[u8], caller: &Caller<'_>) -> Result<(), PluginError> {
        let principal = match self.principal(caller) {
            Ok(p) => p,
            Err(why) => {
                let error = PluginError::unauthenticated(format!("invalid bearer token: {why}"));
                return Err(self.refuse(op, key, caller, "-", error));
            }
        };
        // The empty key is no key (the store refuses it after this hook): a call for it
        // only has its credentials checked — they must be valid, and present: an
        // anonymous caller is refused as unauthenticated. Frontends use that to verify a
        // token when the client presents it (RESP `AUTH`), and to learn whether a caller
        // is authenticated before answering what only such callers see (RESP `INFO`,
        // `DBSIZE`, `CLIENT`; gRPC reflection), without reading or writing anything.
        if key.is_empty() {
            if principal == Principal::Anonymous {
                let error = PluginError::unauthenticated(
                    "anonymous callers get only health checks here: present a bearer token \
                     (Authorization: Bearer ..., Redis AUTH) or a client certificate",
                );
                return Err(self.refuse(op, key, caller, "anonymous", error));
            }
            return Ok(());
        }
        let known = (principal != Principal::Anonymous).then(|| principal.name());
        if self.rules.allows(known, op, key) {
            return Ok(());
        }
        let verb = match op {
            Action::Get => "read",
            Action::Put | Action::Delete => "write",
        };
        let error = if principal == Principal::Anonymous {
            PluginError::unauthenticated(format!(
                "anonymous callers may not {verb} this key: present a bearer token \
                 (Authorization: Bearer ...) or a client certificate"
            ))
        } else {
            PluginError::permission_denied(format!(
                "{} may not {verb} this key: no role of theirs grants it",
                principal.name()
            ))
        };
        Err(self.refuse(op, key, caller, principal.name(), error))
    }

    fn principal(&self, caller: &Caller<'_>) -> Option<Arc<str>> {
        match AccessControl::principal(self, caller).ok()? {
            Principal::Token(name) => Some(name),
            Principal::Certificate(name) => Some(name.into()),
            Principal::Anonymous => None,
        }
    }

    /// The admin endpoints (`/metrics`, `/plugins`) need an authenticated caller (a
    /// verified token or client certificate) to whom `[auth.principals]` gives at least
    /// one role, whatever it grants.
    fn check_admin(&self, caller: &Caller<'_>) -> Result<(), PluginError> {
        const WHAT: &str = "the admin endpoints";
        let principal = match self.principal(caller) {
            Ok(p) => p,
            Err(why) => {
                let error = PluginError::unauthenticated(format!("invalid bearer token: {why}"));
                return Err(self.refuse_admin(caller, "-", error));
            }
        };
        match principal {
            Principal::Anonymous => {
                let error = PluginError::unauthenticated(format!(
                    "anonymous callers may not read {WHAT}: present a bearer token \
                     (Authorization: Bearer ...) or a client certificate"
                ));
                Err(self.refuse_admin(caller, "anonymous", error))
            }
            known if self.rules.has_role(known.name()) => Ok(()),
            known => {
                let error = PluginError::permission_denied(format!(
                    "{} may not read {WHAT}: [auth.principals] gives them no role",
                    known.name()
                ));
                Err(self.refuse_admin(caller, known.name(), error))
            }
        }
    }

    /// A backup (and a migration, which also writes) needs what `check_admin` needs,
    /// and a role granting every key (`"*"`): a backup reads them all.
    fn check_whole_store(&self, caller: &Caller<'_>, writes: bool) -> Result<(), PluginError> {
        self.check_admin(caller)?;
        let principal = self
            .principal(caller)
            .map_err(PluginError::unauthenticated)?;
        let name = principal.name();
        let reads = self.rules.allows(Some(name), Action::Get, b"");
        if reads && (!writes || self.rules.allows(Some(name), Action::Put, b"")) {
            return Ok(());
        }
        let needs = if writes { "read and write" } else { "read" };
        let error = PluginError::permission_denied(format!(
            "{name} may not {} the whole store: it needs a role that may {needs} every key \
             (\"*\")",
            if writes { "migrate" } else { "back up" }
        ));
        Err(self.refuse_admin(caller, name, error))
    }
}

#[cfg(test)]
mod tests {
    use super::{AUDIT_LINES_PER_SEC, AuditLimit, reachable_beyond_loopback};

    #[test]
    fn audit_lines_are_limited_per_second_and_the_rest_counted() {
        let limit = AuditLimit::default();
        let written = (0..100).filter(|_| limit.admit()).count();
        assert_eq!(written, AUDIT_LINES_PER_SEC as usize);
        assert_eq!(
            limit.window.lock().unwrap().suppressed,
            100 - written as u64
        );
        // The report starts a new window (and zeroes the count).
        limit.report();
        assert_eq!(limit.window.lock().unwrap().suppressed, 0);
        assert!(limit.admit());
    }

    #[test]
    fn loopback_endpoints_are_not_warned_about() {
        for local in [
            "http://127.0.0.1:8080",
            "grpcs://[::1]:50051",
            "http://localhost:1",
            "https://127.0.0.2:443",
        ] {
            assert!(!reachable_beyond_loopback(local), "{local}");
        }
        for open in [
            "http://0.0.0.0:8080",
            "grpc://[::]:50051",
            "http://10.1.2.3:80",
            "https://kvs.example:443",
        ] {
            assert!(reachable_beyond_loopback(open), "{open}");
        }
    }
}
