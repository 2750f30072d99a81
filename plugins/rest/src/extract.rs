//! What a handler reads from a request before it runs: the key, the client's context,
//! the read consistency asked for, and the conditional headers.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::Response;
use kvs_plugin_api::{Consistency, RequestContext};

use crate::{AppState, conditions, error_response, key};

/// The key: everything after the route prefix, percent-decoded to raw bytes ([`key`]). Refuses
/// an empty key (400) and one over the host's limit (414) before any handler runs.
pub struct Key(pub Vec<u8>);

impl FromRequestParts<AppState> for Key {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let key = key::from_path(parts.uri.path());
        if key.is_empty() {
            return Err(error_response(StatusCode::BAD_REQUEST, "empty key"));
        }
        let max = state.store.limits().max_key_bytes;
        if key.len() as u64 > max {
            return Err(error_response(
                StatusCode::URI_TOO_LONG,
                &format!("key is {} bytes; the limit is {max}", key.len()),
            ));
        }
        Ok(Key(key))
    }
}

/// What the client presented with a request, read from its headers and connection.
pub struct ClientContext(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for ClientContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut ctx = RequestContext::from_headers(
            parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<kvs_serve::Peer>>() {
            ctx.peer = Some(String::from(&*peer.text));
            ctx.client_identity = peer.identity.as_deref().map(String::from);
        }
        if let Some(Deadline(at)) = parts.extensions.get::<Deadline>() {
            ctx.deadline = Some(at.saturating_duration_since(std::time::Instant::now()));
        }
        Ok(ClientContext(ctx))
    }
}

/// When the request's answer is due (set by the timeout middleware): the store gets it
/// as the context's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub std::time::Instant);

/// The client's `kvs-timeout-ms` header: how long it will wait for this request, in
/// milliseconds (like gRPC's `grpc-timeout`). A value that is not a positive integer
/// is an error.
pub const TIMEOUT_HEADER: &str = "kvs-timeout-ms";

/// The client's timeout from [`TIMEOUT_HEADER`], if it sent one.
pub fn client_timeout(
    headers: &axum::http::HeaderMap,
) -> Result<Option<std::time::Duration>, String> {
    let mut values = headers.get_all(TIMEOUT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{TIMEOUT_HEADER} is given twice: send it once"));
    }
    let digits = value.as_bytes();
    let ms = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
        .flatten();
    match ms {
        Some(ms) if ms > 0 => Ok(Some(std::time::Duration::from_millis(ms))),
        _ => Err(format!(
            "{TIMEOUT_HEADER} must be a whole number of milliseconds (digits only), at least 1"
        )),
    }
}

/// The client's timeout ([`TIMEOUT_HEADER`]) for a read, which takes no concurrency
/// permit: a bad one is answered 400, as for a write.
pub struct ClientTimeout(pub Option<std::time::Duration>);

impl<S: Send + Sync> FromRequestParts<S> for ClientTimeout {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        client_timeout(&parts.headers)
            .map(ClientTimeout)
            .map_err(|why| error_response(StatusCode::BAD_REQUEST, &why))
    }
}

/// The read consistency the client asked for with the `kvs-consistency` header
/// (`linearizable` | `local`; it matters only on a kvs cluster). Read in place: taking
/// the whole `HeaderMap` would clone it for every GET.
pub struct ReadConsistency(pub Consistency);

impl<S: Send + Sync> FromRequestParts<S> for ReadConsistency {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ReadConsistency(
            match parts.headers.get(Consistency::HEADER) {
                Some(value) => Consistency::from_headers([(Consistency::HEADER, value.as_bytes())]),
                None => Consistency::DEFAULT,
            },
        ))
    }
}

/// A GET's `If-None-Match`, read in place (the whole `HeaderMap` would be cloned).
pub struct IfNoneMatch(pub Option<header::HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(
            parts.headers.get(header::IF_NONE_MATCH).cloned(),
        ))
    }
}

/// A GET's `If-Match`, read in place.
pub struct IfMatch(pub Option<header::HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(IfMatch(parts.headers.get(header::IF_MATCH).cloned()))
    }
}

/// A write's conditional headers ([`conditions::read`]), or why kvs cannot honour them.
pub struct WriteConditions(pub Result<Option<conditions::Conditional>, String>);

impl<S: Send + Sync> FromRequestParts<S> for WriteConditions {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let put = parts.method == axum::http::Method::PUT;
        Ok(WriteConditions(conditions::read(&parts.headers, put)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_timeout_is_digits_once() {
        let with = |values: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for v in values {
                headers.append(TIMEOUT_HEADER, v.parse().unwrap());
            }
            client_timeout(&headers)
        };
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(
            with(&["250"]),
            Ok(Some(std::time::Duration::from_millis(250)))
        );
        for bad in [
            "+5",
            "0",
            "-1",
            "1.5",
            "0x10",
            "1e3",
            "abc",
            "99999999999999999999",
        ] {
            assert!(with(&[bad]).is_err(), "{bad}");
        }
        assert!(with(&["5", "6"]).unwrap_err().contains("twice"));
    }
}
