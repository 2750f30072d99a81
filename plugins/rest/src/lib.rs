//! The `rest` frontend: the book's HTTP API, served by axum on the plug-in's own runtime.
//!
//! | request                         | answer                                         |
//! |---------------------------------|------------------------------------------------|
//! | `PUT /v1/key/{key}` body=value  | 201 once durable                               |
//! | `GET /v1/key/{key}`             | 200 with the raw value, or 404 (header          |
//! |                                 | `kvs-consistency: linearizable` or `local` on   |
//! |                                 | a kvs cluster)                                  |
//! | `DELETE /v1/key/{key}`          | 200, also for a missing key                    |
//! | `GET` answers carry `ETag`      | the key's revision, `"42"`; `kvs-ttl-ms`: the  |
//! |                                 | time left, for a key with a deadline; 304 for  |
//! |                                 | `If-None-Match` naming the current tag, 412 for |
//! |                                 | an `If-Match` that does not                     |
//! | `PUT`/`DELETE` with `If-Match:  | only if the key is at that revision (or exists);|
//! | "42"` or `*`                    | else 412 with the current `ETag`               |
//! | `PUT` with `If-None-Match: *`   | only if the key is absent; else 412            |
//! | `PUT` with `kvs-ttl-ms: N`      | the key expires N ms later                     |
//! | other methods on those paths    | 405 with `Allow`                               |
//! | `/v1/{key}`                     | the same three (the book uses both forms)      |
//! | `GET /healthz`                  | 200 while the process answers                  |
//! | `GET /readyz`                   | 200 when serving, 503 starting or stopping     |
//!
//! The key is the rest of the path, percent-decoded to bytes, so `%2F`, `%00`, `%0A` and
//! UTF-8 all work. Errors are one line of text; [`status_of`] maps store errors to
//! statuses in one place.
//!
//! Each store call carries what the client presented ([`ClientContext`]): an
//! `Authorization: Bearer` token, `traceparent`/`tracestate`, and the peer address. The
//! host decides what to make of them; this frontend does not judge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State, rejection::BytesRejection},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use kvs_plugin_api::{
    Change, Condition, Consistency, ErrorCode, Frontend, Outcome, PluginError, RequestContext,
    Store, Update, export_plugin,
};
use tokio::sync::Semaphore;

pub mod conditions;
mod config;
mod extract;

pub use extract::{
    ClientContext, ClientTimeout, IfMatch, IfNoneMatch, Key, ReadConsistency, WriteConditions,
};

pub use config::Config;
#[doc(hidden)]
pub mod key;

#[derive(Clone)]
struct AppState {
    store: Store,
    /// Set when `stop` begins: readiness answers 503 from then on.
    stopping: Arc<AtomicBool>,
    limiter: Arc<Semaphore>,
    /// `request_timeout_ms`; `reconfigure` may change it.
    timeout_ms: Arc<AtomicU64>,
}

impl AppState {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }
}

/// The store's error codes as HTTP statuses: the one place they are decided.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NOT_FOUND => StatusCode::NOT_FOUND,
        ErrorCode::INVALID_INPUT => StatusCode::BAD_REQUEST,
        ErrorCode::TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
        ErrorCode::PERMISSION_DENIED => StatusCode::FORBIDDEN,
        ErrorCode::STORAGE_FULL => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::DEADLINE_EXCEEDED => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// A store error as a response. A 401 says how to authenticate (RFC 6750): with
/// `error="invalid_token"` if the client presented a token the host refused. The body
/// says why; it never repeats the token. A 429 says when to retry: `Retry-After: 1`
/// (the host's buckets refill continuously, so a second is enough for a client within
/// its rate; the body says the exact wait).
fn store_error(e: PluginError, ctx: &RequestContext) -> Response {
    let mut response = error_response(status_of(e.code()), e.message());
    if e.code() == ErrorCode::RATE_LIMITED {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    if e.code() == ErrorCode::UNAUTHENTICATED {
        let challenge = if ctx.bearer_token.is_some() {
            r#"Bearer realm="kvs", error="invalid_token""#
        } else {
            r#"Bearer realm="kvs""#
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
    }
    response
}

async fn get_key(
    State(state): State<AppState>,
    Key(key): Key,
    ClientContext(ctx): ClientContext,
    ReadConsistency(consistency): ReadConsistency,
    IfMatch(if_match): IfMatch,
    IfNoneMatch(if_none_match): IfNoneMatch,
    ClientTimeout(asked): ClientTimeout,
) -> Response {
    let result = if consistency == Consistency::LINEARIZABLE {
        // A linearizable read may wait for a quorum barrier: wait on a blocking thread,
        // not on the async workers (which also answer /healthz and /readyz), and no
        // longer than request_timeout_ms or the client's kvs-timeout-ms (the host stops
        // waiting at the deadline).
        let mut ctx = ctx.clone();
        let timeout = asked.map_or(state.timeout(), |t| t.min(state.timeout()));
        ctx.deadline = Some(ctx.deadline.map_or(timeout, |d| d.min(timeout)));
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.get_entry_with(&ctx, &key, consistency))
            .await
        {
            Ok(result) => result,
            Err(e) => Err(PluginError::internal(format!("the read failed: {e}"))),
        }
    } else {
        state.store.get_entry_with(&ctx, &key, consistency)
    };
    match result {
        // RFC 9110 13.1.1: a failed If-Match is answered 412, whatever else was asked
        // (a missing key matches no tag, and not `*`).
        Ok(ref entry)
            if if_match.as_ref().is_some_and(|tags| {
                !conditions::matches(tags, entry.as_ref().map(|e| e.revision))
            }) =>
        {
            error_response(
                StatusCode::PRECONDITION_FAILED,
                "If-Match: the key is not at that revision",
            )
        }
        Ok(Some(entry))
            if if_none_match
                .as_ref()
                .is_some_and(|tags| conditions::not_modified(tags, entry.revision)) =>
        {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            response
                .headers_mut()
                .insert(header::ETAG, conditions::etag(entry.revision));
            response
        }
        Ok(Some(entry)) => {
            let mut response = Response::new(axum::body::Body::from(entry.value));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::ETAG, conditions::etag(entry.revision));
            if let Some(at) = entry.expires_at {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                headers.insert(
                    conditions::TTL_HEADER,
                    header::HeaderValue::from(at.saturating_sub(now)),
                );
            }
            response
        }
        Ok(None) => error_response(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => store_error(e, &ctx),
    }
}

async fn put_key(
    State(state): State<AppState>,
    Key(key): Key,
    ClientContext(ctx): ClientContext,
    WriteConditions(conditional): WriteConditions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let conditional = match conditional {
        Ok(conditional) => conditional,
        Err(why) => return error_response(StatusCode::BAD_REQUEST, &why),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let max = state.store.limits().max_value_bytes;
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("value is larger than the limit of {max} bytes"),
            );
        }
        Err(rejection) => return error_response(rejection.status(), &rejection.body_text()),
    };
    let Some(conditional) = conditional else {
        return match state.store.put_with(&ctx, key, body.to_vec()).await {
            Ok(()) => StatusCode::CREATED.into_response(),
            Err(e) => store_error(e, &ctx),
        };
    };
    let update = Update::new(key, Change::Put(body.to_vec()))
        .when(conditional.condition)
        .expiring(conditional.expiry);
    let outcome = state.store.update_with(&ctx, &update).await;
    updated(outcome, StatusCode::CREATED, &ctx)
}

/// A conditional write's answer: `status` with the new entity tag, or 412 with the
/// current one (if the key exists) when its precondition failed.
fn updated(
    outcome: Result<Outcome, PluginError>,
    status: StatusCode,
    ctx: &RequestContext,
) -> Response {
    match outcome {
        Ok(outcome) => {
            let mut response = if outcome.applied {
                status.into_response()
            } else {
                error_response(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition failed: the key changed (or does or does not exist); read it \
                     again and retry",
                )
            };
            if outcome.revision != 0 {
                response
                    .headers_mut()
                    .insert(header::ETAG, conditions::etag(outcome.revision));
            }
            response
        }
        Err(e) => store_error(e, ctx),
    }
}

async fn delete_key(
    State(state): State<AppState>,
    Key(key): Key,
    ClientContext(ctx): ClientContext,
    WriteConditions(conditional): WriteConditions,
) -> Response {
    match conditional {
        Err(why) => return error_response(StatusCode::BAD_REQUEST, &why),
        Ok(Some(conditional)) => {
            let absent_asked = conditional.condition == Condition::Absent;
            let update = Update::new(key, Change::Delete).when(conditional.condition);
            let outcome = state.store.update_with(&ctx, &update).await.map(|mut o| {
                // `If-None-Match: *` holds for a missing key: the delete succeeds (there
                // was nothing to remove), as a plain delete of a missing key does.
                if absent_asked && o.revision == 0 {
                    o.applied = true;
                }
                o
            });
            return updated(outcome, StatusCode::OK, &ctx);
        }
        Ok(None) => {}
    }
    match state.store.delete_with(&ctx, key).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => store_error(e, &ctx),
    }
}

async fn empty_key() -> Response {
    error_response(StatusCode::BAD_REQUEST, "empty key")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.is_ready() && !state.stopping.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        error_response(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Caps concurrent requests (excess ones wait) and answers 504 past the deadline: the
/// sooner of `request_timeout_ms` and the client's `kvs-timeout-ms` header. The
/// deadline also goes to the store with each call (`extract::Deadline`), so a write
/// still queued when it passes is never made.
async fn limit_and_time(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let timeout = match extract::client_timeout(req.headers()) {
        Ok(Some(asked)) => asked.min(state.timeout()),
        Ok(None) => state.timeout(),
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    req.extensions_mut()
        .insert(extract::Deadline(deadline.into_std()));
    let _permit =
        match tokio::time::timeout_at(deadline, state.limiter.clone().acquire_owned()).await {
            Err(_) => return timed_out(),
            Ok(Err(_)) => return error_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Ok(Ok(permit)) => permit,
        };
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => timed_out(),
    }
}

/// The 504 of a request past its deadline.
fn timed_out() -> Response {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "request timed out (request_timeout_ms or kvs-timeout-ms): a write still queued \
         at the deadline is never made; one the logger had begun may have been",
    )
}

/// The HTTP application, without a listener (tests and the plug-in both use it).
fn app(state: AppState) -> Router {
    let max_body = usize::try_from(state.store.limits().max_value_bytes).unwrap_or(usize::MAX);
    // Writes wait for the writer, so they take a concurrency permit and a deadline; a
    // body over the value limit is refused with 413 as soon as its length is known,
    // without buffering it. A GET is answered within one poll (the store read never
    // awaits), so a permit or a deadline could never act on it: reads skip both, and
    // the allocations and timer they cost per request.
    let writes = put(put_key)
        .delete(delete_key)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit_and_time,
        ))
        .route_layer(DefaultBodyLimit::max(max_body));
    let key_routes = get(get_key).merge(writes);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/key/{*key}", key_routes.clone())
        .route("/v1/{*key}", key_routes)
        .route("/v1/key/", get(empty_key).put(empty_key).delete(empty_key))
        .route("/v1/", get(empty_key).put(empty_key).delete(empty_key))
        .with_state(state)
}

/// A running REST frontend.
pub struct RestFrontend {
    server: kvs_serve::Server,
    tls: bool,
    /// The table it serves with, to tell what a new one changes.
    config: Config,
    limiter: Arc<Semaphore>,
    timeout_ms: Arc<AtomicU64>,
}

impl RestFrontend {
    /// Binds the listener and starts serving `store`.
    pub fn start(store: Store, config: Config) -> Result<RestFrontend, PluginError> {
        let settings = kvs_serve::Settings {
            listen: &config.listen,
            table: "[plugins.rest]",
            worker_threads: config.worker_threads,
            max_blocking_threads: None,
            thread_name: "kvs-rest",
            protocol: "HTTP",
            tls: config.tls.as_ref(),
            alpn: kvs_serve::Settings::HTTP_ALPN,
            max_connections: config.max_connections,
            max_connections_per_peer: config.max_connections_per_peer,
            descriptor_reserve: true,
            max_header_bytes: config.max_header_bytes,
            deadlines: kvs_serve::Deadlines::from_ms(
                config.handshake_timeout_ms,
                config.idle_timeout_ms,
                "[plugins.rest]",
            )?,
            log: kvs_serve::plugin_log,
        };
        let limiter = Arc::new(Semaphore::new(config.max_concurrent_requests));
        let timeout_ms = Arc::new(AtomicU64::new(config.request_timeout_ms));
        let server = kvs_serve::Server::start(&settings, |stopping| {
            app(AppState {
                store,
                stopping,
                limiter: limiter.clone(),
                timeout_ms: timeout_ms.clone(),
            })
        })?;
        Ok(RestFrontend {
            server,
            tls: config.tls.is_some(),
            config,
            limiter,
            timeout_ms,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

impl Frontend for RestFrontend {
    fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        vec![format!("{scheme}://{}", self.local_addr())]
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        // Graceful shutdown stops accepting at once and waits for open connections'
        // in-flight requests; give it until the deadline.
        self.server.stop(deadline)
    }

    /// `request_timeout_ms` and `max_concurrent_requests` change while serving; any
    /// other key needs a new listener, which the host starts (`None`).
    fn reconfigure(&mut self, config: &str) -> Option<Result<(), PluginError>> {
        let next = match Config::parse(config) {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        let listener = |c: &Config| {
            format!(
                "{:?}",
                Config {
                    request_timeout_ms: 0,
                    max_concurrent_requests: 0,
                    ..c.clone()
                }
            )
        };
        if listener(&next) != listener(&self.config) {
            return None;
        }
        self.timeout_ms
            .store(next.request_timeout_ms, Ordering::Relaxed);
        let (was, now) = (
            self.config.max_concurrent_requests,
            next.max_concurrent_requests,
        );
        if now > was {
            self.limiter.add_permits(now - was);
        } else if now < was {
            // Taken back as requests finish: those in flight are not cut short.
            let (limiter, fewer) = (self.limiter.clone(), (was - now) as u32);
            if let Some(runtime) = self.server.handle() {
                runtime.spawn(async move {
                    if let Ok(permits) = limiter.acquire_many(fewer).await {
                        permits.forget();
                    }
                });
            }
        }
        self.config = next;
        Some(Ok(()))
    }
}

fn start(store: Store, config: &str) -> Result<RestFrontend, PluginError> {
    RestFrontend::start(store, Config::parse(config)?)
}

export_plugin!(
    frontend: start,
    name: "rest",
    description: "the book's REST API (PUT/GET/DELETE /v1/key/{key}) with /healthz and /readyz",
    capabilities: ["protocol:kvs-rest"]
);
