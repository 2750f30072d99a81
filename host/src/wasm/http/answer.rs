//! The HTTP responses a `.wasm` HTTP frontend's edge sends: the guest's answer turned
//! into a response, and the host's own (probes, timeouts, failed calls) — kept apart
//! from the pool and the edge that decide which to send.

use kvs_plugin_api::{ErrorCode, PluginError, wire};

use super::super::module::CallError;

pub(super) fn text(status: u16, msg: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        format!("{msg}\n"),
    )
        .into_response()
}

pub(super) fn timed_out() -> axum::response::Response {
    text(
        504,
        "request timed out (request_timeout_ms); a write may still complete".into(),
    )
}

/// The guest's answer (or its failure) as the HTTP response.
pub(super) fn http_answer(
    response: Result<Vec<u8>, CallError>,
    presented_token: bool,
) -> axum::response::Response {
    let bytes = match response {
        Ok(bytes) => bytes,
        Err(failed) => return call_failed(failed),
    };
    let r = match wire::HttpResponseRef::decode(&bytes) {
        Ok(r) => r,
        Err(e) => return call_failed(CallError::Guest(PluginError::internal(e.to_string()))),
    };
    let invalid = |e: String| text(500, format!("the guest's response: {e}"));
    let Ok(status) = axum::http::StatusCode::from_u16(r.status) else {
        return invalid(format!("status {}", r.status));
    };
    // Built in place (not through `Response::builder`, which moves the whole response
    // head through a `Result` per header), the body a view of the guest's output
    // instead of a copy of it.
    let mut headers = axum::http::HeaderMap::with_capacity(r.headers.len() + 1);
    let mut challenged = false;
    for (k, v) in &r.headers {
        challenged |= k.eq_ignore_ascii_case("www-authenticate");
        let name = axum::http::HeaderName::from_bytes(k.as_bytes());
        let value = axum::http::HeaderValue::from_bytes(v);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return invalid(format!("header {k:?}")),
        }
    }
    // A 401 says how to authenticate (RFC 6750); the host adds it so a guest that maps
    // `unauthenticated` to 401 need not know the scheme.
    if r.status == 401 && !challenged {
        headers.append(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static(bearer_challenge(presented_token)),
        );
    }
    let start = r.body.as_ptr() as usize - bytes.as_ptr() as usize;
    let body = start..start + r.body.len();
    let body = axum::body::Bytes::from(bytes).slice(body);
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The answer to a guest call that failed.
fn call_failed(failed: CallError) -> axum::response::Response {
    let status = match &failed {
        CallError::TimedOut(_) => 504,
        CallError::Guest(e) if e.code() == ErrorCode::UNAVAILABLE => 503,
        _ => 500,
    };
    text(status, failed.into_error().message().to_string())
}

/// The `WWW-Authenticate` value for a 401: `error="invalid_token"` when the client
/// presented a token the host refused.
fn bearer_challenge(presented_token: bool) -> &'static str {
    if presented_token {
        r#"Bearer realm="kvs", error="invalid_token""#
    } else {
        r#"Bearer realm="kvs""#
    }
}
