//! Compiling a `.wasm` file with its sandbox and host functions, making instances,
//! calling exports, and the handshake read at discovery.

use std::path::Path;
use std::time::Duration;

use extism::{Manifest, Plugin, PluginBuilder, UserData, Wasm};

use super::direct::{Instance, direct_functions};
use kvs_plugin_api::capability;
use kvs_plugin_api::version::check_compatible;
use kvs_plugin_api::wasm_abi::{KVS_HANDSHAKE, KVS_LOG};
use kvs_plugin_api::wire::{self};
use kvs_plugin_api::{API_MAJOR, API_MINOR, PluginError, PluginKind};

use crate::metrics::WasmMeter;

use super::host_fns::{
    LogGate, StoreRef, host_function, host_log, in_multi_thread_runtime, store_functions,
};
use super::sandbox::Sandbox;

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

/// Runs a guest's blocking wait (a WASI sleep of at least `LONG_CALL`). On an async
/// worker it runs inside `block_in_place`, which hands the worker's other tasks to
/// another thread for as long as the wait lasts. Unlike `hand_off_worker`, nothing here
/// depends on which thread runs a task first: the worker is free for the whole wait,
/// however long the new thread takes to start.
fn wait_off_worker(wait: &mut dyn FnMut()) {
    if in_multi_thread_runtime() {
        tokio::task::block_in_place(wait);
    } else {
        wait();
    }
}

/// A module compiled once with its sandbox and host functions; instances come from it.
pub(super) struct Compiled {
    compiled: extism::CompiledPlugin,
}

/// Where a module's bytes come from: a file, read when compiled, or bytes read already
/// (a scanned plug-in's, so that what runs is exactly what was handshaked and hashed).
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// A `.wasm` file.
    File(&'a Path),
    /// A module's bytes.
    Bytes(&'a [u8]),
}

impl<'a> From<&'a Path> for Source<'a> {
    fn from(path: &'a Path) -> Self {
        Source::File(path)
    }
}

impl<'a> From<&'a std::path::PathBuf> for Source<'a> {
    fn from(path: &'a std::path::PathBuf) -> Self {
        Source::File(path)
    }
}

/// A `.wasm` file's bytes, refused unread past `MAX_MODULE_BYTES`.
pub(crate) fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if size > MAX_MODULE_BYTES {
        return Err(format!(
            "{size} bytes: larger than the {} MiB a WebAssembly plug-in may be",
            MAX_MODULE_BYTES >> 20
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

pub(super) fn compile(
    source: Source<'_>,
    name: &str,
    sandbox: &Sandbox,
    store: StoreRef,
) -> Result<Compiled, String> {
    let read;
    let bytes = match source {
        Source::File(path) => {
            read = read_module(path)?;
            &read[..]
        }
        Source::Bytes(bytes) => bytes,
    };
    // Say what is wrong with a file that is not WebAssembly at all, rather than what
    // the parser tripped on first (for text: "input bytes aren't valid utf-8").
    if !bytes.starts_with(b"\0asm") {
        return Err(
            "not a WebAssembly module (it does not start with the \\0asm magic): \
             build the plug-in with `cargo build --release --target wasm32-wasip1` and use \
             target/wasm32-wasip1/release/NAME.wasm"
                .into(),
        );
    }
    let mut manifest = Manifest::new([Wasm::data(bytes.to_vec())])
        .with_memory_max(sandbox.memory_max_mb.saturating_mul(16)) // 64 KiB pages
        .with_timeout(Duration::from_millis(sandbox.call_timeout_ms));
    if let Some(dir) = &sandbox.data_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("data_dir {}: {e}", dir.display()))?;
        super::sandbox::remove_escaping_links(&dir, name);
        manifest = manifest.with_allowed_path(dir.display().to_string(), "/data");
    }
    let mut functions = store_functions(store.clone());
    let gate = UserData::new(LogGate::new(
        name,
        sandbox.log_lines_per_sec,
        sandbox.log_line_max_bytes,
    ));
    functions.push(host_function(&KVS_LOG, gate.clone(), host_log));
    functions.extend(direct_functions(store, gate));
    let builder = PluginBuilder::new(manifest)
        .with_wasi(true)
        .with_functions(functions)
        .with_long_call_hook(LONG_CALL, hand_off_worker, wait_off_worker);
    let compiled = extism::CompiledPlugin::new(builder).map_err(|e| {
        format!(
            "not a loadable WebAssembly module: {}",
            first_line(&e.to_string())
        )
    })?;
    Ok(Compiled { compiled })
}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

pub(super) fn instance(c: &Compiled) -> Result<Instance, PluginError> {
    Plugin::new_from_compiled(&c.compiled)
        .map(Instance::new)
        .map_err(|e| {
            PluginError::internal(format!(
                "cannot instantiate: {}",
                first_line(&e.to_string())
            ))
        })
}

/// Calls an export and unwraps its result frame. A trap, a timeout or a memory-cap
/// violation comes back as `Err(Trapped)`: the instance must not be used again.
pub(super) enum CallError {
    /// The guest answered with an error frame; the instance is fine.
    Guest(PluginError),
    /// The call trapped or ran out of memory; the instance must be dropped.
    Trapped(PluginError),
    /// The call ran past `call_timeout_ms`; the instance must be dropped.
    TimedOut(PluginError),
}

impl CallError {
    pub(super) fn into_error(self) -> PluginError {
        match self {
            CallError::Guest(e) | CallError::Trapped(e) | CallError::TimedOut(e) => e,
        }
    }
}

/// [`call`], counted in `meter`: every call, and each trap or timeout (whose instance
/// is discarded and replaced).
pub(super) fn metered_call(
    plugin: &mut Instance,
    func: &str,
    input: &[u8],
    meter: Option<&WasmMeter>,
) -> Result<Vec<u8>, CallError> {
    let result = call(plugin, func, input);
    if let Some(m) = meter {
        m.calls.inc();
        match &result {
            Err(CallError::Trapped(_)) => {
                m.traps.inc();
                m.replacements.inc();
            }
            Err(CallError::TimedOut(_)) => {
                m.timeouts.inc();
                m.replacements.inc();
            }
            _ => {}
        }
    }
    result
}

pub(super) fn call(plugin: &mut Instance, func: &str, input: &[u8]) -> Result<Vec<u8>, CallError> {
    let out = plugin.call(func, input).map_err(|e| {
        // The root cause says what happened ("wasm trap: ...", "timeout", "oom").
        let why = first_line(&e.root_cause().to_string());
        tracing::warn!("WASM call {func} failed ({why}); the instance is discarded");
        let message = format!("WASM call {func} failed: {why}");
        // The patched extism fails an expired call (or instantiation) with its typed
        // `Timeout` (vendor/extism/KVS-PATCH.md).
        if e.downcast_ref::<extism::Timeout>().is_some() {
            CallError::TimedOut(PluginError::unavailable(message))
        } else {
            CallError::Trapped(PluginError::internal(message))
        }
    })?;
    match wire::result(&out) {
        Ok(Ok(payload)) => {
            // The payload (the frame's tail), moved to the front of the frame's own
            // buffer: no new one.
            let header = out.len() - payload.len();
            let mut out = out;
            out.drain(..header);
            Ok(out)
        }
        Ok(Err((code, message))) => Err(CallError::Guest(PluginError::new(code, message))),
        Err(e) => Err(CallError::Guest(PluginError::internal(format!(
            "{func}: {e}"
        )))),
    }
}

/// The largest `.wasm` file kvs compiles: compiling costs time and memory in proportion
/// to size, and a plug-in has no reason to be near this.
const MAX_MODULE_BYTES: u64 = 64 << 20;

/// The handshake of a `.wasm` file, or why it is refused.
///
/// Everything the file can make the host do here is bounded: its size
/// (`MAX_MODULE_BYTES`), its memory and its running time ([`Sandbox::for_discovery`]),
/// which covers instantiation — a start function, `_initialize` — as well as the
/// `kvs_handshake` call itself (the patched extism runs both under the call's deadline).
pub fn handshake(path: &Path, bytes: &[u8]) -> Result<wire::Handshake, String> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
    let compiled = compile(Source::Bytes(bytes), name, &Sandbox::for_discovery(), None)?;
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
    let export = KVS_HANDSHAKE.name;
    if !plugin.function_exists(export) {
        return Err(format!(
            "not a kvs plug-in: it has no {export} export (WASM plug-ins declare one \
             with kvs_plugin_api's export_wasm_logger! or export_wasm_http_frontend!)"
        ));
    }
    let out = plugin.call::<&[u8], Vec<u8>>(export, &[]).map_err(|e| {
        format!(
            "{export} failed: {}",
            first_line(&e.root_cause().to_string())
        )
    })?;
    let api =
        wire::Handshake::decode_version(&out).map_err(|e| format!("not a kvs plug-in: {e}"))?;
    check_compatible(api, (API_MAJOR, API_MINOR)).map_err(|e| e.to_string())?;
    let h = wire::Handshake::decode(&out).map_err(|e| format!("bad handshake: {e}"))?;
    if h.kind != PluginKind::LOGGER && h.kind != PluginKind::FRONTEND {
        return Err(format!("unknown plug-in kind {}", h.kind.0));
    }
    let modes = [capability::FRONTEND_HTTP, capability::FRONTEND_STREAM];
    if h.kind == PluginKind::FRONTEND && !h.capabilities.iter().any(|c| modes.contains(&c.as_str()))
    {
        return Err(
            "a WASM frontend must declare the frontend:http or frontend:stream capability \
             (the modes this kvs serves)"
                .into(),
        );
    }
    kvs_plugin_api::handshake::validate_name(&h.name)?;
    Ok(h)
}
