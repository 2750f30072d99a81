//! Who is calling: the request context a frontend carried, as the host sees it, and the
//! hook where host-wide decisions about a request are made.
//!
//! Frontends (native 1.1, WASM, a third party's) only *carry* what the client presented;
//! every read and write they make reaches [`Store`](crate::store::Store) with a
//! [`Caller`]. The [`RequestHook`] sees each one before it is served: it is the one
//! place where authorization (and, later, per-request spans and metrics) belongs, so
//! every frontend gets the same treatment. A plugin-api 1.0 frontend cannot carry a
//! context: its calls arrive as [`Caller::anonymous`] with its frontend's name.

use std::sync::Arc;
use std::time::Instant;

use kvs_plugin_api::{PluginError, RequestContext};

use crate::metrics::FrontendMeter;

/// What a request is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A read.
    Get,
    /// A write of a value.
    Put,
    /// A removal.
    Delete,
}

impl Action {
    /// The contract's [`kvs_plugin_api::Action`] (what a frontend asks `check` about).
    pub fn from_contract(action: kvs_plugin_api::Action) -> Result<Action, PluginError> {
        match action {
            kvs_plugin_api::Action::GET => Ok(Action::Get),
            kvs_plugin_api::Action::PUT => Ok(Action::Put),
            kvs_plugin_api::Action::DELETE => Ok(Action::Delete),
            kvs_plugin_api::Action(other) => Err(PluginError::invalid_input(format!(
                "unknown store action {other}: this kvs knows get (1), put (2), delete (3)"
            ))),
        }
    }
}

/// The caller of one store operation, borrowing from the frontend's request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The frontend the request came through (its declared name).
    pub frontend: &'a str,
    /// A bearer token as presented, unverified.
    pub bearer_token: Option<&'a str>,
    /// The subject of a TLS client certificate the frontend verified.
    pub client_identity: Option<&'a str>,
    /// The client's W3C `traceparent`.
    pub traceparent: Option<&'a str>,
    /// The client's W3C `tracestate`.
    pub tracestate: Option<&'a str>,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
    /// The client's address.
    pub peer: Option<&'a str>,
    /// Where the frontend's requests are counted (none: not counted).
    pub meter: Option<&'a Arc<FrontendMeter>>,
    /// The frontend commits its writes itself when it is about to go idle
    /// ([`Store::commit_queued`](crate::store::Store::commit_queued)): they are queued
    /// without waking the writer thread.
    pub defers_commit: bool,
}

impl<'a> Caller<'a> {
    /// A caller that presented nothing, through `frontend`.
    pub fn anonymous(frontend: &'a str) -> Self {
        Caller {
            frontend,
            ..Caller::default()
        }
    }

    /// The caller an owned context describes (WASM frontends: the host built it).
    pub fn from_context(frontend: &'a str, ctx: &'a RequestContext, received: Instant) -> Self {
        Caller {
            frontend,
            bearer_token: ctx.bearer_token.as_deref(),
            client_identity: ctx.client_identity.as_deref(),
            traceparent: ctx.traceparent.as_deref(),
            tracestate: ctx.tracestate.as_deref(),
            deadline: ctx.deadline.and_then(|d| received.checked_add(d)),
            peer: ctx.peer.as_deref(),
            meter: None,
            defers_commit: false,
        }
    }
}

/// `e` as a plug-in built against contract minor `minor` reads it: a code added after
/// that minor (1.4's `storage full`, 1.5's `rate limited` and `deadline exceeded`)
/// becomes `unavailable` — all three mean "not done; retrying later may succeed", and
/// the plug-in would read an unknown code as `internal` (a 500). The message, which
/// says what happened, is kept. (1.2's access-control codes predate this rule: a 1.0
/// or 1.1 frontend still reads them as `internal`, as documented when 1.2 shipped.)
pub fn for_minor(mut e: PluginError, minor: u16) -> PluginError {
    let since = e.code().since_minor();
    if since >= 4 && since > minor {
        e.code = kvs_plugin_api::ErrorCode::UNAVAILABLE;
    }
    e
}

/// Sees every frontend request before the store serves it, and may refuse it.
///
/// Runs on the frontend's thread, inline with the request: keep it cheap. An error is
/// returned to the client as the request's outcome (a write refused here is never
/// queued, logged or applied).
pub trait RequestHook: Send + Sync {
    /// Decides about `op` on `key` for `caller`.
    /// (The caller's `meter` counts the outcome either way.)
    fn check(&self, op: Action, key: &[u8], caller: &Caller<'_>) -> Result<(), PluginError>;

    /// Whom `caller` is, once verified (a token's subject, a client certificate's
    /// name): what per-client rate limits count by. Default: nobody in particular.
    fn principal(&self, caller: &Caller<'_>) -> Option<Arc<str>> {
        let _ = caller;
        None
    }

    /// Decides whether `caller` may read the host's admin endpoints (`/metrics`,
    /// `/plugins`). Default: anyone may.
    fn check_admin(&self, caller: &Caller<'_>) -> Result<(), PluginError> {
        let _ = caller;
        Ok(())
    }

    /// Decides whether `caller` may copy the whole store out (`kvs backup`) or, with
    /// `writes`, move it to another logger (`kvs migrate`). Default: whoever
    /// `check_admin` admits.
    fn check_whole_store(&self, caller: &Caller<'_>, writes: bool) -> Result<(), PluginError> {
        let _ = writes;
        self.check_admin(caller)
    }
}
