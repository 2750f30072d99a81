//! A `.wasm` HTTP frontend: the host's own listener, a pool of instances, the edge that
//! hands each request to `kvs_http_handle` with the client's context.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::direct::Instance;
use arc_swap::ArcSwap;
use kvs_plugin_api::wire;
use kvs_plugin_api::{ErrorCode, PluginError, RequestContext};

use crate::plugins::Format;
use crate::ports::RunningFrontend;
use crate::store::Store;

use super::host_fns::{CALL_CONTEXT, CallContext, Deferred, GuestStore};
use super::module::{CallError, Compiled, Source, call, compile, instance, metered_call};

/// The optional export that takes a WASM HTTP frontend's config table (1.2).
const CONFIGURE: &str = "kvs_http_configure";
use super::sandbox::{Sandbox, refuse_guest_keys};

mod answer;
use answer::{http_answer, text, timed_out};

/// Instances for a frontend: each serves one call at a time; a failed one is dropped.
struct Pool {
    compiled: Compiled,
    /// The guest's config table, for guests that take one (`kvs_http_configure`, 1.2):
    /// each new instance is configured before it serves.
    config: Option<String>,
    meter: Arc<crate::metrics::WasmMeter>,
    /// What one call may keep queued (`call_max_writes`, `call_max_write_mb`).
    write_limits: super::host_fns::WriteLimits,
    idle: Mutex<Vec<Instance>>,
    permits: tokio::sync::Semaphore,
    /// `request_timeout_ms`.
    request_timeout: Duration,
}

impl Pool {
    /// A new instance, configured if the guest takes a config.
    fn fresh(&self) -> Result<Instance, CallError> {
        let mut plugin = instance(&self.compiled).map_err(CallError::Trapped)?;
        if let Some(table) = &self.config {
            call(&mut plugin, CONFIGURE, table.as_bytes())?;
        }
        Ok(plugin)
    }

    /// Runs `kvs_http_handle` on an idle instance. Returns the guest's answer and the
    /// writes it queued, which must be settled before the answer is sent.
    fn handle(
        &self,
        request: &[u8],
        context: CallContext,
    ) -> (Result<Vec<u8>, CallError>, Deferred) {
        let popped = self.idle.lock().unwrap().pop();
        let mut plugin = match popped.map_or_else(|| self.fresh(), Ok) {
            Ok(p) => p,
            Err(e) => return (Err(e), Deferred::default()),
        };
        CALL_CONTEXT.set(Some(context));
        let result = metered_call(&mut plugin, "kvs_http_handle", request, Some(&self.meter));
        let deferred = CALL_CONTEXT.take().map(|c| c.deferred).unwrap_or_default();
        let result = match result {
            Ok(out) => {
                self.idle.lock().unwrap().push(plugin);
                Ok(out)
            }
            Err(CallError::Guest(e)) => {
                self.idle.lock().unwrap().push(plugin);
                Err(CallError::Guest(e))
            }
            // A trapped or timed-out instance is dropped here; the next call gets a
            // fresh one.
            Err(failed) => Err(failed),
        };
        (result, deferred)
    }
}

struct WasmHttpFrontend {
    /// The pool requests go to; a swap replaces it under the listener.
    pool: Arc<ArcSwap<Pool>>,
    /// Pools swapped out that requests may still hold: a stop refuses their waiters too.
    retired: Vec<std::sync::Weak<Pool>>,
    server: kvs_serve::Server,
    tls: bool,
    name: String,
    store: Arc<Store>,
    /// What the listener was started with: a new table that differs here needs a new
    /// listener (the host's replacement), not a swap under this one.
    listener: String,
}

#[derive(Clone)]
struct Edge {
    /// The frontend's declared name.
    name: Arc<str>,
    store: Arc<Store>,
    /// The pool of the module in use; a request keeps the one it began with.
    pool: Arc<ArcSwap<Pool>>,
    stopping: Arc<AtomicBool>,
    /// Where this frontend's requests are counted.
    meter: Arc<crate::metrics::FrontendMeter>,
}

/// The host answers the probes itself: they must work while every instance is busy.
fn probe(edge: &Edge, path: &str) -> Option<axum::response::Response> {
    match path {
        "/healthz" => Some(text(200, "ok".into())),
        "/readyz" => Some(
            if edge.store.is_ready() && !edge.stopping.load(Ordering::Acquire) {
                text(200, "ready".into())
            } else {
                text(503, "not ready".into())
            },
        ),
        _ => None,
    }
}

/// What the client presented, as the native `rest` frontend reads it: the host carries
/// it to the store for the guest (see `CallContext`).
fn presented(request: &axum::extract::Request, peer: &kvs_serve::Peer) -> RequestContext {
    let mut context = RequestContext::from_headers(
        request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    );
    context.peer = Some(String::from(&*peer.text));
    context.client_identity = peer.identity.as_deref().map(String::from);
    context
}

/// The request as the guest reads it, once its body has arrived (by `deadline`, within
/// the value limit).
async fn guest_request(
    edge: &Edge,
    request: axum::extract::Request,
    path: String,
    deadline: tokio::time::Instant,
    context: &RequestContext,
) -> Result<Vec<u8>, axum::response::Response> {
    let (parts, body) = request.into_parts();
    let limit = usize::try_from(edge.store.limits().max_value_bytes).unwrap_or(usize::MAX);
    let body = axum::body::to_bytes(body, limit);
    let body = match tokio::time::timeout_at(deadline, body).await {
        Err(_) => return Err(timed_out()),
        Ok(Ok(b)) => b,
        // Over the limit is 413, as `rest` answers; anything else (a malformed
        // chunked encoding, a connection cut mid-body) is the client's 400.
        Ok(Err(e)) if over_limit(&e) => {
            return Err(text(
                413,
                format!("value is larger than the limit of {limit} bytes"),
            ));
        }
        Ok(Err(e)) => return Err(text(400, format!("cannot read the request body: {e}"))),
    };
    // Encoded straight from what hyper parsed, in one buffer.
    Ok(wire::encode_request(
        parts.method.as_str(),
        &path,
        || {
            parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
        },
        &body,
        context,
    ))
}

/// Whether reading a body failed because it passed the length limit (`to_bytes`'s
/// `Limited`), rather than because the body itself was bad.
fn over_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

async fn edge(
    axum::extract::State(edge): axum::extract::State<Edge>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<kvs_serve::Peer>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    if let Some(answer) = probe(&edge, &path) {
        return answer;
    }
    let received = Instant::now();
    // The module in use when the request arrived serves all of it, even if a swap
    // puts another in place meanwhile.
    let pool = edge.pool.load_full();
    let context = presented(&request, &peer);
    let presented_token = context.bearer_token.is_some();
    // The request deadline, as `rest` applies it: a body that trickles in (or never
    // comes) is answered 504 once `request_timeout_ms` has passed, rather than holding
    // the connection open for as long as the client likes.
    let deadline = tokio::time::Instant::from_std(received) + pool.request_timeout;
    let encoded = match guest_request(&edge, request, path, deadline, &context).await {
        Ok(encoded) => encoded,
        Err(answer) => return answer,
    };
    // The request's span: the guest's store calls are its children.
    let span = crate::telemetry::frontend_span(
        &crate::caller::Caller::from_context(&edge.name, &context, received),
        "request",
    );
    let call_context = CallContext {
        frontend: edge.name.clone(),
        meter: edge.meter.clone(),
        context: Box::new(context),
        received,
        deferred: Deferred::new(pool.write_limits),
    };
    let permit = match tokio::time::timeout_at(deadline, pool.permits.acquire()).await {
        Err(_) => return timed_out(),
        Ok(Err(_)) => return text(503, "shutting down".into()),
        Ok(Ok(permit)) => permit,
    };
    // The guest call runs right here on the async worker: a typical call takes a few
    // microseconds, far less than handing it to another thread would cost. A call that
    // turns out long (`LONG_CALL`) hands the worker's other tasks to another thread
    // first, so nothing else waits behind it. Its writes are deferred: queued, not
    // waited for, so the instance is free for the next request during the fsync.
    let (response, deferred) = span.in_scope(|| pool.handle(&encoded, call_context));
    drop(permit);
    // The guest's answer may acknowledge its writes: it is sent only once they are
    // durable, and replaced by the failure if one was not.
    if let Err(e) = deferred.settle().await {
        let status = match e.code() {
            ErrorCode::UNAVAILABLE => 503,
            ErrorCode::DEADLINE_EXCEEDED => 504,
            ErrorCode::STORAGE_FULL => 507,
            _ => 500,
        };
        return text(
            status,
            format!("the write was not made durable: {}", e.message()),
        );
    }
    http_answer(response, presented_token)
}

impl RunningFrontend for WasmHttpFrontend {
    fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        vec![format!("{scheme}://{}", self.server.local_addr())]
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        self.server.begin_stopping();
        // Requests still waiting for an instance are answered 503 at once instead of
        // being served during the drain, whichever module they began with.
        self.pool.load().permits.close();
        for old in self.retired.iter().filter_map(std::sync::Weak::upgrade) {
            old.permits.close();
        }
        self.server.stop(deadline)
    }

    /// Swaps the module (or its table) under the listener: requests that began keep
    /// the old pool until they finish, new ones go to the new pool. `None` when the
    /// listener itself would change (another address, TLS, caps): the host replaces
    /// the whole frontend then.
    fn swap_in_place(
        &mut self,
        plugin: &crate::plugins::Plugin,
        table: &str,
    ) -> Option<Result<(), PluginError>> {
        let (sandbox, guest_config) = match Sandbox::split(table) {
            Ok(split) => split,
            Err(e) => return Some(Err(e)),
        };
        let stream =
            (plugin.capabilities.iter()).any(|c| c == kvs_plugin_api::capability::FRONTEND_STREAM);
        if listener_settings(&sandbox) != self.listener || plugin.format != Format::Wasm || stream {
            return None;
        }
        Some(
            new_pool(
                plugin.wasm_source(),
                &self.name,
                &self.store,
                plugin.api.1,
                &sandbox,
                guest_config,
            )
            .map(|pool| {
                let old = self.pool.swap(Arc::new(pool));
                self.retired.retain(|w| w.strong_count() > 0);
                self.retired.push(Arc::downgrade(&old));
            }),
        )
    }
}

/// The settings the listener is started with, to compare a new table's against.
fn listener_settings(sandbox: &Sandbox) -> String {
    format!(
        "{:?}",
        (
            &sandbox.listen,
            sandbox.worker_threads,
            &sandbox.tls,
            sandbox.max_connections,
            sandbox.max_connections_per_peer,
            sandbox.max_header_bytes,
            sandbox.handshake_timeout_ms,
            sandbox.idle_timeout_ms,
            sandbox.pool_size,
        )
    )
}

/// Compiles the module and makes its pool, with one instance started (and
/// configured, if it takes a config) so that a guest that cannot start fails here.
fn new_pool(
    module: Source<'_>,
    name: &str,
    store: &Arc<Store>,
    minor: u16,
    sandbox: &Sandbox,
    guest_config: String,
) -> Result<Pool, PluginError> {
    // At most `pool_size` instances ever exist (one per permit): their memory must fit.
    let reserved = u64::from(sandbox.memory_max_mb) * sandbox.pool_size as u64;
    if reserved > u64::from(sandbox.memory_budget_mb) {
        return Err(PluginError::invalid_input(format!(
            "[plugins.{name}]: pool_size = {} instances of memory_max_mb = {} is {reserved} MiB, \
             over memory_budget_mb = {}: lower pool_size or memory_max_mb, or raise the budget",
            sandbox.pool_size, sandbox.memory_max_mb, sandbox.memory_budget_mb
        )));
    }
    let compiled = compile(module, name, sandbox, GuestStore::new(store, minor))
        .map_err(PluginError::internal)?;
    // One instance now: it tells whether the guest takes a config, and a bad config
    // (or a guest that cannot start) fails here rather than at a request.
    let mut first = instance(&compiled)?;
    let config = if first.function_exists(CONFIGURE) {
        call(&mut first, CONFIGURE, guest_config.as_bytes()).map_err(|e| {
            let e = e.into_error();
            PluginError::new(e.code(), format!("[plugins.{name}]: {}", e.message()))
        })?;
        Some(guest_config)
    } else {
        refuse_guest_keys(
            name,
            &guest_config,
            "a WASM HTTP frontend that exports no kvs_http_configure",
        )?;
        None
    };
    Ok(Pool {
        permits: tokio::sync::Semaphore::new(sandbox.pool_size),
        idle: Mutex::new(vec![first]),
        compiled,
        config,
        meter: store.metrics().wasm(name),
        write_limits: sandbox.write_limits(),
        request_timeout: Duration::from_millis(sandbox.request_timeout_ms),
    })
}

/// Starts a `.wasm` HTTP frontend: the host listens and calls the guest per request.
/// `minor` is the guest's plugin-api minor.
pub fn start_frontend<'a>(
    module: impl Into<Source<'a>>,
    name: &str,
    store: &Arc<Store>,
    minor: u16,
    table: &str,
) -> Result<Box<dyn RunningFrontend>, PluginError> {
    let (sandbox, guest_config) = Sandbox::split(table)?;
    let pool = Arc::new(ArcSwap::from_pointee(new_pool(
        module.into(),
        name,
        store,
        minor,
        &sandbox,
        guest_config,
    )?));
    let table_name = format!("[plugins.{name}]");
    let settings = kvs_serve::Settings {
        listen: &sandbox.listen,
        table: &table_name,
        worker_threads: sandbox.worker_threads,
        max_blocking_threads: Some(sandbox.pool_size.max(1) * 2),
        thread_name: "kvs-wasm-http",
        protocol: "HTTP",
        tls: sandbox.tls.as_ref(),
        alpn: kvs_serve::Settings::HTTP_ALPN,
        max_connections_per_peer: sandbox.max_connections_per_peer,
        descriptor_reserve: true,
        max_connections: sandbox
            .max_connections
            .unwrap_or(kvs_serve::DEFAULT_MAX_CONNECTIONS),
        max_header_bytes: sandbox.max_header_bytes,
        deadlines: kvs_serve::Deadlines::from_ms(
            sandbox.handshake_timeout_ms,
            sandbox.idle_timeout_ms,
            &table_name,
        )?,
        log: crate::telemetry::listener_log,
    };
    let server = kvs_serve::Server::start(&settings, |stopping| {
        axum::Router::new().fallback(edge).with_state(Edge {
            name: name.into(),
            store: store.clone(),
            pool: pool.clone(),
            stopping,
            meter: store.metrics().frontend(name),
        })
    })?;
    Ok(Box::new(WasmHttpFrontend {
        pool,
        retired: Vec::new(),
        server,
        tls: sandbox.tls.is_some(),
        name: name.to_string(),
        store: store.clone(),
        listener: listener_settings(&sandbox),
    }))
}
