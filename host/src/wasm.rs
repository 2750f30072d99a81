//! WASM plug-ins: `.wasm` Extism guests behind the same ports as native plug-ins.
//!
//! * [`handshake`]: instantiate with default limits, call `kvs_handshake`, check the
//!   version with the same rule and messages as native plug-ins.
//! * [`open_logger`]: a `WasmLogger` — one instance, reopened after a trap — wrapped as
//!   a `LoggerBox`, so the writer cannot tell it from a native logger.
//! * [`start_frontend`]: the host owns the listener (the sandbox has no sockets): an
//!   axum server that answers `/healthz` and `/readyz` itself and hands every other
//!   request to `kvs_http_handle` on an instance from a pool. An instance serves one
//!   call at a time; one that traps or times out is dropped, never reused. Calls run on
//!   the server's async workers; a long one, or a durable write, hands its worker's
//!   other tasks to another thread (`hand_off_worker`, `wait_write`).
//!
//! Every instance gets a memory cap and a per-call timeout; WASI without network, and
//! no file system unless the operator grants `data_dir`, mounted at `/data`. Those
//! sandbox settings are keys of the plug-in's own table that the host takes out before
//! handing the rest to the guest.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RString, RVec},
};
use extism::{CurrentPlugin, Function, Manifest, PTR, Plugin, PluginBuilder, UserData, Val, Wasm};
use kvs_plugin_api::native::{
    FrontendApi, FrontendApi_TO, FrontendBox, HealthProbeBox, LoggerApi, LoggerApi_TO, LoggerBox,
    ReplaySinkMut,
};
use kvs_plugin_api::version::check_compatible;
use kvs_plugin_api::wire::{self, Reader, Writer};
use kvs_plugin_api::{
    API_MAJOR, API_MINOR, ErrorCode, Event, PluginError, PluginKind, RequestContext,
};
use serde::Deserialize;

use crate::caller::Caller;
use crate::store::Store;
use crate::writer::Completion;

/// The request a guest call on this thread is serving: the frontend's name, what the
/// client presented, when it arrived. Set around each `kvs_http_handle` call (a call
/// runs start to end on one thread), read by the store host functions, so a guest's
/// store calls carry its client's context without the guest having to (or being able
/// to) supply it.
struct CallContext {
    frontend: Arc<str>,
    context: RequestContext,
    received: Instant,
}

thread_local! {
    static CALL_CONTEXT: RefCell<Option<CallContext>> = const { RefCell::new(None) };
}

/// The store the host functions reach: a frontend's store, or none (handshake, loggers).
type StoreRef = Option<Arc<Store>>;

/// Sandbox settings: the host's keys in a WASM plug-in's table.
#[derive(Debug, Clone, Deserialize)]
pub struct Sandbox {
    /// A directory the guest may use, mounted at `/data`. None: no file system at all.
    pub data_dir: Option<PathBuf>,
    /// Memory cap per instance, MiB. Default 64.
    #[serde(default = "default_memory")]
    pub memory_max_mb: u32,
    /// Longest a single call may run. Default 5000.
    #[serde(default = "default_timeout")]
    pub call_timeout_ms: u64,
    /// Instances serving a frontend concurrently. Default 4.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Where the host listens for a WASM HTTP frontend. Default `127.0.0.1:8081`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Async worker threads of a WASM HTTP frontend's server. Default 2.
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
}

fn default_memory() -> u32 {
    64
}
fn default_timeout() -> u64 {
    5000
}
fn default_pool() -> usize {
    4
}
fn default_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_workers() -> usize {
    2
}

const SANDBOX_KEYS: [&str; 6] = [
    "data_dir",
    "memory_max_mb",
    "call_timeout_ms",
    "pool_size",
    "listen",
    "worker_threads",
];

impl Sandbox {
    /// Splits a plug-in table into the host's sandbox settings and the guest's config.
    pub fn split(table: &str) -> Result<(Sandbox, String), PluginError> {
        let mut all: toml::Table =
            toml::from_str(table).map_err(|e| PluginError::invalid_input(e.to_string()))?;
        let mut ours = toml::Table::new();
        for key in SANDBOX_KEYS {
            if let Some(v) = all.remove(key) {
                ours.insert(key.into(), v);
            }
        }
        let sandbox: Sandbox = ours.try_into().map_err(|e: toml::de::Error| {
            PluginError::invalid_input(format!("sandbox settings: {e}"))
        })?;
        if sandbox.pool_size == 0
            || sandbox.memory_max_mb == 0
            || sandbox.call_timeout_ms == 0
            || sandbox.worker_threads == 0
        {
            return Err(PluginError::invalid_input(
                "pool_size, memory_max_mb, call_timeout_ms and worker_threads must be at least 1",
            ));
        }
        let guest = toml::to_string(&all).map_err(|e| PluginError::internal(e.to_string()))?;
        Ok((sandbox, guest))
    }

    fn default_for_handshake() -> Sandbox {
        Sandbox {
            data_dir: None,
            memory_max_mb: 64,
            call_timeout_ms: 5000,
            pool_size: 1,
            listen: default_listen(),
            worker_threads: 1,
        }
    }
}

/// A guest call running this long is no longer treated as quick: if it runs on an async
/// worker, the worker's other tasks move to another thread (extism checks on its 10 ms
/// ticks, so that happens within about 12 ms). Typical calls take microseconds.
const LONG_CALL: Duration = Duration::from_millis(2);

/// Called (by extism, on the calling thread) once a guest call has run for `LONG_CALL`.
/// If that thread is an async worker, its other tasks move to a new worker thread for
/// the rest of the call. `block_in_place` alone would not do: it takes its worker back
/// when its closure returns if the new thread has not yet started, so the closure waits
/// until a task spawned from here (queued on this worker) has run elsewhere.
fn hand_off_worker() {
    if !in_multi_thread_runtime() {
        return;
    }
    let (moved, has_moved) = std::sync::mpsc::sync_channel(1);
    tokio::runtime::Handle::current().spawn(async move {
        let _ = moved.send(());
    });
    tokio::task::block_in_place(|| {
        let _ = has_moved.recv_timeout(Duration::from_millis(100));
    });
}

/// A module compiled once with its sandbox and host functions; instances come from it.
struct Compiled {
    compiled: extism::CompiledPlugin,
}

fn compile(
    path: &Path,
    name: &str,
    sandbox: &Sandbox,
    store: StoreRef,
) -> Result<Compiled, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut manifest = Manifest::new([Wasm::data(bytes)])
        .with_memory_max(sandbox.memory_max_mb.saturating_mul(16)) // 64 KiB pages
        .with_timeout(Duration::from_millis(sandbox.call_timeout_ms));
    if let Some(dir) = &sandbox.data_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("data_dir {}: {e}", dir.display()))?;
        manifest = manifest.with_allowed_path(dir.display().to_string(), "/data");
    }
    let functions = [
        Function::new(
            "kvs_get",
            [PTR],
            [PTR],
            UserData::new(store.clone()),
            host_get,
        ),
        Function::new(
            "kvs_put",
            [PTR],
            [PTR],
            UserData::new(store.clone()),
            host_put,
        ),
        Function::new(
            "kvs_delete",
            [PTR],
            [PTR],
            UserData::new(store.clone()),
            host_delete,
        ),
        Function::new(
            "kvs_log",
            [PTR],
            [],
            UserData::new(name.to_string()),
            host_log,
        ),
    ];
    let builder = PluginBuilder::new(manifest)
        .with_wasi(true)
        .with_functions(functions)
        .with_long_call_hook(LONG_CALL, hand_off_worker);
    let compiled = extism::CompiledPlugin::new(builder).map_err(|e| {
        format!(
            "not a loadable WebAssembly module: {}",
            first_line(&e.to_string())
        )
    })?;
    Ok(Compiled { compiled })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn instance(c: &Compiled) -> Result<Plugin, PluginError> {
    Plugin::new_from_compiled(&c.compiled).map_err(|e| {
        PluginError::internal(format!(
            "cannot instantiate: {}",
            first_line(&e.to_string())
        ))
    })
}

/// Calls an export and unwraps its result frame. A trap, a timeout or a memory-cap
/// violation comes back as `Err(Trapped)`: the instance must not be used again.
enum CallError {
    /// The guest answered with an error frame; the instance is fine.
    Guest(PluginError),
    /// The call trapped or ran out of memory; the instance must be dropped.
    Trapped(PluginError),
    /// The call ran past `call_timeout_ms`; the instance must be dropped.
    TimedOut(PluginError),
}

impl CallError {
    fn into_error(self) -> PluginError {
        match self {
            CallError::Guest(e) | CallError::Trapped(e) | CallError::TimedOut(e) => e,
        }
    }
}

fn call(plugin: &mut Plugin, func: &str, input: &[u8]) -> Result<Vec<u8>, CallError> {
    let out = plugin.call::<&[u8], Vec<u8>>(func, input).map_err(|e| {
        // The root cause says what happened ("wasm trap: ...", "timeout", "oom").
        let why = first_line(&e.root_cause().to_string());
        tracing::warn!("WASM call {func} failed ({why}); the instance is discarded");
        let message = format!("WASM call {func} failed: {why}");
        // extism reports an expired call timeout as a root cause of exactly "timeout".
        if why == "timeout" {
            CallError::TimedOut(PluginError::unavailable(message))
        } else {
            CallError::Trapped(PluginError::internal(message))
        }
    })?;
    match wire::result(&out) {
        Ok(Ok(payload)) => Ok(payload.to_vec()),
        Ok(Err((code, message))) => Err(CallError::Guest(PluginError::new(code, message))),
        Err(e) => Err(CallError::Guest(PluginError::internal(format!(
            "{func}: {e}"
        )))),
    }
}

/// The handshake of a `.wasm` file, or why it is refused.
pub fn handshake(path: &Path) -> Result<wire::Handshake, String> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
    let compiled = compile(path, name, &Sandbox::default_for_handshake(), None)?;
    let mut plugin = Plugin::new_from_compiled(&compiled.compiled).map_err(|e| {
        let why = first_line(&e.to_string());
        if why.contains("unknown import") && why.contains("extism:host/user") {
            format!(
                "cannot instantiate: {why}: it needs a host function this kvs (plugin-api \
                 {API_MAJOR}.{API_MINOR}) does not have; it was probably built against a newer \
                 plugin-api: upgrade kvs, or rebuild it against plugin-api {API_MAJOR}.{API_MINOR}"
            )
        } else {
            format!("cannot instantiate: {why}")
        }
    })?;
    if !plugin.function_exists("kvs_handshake") {
        return Err(
            "not a kvs plug-in: it has no kvs_handshake export (WASM plug-ins declare one \
                    with kvs_plugin_api's export_wasm_logger! or export_wasm_http_frontend!)"
                .into(),
        );
    }
    let out = plugin
        .call::<&[u8], Vec<u8>>("kvs_handshake", &[])
        .map_err(|e| format!("kvs_handshake failed: {}", first_line(&e.to_string())))?;
    let api =
        wire::Handshake::decode_version(&out).map_err(|e| format!("not a kvs plug-in: {e}"))?;
    check_compatible(api, (API_MAJOR, API_MINOR)).map_err(|e| e.to_string())?;
    let h = wire::Handshake::decode(&out).map_err(|e| format!("bad handshake: {e}"))?;
    if h.kind != PluginKind::LOGGER && h.kind != PluginKind::FRONTEND {
        return Err(format!("unknown plug-in kind {}", h.kind.0));
    }
    if h.kind == PluginKind::FRONTEND && !h.capabilities.iter().any(|c| c == "frontend:http") {
        return Err("a WASM frontend must declare the frontend:http capability (the only mode this kvs serves)".into());
    }
    kvs_plugin_api::handshake::validate_name(&h.name)?;
    Ok(h)
}

// ---------------------------------------------------------------- host functions

fn with_store(
    plugin: &mut CurrentPlugin,
    inputs: &[Val],
    outputs: &mut [Val],
    store: &UserData<StoreRef>,
    op: impl FnOnce(&Store, &Caller<'_>, &mut Reader<'_>) -> Result<Vec<u8>, PluginError>,
) -> Result<(), extism::Error> {
    let input: Vec<u8> = plugin.memory_get_val(&inputs[0])?;
    let store = store.get()?.lock().unwrap().clone();
    let reply = CALL_CONTEXT.with_borrow(|call| match (store, call) {
        (Some(store), Some(call)) => {
            let caller = Caller::from_context(&call.frontend, &call.context, call.received);
            match op(&store, &caller, &mut Reader::new(&input)) {
                Ok(payload) => wire::ok(&payload),
                Err(e) => wire::err(e.code(), e.message()),
            }
        }
        _ => wire::err(
            ErrorCode::UNAVAILABLE,
            "no store: the store is reached only while a frontend serves a request",
        ),
    });
    plugin.memory_set_val(&mut outputs[0], reply)
}

/// `kvs_log`: a guest's log message, emitted like a native plug-in's.
fn host_log(
    plugin: &mut CurrentPlugin,
    inputs: &[Val],
    _outputs: &mut [Val],
    name: UserData<String>,
) -> Result<(), extism::Error> {
    let input: Vec<u8> = plugin.memory_get_val(&inputs[0])?;
    let name = name.get()?.lock().unwrap().clone();
    match wire::LogRecord::decode(&input) {
        Ok(r) => {
            let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            crate::handles::plugin_event(&name, r.level, &r.target, &r.message, &fields.join(" "));
        }
        Err(e) => tracing::warn!(plugin = name, "malformed kvs_log message: {e}"),
    }
    Ok(())
}

fn bad(e: wire::WireError) -> PluginError {
    PluginError::invalid_input(e.to_string())
}

/// Whether `block_in_place` may be called here: inside a multi-threaded tokio runtime
/// (where it hands the worker's other tasks to another thread, or does nothing on a
/// thread that is not a worker). Outside one, or in a current-thread runtime, it must not.
fn in_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Blocks until the write is durable. Guest calls run on the frontend's async workers,
/// so the wait is announced with `block_in_place` (tokio moves the worker's other tasks
/// elsewhere); reads never pay for that hand-off.
fn wait_write(submit: impl FnOnce(Completion)) -> Result<Vec<u8>, PluginError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    submit(Completion::new(move |r| {
        let _ = tx.send(r);
    }));
    let outcome = if in_multi_thread_runtime() {
        tokio::task::block_in_place(|| rx.recv())
    } else {
        rx.recv()
    };
    outcome
        .unwrap_or_else(|_| Err(PluginError::unavailable("write dropped")))
        .map(|()| Vec::new())
}

fn host_get(
    p: &mut CurrentPlugin,
    i: &[Val],
    o: &mut [Val],
    store: UserData<StoreRef>,
) -> Result<(), extism::Error> {
    with_store(p, i, o, &store, |store, caller, r| {
        let key = r.bytes().map_err(bad)?;
        let mut w = Writer::default();
        match store.get_as(caller, key)? {
            Some(v) => w.u8(1).bytes(&v),
            None => w.u8(0),
        };
        Ok(w.0)
    })
}

fn host_put(
    p: &mut CurrentPlugin,
    i: &[Val],
    o: &mut [Val],
    store: UserData<StoreRef>,
) -> Result<(), extism::Error> {
    with_store(p, i, o, &store, |store, caller, r| {
        let key = r.bytes().map_err(bad)?.to_vec();
        let value = r.bytes().map_err(bad)?.to_vec();
        wait_write(|done| store.put_as(caller, key, value, done))
    })
}

fn host_delete(
    p: &mut CurrentPlugin,
    i: &[Val],
    o: &mut [Val],
    store: UserData<StoreRef>,
) -> Result<(), extism::Error> {
    with_store(p, i, o, &store, |store, caller, r| {
        let key = r.bytes().map_err(bad)?.to_vec();
        wait_write(|done| store.delete_as(caller, key, done))
    })
}

// ---------------------------------------------------------------- logger

/// Consecutive empty non-final replay chunks after which a guest's replay is declared
/// stuck.
const MAX_EMPTY_REPLAY_CHUNKS: u32 = 1000;

/// A `.wasm` logger behind the native logger port.
struct WasmLogger {
    name: String,
    compiled: Compiled,
    guest_config: String,
    /// The one instance holding the logger's state; `None` after a trap, reopened on
    /// the next call.
    instance: Option<Plugin>,
}

impl WasmLogger {
    /// A fresh instance with the guest's `open` run on it: at start-up, and after a
    /// trap discarded the previous one.
    fn reopen(&mut self) -> Result<(), PluginError> {
        let mut fresh = instance(&self.compiled)?;
        call(&mut fresh, "kvs_logger_open", self.guest_config.as_bytes()).map_err(|e| {
            let e = e.into_error();
            PluginError::new(
                e.code(),
                format!("WASM logger {}: {}", self.name, e.message()),
            )
        })?;
        self.instance = Some(fresh);
        Ok(())
    }

    fn call(&mut self, func: &str, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        if self.instance.is_none() {
            self.reopen()?;
        }
        let plugin = self.instance.as_mut().expect("just ensured");
        match call(plugin, func, input) {
            Ok(out) => Ok(out),
            Err(CallError::Guest(e)) => Err(e),
            Err(failed) => {
                self.instance = None;
                let e = failed.into_error();
                Err(PluginError::new(
                    e.code(),
                    format!(
                        "WASM logger {}: {}; instance discarded",
                        self.name,
                        e.message()
                    ),
                ))
            }
        }
    }
}

impl LoggerApi for WasmLogger {
    fn health_probe(&self) -> ROption<HealthProbeBox> {
        ROption::RNone
    }

    fn append(&mut self, batch: RSlice<'_, Event<'_>>) -> RResult<(), PluginError> {
        let mut w = Writer::default();
        wire::encode_events(
            &mut w,
            batch.iter().map(|e| wire::Event {
                sequence: e.sequence,
                kind: e.kind,
                key: e.key.as_slice(),
                value: e.value.as_slice(),
            }),
        );
        self.call("kvs_logger_append", &w.0).map(drop).into()
    }

    fn replay(&mut self, mut sink: ReplaySinkMut<'_>) -> RResult<(), PluginError> {
        let mut cursor = 0u64;
        let mut empty_chunks = 0u32;
        loop {
            let out = match self.call("kvs_logger_replay", &cursor.to_le_bytes()) {
                Ok(out) => out,
                Err(e) => return RResult::RErr(e),
            };
            let mut r = Reader::new(&out);
            let parsed = (|| {
                Ok::<_, wire::WireError>((r.u64()?, r.u8()? != 0, wire::decode_events(&mut r)?))
            })();
            let (next, done, events) = match parsed {
                Ok(p) => p,
                Err(e) => return RResult::RErr(PluginError::internal(format!("replay: {e}"))),
            };
            let native: Vec<Event<'_>> = events
                .iter()
                .map(|e| Event {
                    sequence: e.sequence,
                    kind: e.kind,
                    key: e.key.into(),
                    value: e.value.into(),
                })
                .collect();
            if let RResult::RErr(e) = sink.accept(RSlice::from_slice(&native)) {
                return RResult::RErr(e);
            }
            if done {
                return RResult::ROk(());
            }
            // The per-call timeout bounds each chunk, not the loop: a guest whose cursor
            // never moves on, or that returns empty chunks forever, would hang start-up.
            empty_chunks = if native.is_empty() {
                empty_chunks + 1
            } else {
                0
            };
            if next <= cursor || empty_chunks > MAX_EMPTY_REPLAY_CHUNKS {
                return RResult::RErr(PluginError::internal(format!(
                    "WASM logger {}: replay is not making progress (cursor {cursor} -> {next}, \
                     {empty_chunks} empty chunk(s) in a row): a replay cursor must increase \
                     and chunks must carry events; the guest's replay is broken",
                    self.name
                )));
            }
            cursor = next;
        }
    }

    fn close(&mut self) -> RResult<(), PluginError> {
        if self.instance.is_none() {
            return RResult::ROk(());
        }
        self.call("kvs_logger_close", &[]).map(drop).into()
    }
}

/// Opens a `.wasm` logger with its table.
pub fn open_logger(path: &Path, name: &str, table: &str) -> Result<LoggerBox, PluginError> {
    let (sandbox, guest_config) = Sandbox::split(table)?;
    let compiled = compile(path, name, &sandbox, None).map_err(PluginError::internal)?;
    let mut logger = WasmLogger {
        name: name.to_string(),
        compiled,
        guest_config,
        instance: None,
    };
    // Open now, so a bad config or a missing grant fails start-up, not the first write.
    logger.reopen()?;
    Ok(LoggerApi_TO::from_value(logger, TD_Opaque))
}

// ---------------------------------------------------------------- frontend

/// Instances for a frontend: each serves one call at a time; a failed one is dropped.
struct Pool {
    compiled: Compiled,
    idle: Mutex<Vec<Plugin>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    fn handle(&self, request: &[u8], context: CallContext) -> Result<Vec<u8>, CallError> {
        let popped = self.idle.lock().unwrap().pop();
        let mut plugin = match popped {
            Some(p) => p,
            None => instance(&self.compiled).map_err(CallError::Trapped)?,
        };
        CALL_CONTEXT.set(Some(context));
        let result = call(&mut plugin, "kvs_http_handle", request);
        CALL_CONTEXT.set(None);
        match result {
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
        }
    }
}

struct WasmHttpFrontend {
    pool: Arc<Pool>,
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
}

#[derive(Clone)]
struct Edge {
    /// The frontend's declared name.
    name: Arc<str>,
    store: Arc<Store>,
    pool: Arc<Pool>,
    stopping: Arc<AtomicBool>,
}

async fn edge(
    axum::extract::State(edge): axum::extract::State<Edge>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = |status: u16, msg: String| {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            format!("{msg}\n"),
        )
            .into_response()
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    match path.as_str() {
        "/healthz" => return text(200, "ok".into()),
        "/readyz" => {
            return if edge.store.is_ready() && !edge.stopping.load(Ordering::Acquire) {
                text(200, "ready".into())
            } else {
                text(503, "not ready".into())
            };
        }
        _ => {}
    }
    let received = Instant::now();
    // What the client presented, as the native `rest` frontend reads it: the host
    // carries it to the store for the guest (see `CallContext`).
    let context = RequestContext::from_headers(
        request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    )
    .with_peer(peer);
    let method = request.method().as_str().to_string();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let limit = usize::try_from(edge.store.limits().max_value_bytes).unwrap_or(usize::MAX);
    let body = match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            return text(
                413,
                format!("value is larger than the limit of {limit} bytes"),
            );
        }
    };
    let encoded = wire::HttpRequest {
        method,
        path,
        headers,
        body,
    }
    .encode_with_context(&context);
    let call_context = CallContext {
        frontend: edge.name.clone(),
        context,
        received,
    };
    let Ok(_permit) = edge.pool.permits.acquire().await else {
        return text(503, "shutting down".into());
    };
    // The guest call runs right here on the async worker: a typical call takes a few
    // microseconds, far less than handing it to another thread would cost. A call that
    // turns out long (`LONG_CALL`) or waits for a durable write (`wait_write`) hands the
    // worker's other tasks to another thread first, so nothing else waits behind it.
    let response = edge.pool.handle(&encoded, call_context).and_then(|bytes| {
        wire::HttpResponse::decode(&bytes)
            .map_err(|e| CallError::Guest(PluginError::internal(e.to_string())))
    });
    match response {
        Ok(r) => {
            let mut builder = axum::http::Response::builder().status(r.status);
            for (k, v) in r.headers {
                builder = builder.header(k, v);
            }
            builder
                .body(axum::body::Body::from(r.body))
                .unwrap_or_else(|e| text(500, e.to_string()))
        }
        Err(failed) => {
            let status = match &failed {
                CallError::TimedOut(_) => 504,
                CallError::Guest(e) if e.code() == ErrorCode::UNAVAILABLE => 503,
                _ => 500,
            };
            text(status, failed.into_error().message().to_string())
        }
    }
}

impl FrontendApi for WasmHttpFrontend {
    fn endpoints(&self) -> RVec<RString> {
        RVec::from(vec![RString::from(format!("http://{}", self.addr))])
    }

    fn stop(&mut self, deadline_ms: u64) -> RResult<(), PluginError> {
        self.stopping.store(true, Ordering::Release);
        // Requests still waiting for an instance are answered 503 at once instead of
        // being served during the drain.
        self.pool.permits.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) else {
            return RResult::ROk(());
        };
        let finished = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(deadline_ms), server).await
        });
        runtime.shutdown_timeout(Duration::from_millis(100));
        match finished {
            Ok(Ok(Ok(()))) => RResult::ROk(()),
            Ok(Ok(Err(e))) => RResult::RErr(PluginError::internal(e.to_string())),
            Ok(Err(e)) => RResult::RErr(PluginError::internal(e.to_string())),
            Err(_) => RResult::RErr(PluginError::unavailable(
                "requests still in flight at the deadline were cut off",
            )),
        }
    }
}

/// Starts a `.wasm` HTTP frontend: the host listens and calls the guest per request.
pub fn start_frontend(
    path: &Path,
    name: &str,
    store: &Arc<Store>,
    table: &str,
) -> Result<FrontendBox, PluginError> {
    let (sandbox, guest_config) = Sandbox::split(table)?;
    // An HTTP guest has no export that takes a config, so anything but sandbox
    // settings would be silently ignored: refuse it, as kvs does every unknown key.
    let unknown: Vec<String> = toml::from_str::<toml::Table>(&guest_config)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    if !unknown.is_empty() {
        return Err(PluginError::invalid_input(format!(
            "[plugins.{name}]: unknown key(s) {}: a WASM HTTP frontend's table takes only \
             the host's sandbox settings ({})",
            unknown.join(", "),
            SANDBOX_KEYS.join(", ")
        )));
    }
    let compiled =
        compile(path, name, &sandbox, Some(store.clone())).map_err(PluginError::internal)?;
    let listener = std::net::TcpListener::bind(&sandbox.listen).map_err(|e| {
        PluginError::invalid_input(format!(
            "cannot listen on {}: {e}; set listen in the plug-in's table",
            sandbox.listen
        ))
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(sandbox.worker_threads)
        .max_blocking_threads(sandbox.pool_size.max(1) * 2)
        .thread_name("kvs-wasm-http")
        .enable_all()
        .build()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let pool = Arc::new(Pool {
        permits: tokio::sync::Semaphore::new(sandbox.pool_size),
        idle: Mutex::new(Vec::new()),
        compiled,
    });
    let state = Edge {
        name: name.into(),
        store: store.clone(),
        pool: pool.clone(),
        stopping: stopping.clone(),
    };
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = axum::Router::new().fallback(edge).with_state(state);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = shutdown_rx.await;
        })
        .await
    });
    Ok(FrontendApi_TO::from_value(
        WasmHttpFrontend {
            pool,
            runtime: Some(runtime),
            server: Some(server),
            shutdown: Some(shutdown),
            stopping,
            addr,
        },
        TD_Opaque,
    ))
}
