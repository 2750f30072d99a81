//! [`RequestContext`]: what a client presented with a request (plugin-api 1.1).
//!
//! A frontend fills one per request and passes it with each store call
//! ([`Store::get_with`](crate::Store::get_with) and friends). It *carries*; it does not
//! judge. The host is the one place that decides what a caller may do, how long it may
//! take and which trace it belongs to, so every frontend — a third party's, a WASM one —
//! gets the same decisions without re-implementing them.
//!
//! For WASM HTTP frontends the host fills the context itself from the request it
//! received; a guest can read it with `guest::request_context()`.

use std::time::Duration;

/// What the client presented, as the frontend received it. Every field is optional; the
/// default is an anonymous caller with no deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// A bearer token as presented (`Authorization: Bearer <token>`, gRPC
    /// `authorization` metadata), unverified.
    pub bearer_token: Option<String>,
    /// The subject of a TLS client certificate the frontend's TLS layer verified.
    pub client_identity: Option<String>,
    /// The W3C `traceparent` header, if the client sent one (unparsed).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` header, if the client sent one.
    pub tracestate: Option<String>,
    /// How long the client will wait for an answer, from the moment of the store call
    /// (e.g. from gRPC's `grpc-timeout`).
    pub deadline: Option<Duration>,
    /// The client's address as the frontend saw it, e.g. `127.0.0.1:50432`.
    pub peer: Option<String>,
}

impl RequestContext {
    /// An anonymous caller with no deadline: what a plugin-api 1.0 frontend's calls are.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Reads the fields an HTTP-like protocol carries in headers (HTTP/1, HTTP/2, gRPC
    /// metadata): `authorization` (the `Bearer` scheme, case-insensitive),
    /// `traceparent`, `tracestate`. Names are compared case-insensitively; values that
    /// are not UTF-8 are skipped. `peer`, `client_identity` and `deadline` are left for
    /// the caller to set.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut ctx = RequestContext::default();
        for (name, value) in headers {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if name.eq_ignore_ascii_case("authorization") {
                if let Some((scheme, token)) = value.trim().split_once(' ')
                    && scheme.eq_ignore_ascii_case("bearer")
                {
                    ctx.bearer_token = Some(token.trim().to_string());
                }
            } else if name.eq_ignore_ascii_case("traceparent") {
                ctx.traceparent = Some(value.trim().to_string());
            } else if name.eq_ignore_ascii_case("tracestate") {
                ctx.tracestate = Some(value.trim().to_string());
            }
        }
        ctx
    }

    /// Sets the peer address.
    pub fn with_peer(mut self, peer: impl std::fmt::Display) -> Self {
        self.peer = Some(peer.to_string());
        self
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_trace_headers() {
        let headers: [(&str, &[u8]); 5] = [
            ("Authorization", b"bearer abc.def"),
            (
                "traceparent",
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("TraceState", b"k=v"),
            ("x-other", b"ignored"),
            ("authorization-extra", b"Bearer no"),
        ];
        let ctx = RequestContext::from_headers(headers).with_peer("127.0.0.1:1");
        assert_eq!(ctx.bearer_token.as_deref(), Some("abc.def"));
        assert_eq!(
            ctx.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(ctx.tracestate.as_deref(), Some("k=v"));
        assert_eq!(ctx.peer.as_deref(), Some("127.0.0.1:1"));
        let basic: [(&str, &[u8]); 1] = [("authorization", b"Basic dXNlcjpwdw==")];
        assert_eq!(RequestContext::from_headers(basic).bearer_token, None);
    }
}

/// What a store call is about to do, for [`Store::check_with`](crate::Store::check_with)
/// (1.4): the host answers as it would answer the call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action(pub u8);

impl Action {
    /// A read of the key.
    pub const GET: Action = Action(1);
    /// A write of the key.
    pub const PUT: Action = Action(2);
    /// A removal of the key.
    pub const DELETE: Action = Action(3);
}

/// How fresh a read must be (1.3). Matters only when kvs nodes share a log (the `etcd`
/// logger): a single kvs answers every read linearizably anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Consistency(pub u8);

impl Consistency {
    /// Whatever the node is configured for (`[cluster] reads`).
    pub const DEFAULT: Consistency = Consistency(0);
    /// From the node's own map: fast, sequentially consistent, the node's own writes
    /// included, possibly behind other nodes' latest writes.
    pub const LOCAL: Consistency = Consistency(1);
    /// After a quorum barrier: sees every write acknowledged anywhere before the read.
    pub const LINEARIZABLE: Consistency = Consistency(2);

    /// The header (HTTP) or metadata key (gRPC) a client sets to choose:
    /// `kvs-consistency: linearizable` or `local`.
    pub const HEADER: &str = "kvs-consistency";

    /// What a client asked for in its request headers (names compared
    /// case-insensitively); `DEFAULT` if nothing, or something unknown.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(Self::HEADER) {
                let value = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
                return match value.as_str() {
                    "linearizable" => Self::LINEARIZABLE,
                    "local" => Self::LOCAL,
                    _ => Self::DEFAULT,
                };
            }
        }
        Self::DEFAULT
    }
}
