//! A `.wasm` stream frontend (plugin-api 1.3): the host's own TCP listener, one instance
//! per connection, the guest seeing only bytes.
//!
//! Per connection: an instance from the idle list (or a new one), `kvs_stream_open`
//! with the peer, then for every read `kvs_stream_data` with the bytes that arrived,
//! sending back what it returns, and `kvs_stream_close` at the end, after which the
//! instance goes back to the idle list (at most `pool_size` are kept). An instance
//! serves one connection at a time, so the guest's per-connection state is never
//! shared, and a trap or timeout discards that instance and closes that connection
//! only.
//!
//! Writes inside a data call are deferred (`host_fns::Deferred`): queued at once, so a
//! pipeline of writes shares one group commit and the instance never idles on an fsync;
//! the call's output is sent only once they are all durable, and if one fails the
//! connection is closed instead, so no acknowledgement of a lost write is ever sent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::direct::Instance as GuestInstance;
use arc_swap::ArcSwap;
use kvs_plugin_api::wire::{self, Writer};
use kvs_plugin_api::{PluginError, RequestContext};
use kvs_serve::tcp::Accepted;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ports::RunningFrontend;
use crate::store::Store;

use super::host_fns::{CALL_CONTEXT, CallContext, Deferred, GuestStore};
use super::module::{CallError, Compiled, Source, compile, instance, metered_call};
use super::sandbox::{Sandbox, refuse_guest_keys};

/// Connections a stream frontend keeps open by default: each holds an instance.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Most bytes handed to the guest in one call.
const READ_CHUNK: usize = 64 << 10;

/// An instance, counted in its frontend's `live` for as long as it exists.
struct Instance {
    plugin: GuestInstance,
    live: Arc<AtomicUsize>,
    /// The module it was made from: one swapped out is not reused.
    module: u64,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection got no instance.
enum Checkout {
    /// `max_instances` exist and none is idle.
    OverBudget,
    Failed(PluginError),
}

/// What every connection of one stream frontend shares.
struct Shared {
    name: Arc<str>,
    /// The module new connections get instances of, and its number (a swap
    /// increments it; connections already open keep their instance).
    compiled: ArcSwap<(u64, Compiled)>,
    idle: Mutex<Vec<Instance>>,
    keep_idle: usize,
    /// Instances that exist (serving or idle).
    live: Arc<AtomicUsize>,
    /// `memory_budget_mb / memory_max_mb`.
    max_instances: usize,
    memory_max_mb: u32,
    memory_budget_mb: u32,
    /// Connections refused over the budget since the last warning, and when that was.
    refused: Mutex<(u64, Option<Instant>)>,
    write_limits: super::host_fns::WriteLimits,
    wasm_meter: Arc<crate::metrics::WasmMeter>,
    meter: Arc<crate::metrics::FrontendMeter>,
    next_id: AtomicU64,
}

impl Shared {
    fn checkout(&self) -> Result<Instance, Checkout> {
        if let Some(idle) = self.idle.lock().unwrap().pop() {
            return Ok(idle);
        }
        // A slot in the budget first, then the instance.
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_instances).then_some(n + 1)
            })
            .map_err(|_| Checkout::OverBudget)?;
        let live = self.live.clone();
        let compiled = self.compiled.load();
        match instance(&compiled.1) {
            Ok(plugin) => Ok(Instance {
                plugin,
                live,
                module: compiled.0,
            }),
            Err(e) => {
                live.fetch_sub(1, Ordering::AcqRel);
                Err(Checkout::Failed(e))
            }
        }
    }

    /// Logs a connection refused over the budget: at once, then at most every 10 s
    /// with how many were refused meanwhile (a flood of connections must not become a
    /// flood of log lines).
    fn refuse(&self, peer: &str) {
        let mut refused = self.refused.lock().unwrap();
        refused.0 += 1;
        if refused
            .1
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                plugin = %self.name,
                "[plugins.{}]: refusing the connection from {peer}: {} instances of \
                 memory_max_mb = {} already fill memory_budget_mb = {} ({} refused since \
                 the last warning)",
                self.name,
                self.max_instances,
                self.memory_max_mb,
                self.memory_budget_mb,
                refused.0
            );
            *refused = (0, Some(Instant::now()));
        }
    }

    fn give_back(&self, plugin: Instance) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.keep_idle && plugin.module == self.compiled.load().0 {
            idle.push(plugin);
        }
    }

    /// One guest call on `plugin`, with the connection's context in place for the store
    /// host functions (lent for the call, not copied); returns the writes it queued
    /// with its result.
    fn call(
        &self,
        plugin: &mut GuestInstance,
        func: &str,
        input: &[u8],
        context: &mut Option<Box<RequestContext>>,
    ) -> (Result<Vec<u8>, CallError>, Deferred) {
        CALL_CONTEXT.set(Some(CallContext {
            frontend: self.name.clone(),
            meter: self.meter.clone(),
            context: context.take().unwrap_or_default(),
            received: Instant::now(),
            deferred: Deferred::new(self.write_limits),
        }));
        let result = metered_call(plugin, func, input, Some(&self.wasm_meter));
        // Set above and taken only here: the context always comes back.
        let call = CALL_CONTEXT
            .take()
            .expect("the call context outlives the call");
        *context = Some(call.context);
        let deferred = call.deferred;
        (result, deferred)
    }
}

fn conn_message(conn: u64) -> Writer {
    let mut w = Writer::default();
    w.u64(conn);
    w
}

/// Serves one connection until either side closes it or the guest fails.
async fn serve(accepted: Accepted, shared: Arc<Shared>) {
    let presented = accepted.request_context();
    let Accepted {
        mut stream,
        peer,
        stopping: mut stop,
        ..
    } = accepted;
    let conn = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut instance = match shared.checkout() {
        Ok(p) => p,
        Err(Checkout::OverBudget) => return shared.refuse(&peer.to_string()),
        Err(Checkout::Failed(e)) => {
            tracing::warn!(plugin = %shared.name, "cannot serve {peer}: {e}");
            return;
        }
    };
    let plugin = &mut instance.plugin;
    let mut open = conn_message(conn);
    wire::encode_context(&mut open, &presented);
    // Lent to each call (`Shared::call`), not copied.
    let mut context = Some(Box::new(presented));
    if let (Err(e), _) = shared.call(plugin, "kvs_stream_open", &open.0, &mut context) {
        tracing::debug!(plugin = %shared.name, "connection from {peer} refused by the guest: {}", e.into_error());
        return;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    // Each read's message to the guest, built in the same buffer every time.
    let mut input = Writer::default();
    let mut healthy = true;
    // Waited for once, not once per read (each wait joins and leaves the channel's
    // list of waiters), and looked at first: a client that keeps sending always has
    // bytes ready and would otherwise never see the stop.
    let stopping = stop.changed();
    tokio::pin!(stopping);
    loop {
        let n = tokio::select! {
            biased;
            _ = &mut stopping => break,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        input.0.clear();
        input.u64(conn).bytes(&buf[..n]);
        let (result, deferred) = shared.call(plugin, "kvs_stream_data", &input.0, &mut context);
        // Whatever the call returned, its queued writes must settle before anything
        // is sent: the output may acknowledge them.
        let settled = deferred.settle().await;
        let output = match result {
            Ok(bytes) => wire::StreamOutput::decode(&bytes)
                .map_err(|e| format!("malformed kvs_stream_data output: {e}")),
            Err(CallError::Guest(e)) => Err(format!("the guest refused the data: {e}")),
            Err(failed) => {
                healthy = false;
                Err(format!("the guest failed: {}", failed.into_error()))
            }
        };
        let output = match (output, settled) {
            (Ok(output), Ok(())) => output,
            (Err(why), _) => {
                tracing::warn!(plugin = %shared.name, "closing the connection from {peer}: {why}");
                break;
            }
            (Ok(_), Err(e)) => {
                tracing::warn!(
                    plugin = %shared.name,
                    "closing the connection from {peer} unanswered: a write it made failed: {e}"
                );
                break;
            }
        };
        if !output.data.is_empty() && stream.write_all(&output.data).await.is_err() {
            break;
        }
        if output.close {
            break;
        }
    }
    let _ = stream.shutdown().await;
    if healthy {
        let close = conn_message(conn);
        if let (Ok(_), _) = shared.call(plugin, "kvs_stream_close", &close.0, &mut context) {
            shared.give_back(instance);
        }
    }
}

struct WasmStreamFrontend {
    server: kvs_serve::tcp::TcpServer,
    tls: bool,
    shared: Arc<Shared>,
    store: Arc<Store>,
    /// The table it was started with: a swap in place takes a new file, not a new table.
    table: String,
}

impl RunningFrontend for WasmStreamFrontend {
    fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "tls" } else { "tcp" };
        vec![format!("{scheme}://{}", self.server.local_addr())]
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        self.server.stop(deadline)
    }

    /// A new file with the same table: new connections get instances of the new
    /// module; open ones keep theirs until they close.
    fn swap_in_place(
        &mut self,
        plugin: &crate::plugins::Plugin,
        table: &str,
    ) -> Option<Result<(), PluginError>> {
        let stream =
            (plugin.capabilities.iter()).any(|c| c == kvs_plugin_api::capability::FRONTEND_STREAM);
        if table != self.table || plugin.format != crate::plugins::Format::Wasm || !stream {
            return None;
        }
        let swapped = Sandbox::split(table).and_then(|(sandbox, _)| {
            let compiled = compile(
                plugin.wasm_source(),
                &plugin.name,
                &sandbox,
                GuestStore::new(&self.store, plugin.api.1),
            )
            .map_err(PluginError::internal)?;
            // One instance now, so a module that cannot start is refused here.
            drop(instance(&compiled)?);
            let next = self.shared.compiled.load().0 + 1;
            self.shared.compiled.store(Arc::new((next, compiled)));
            self.shared.idle.lock().unwrap().clear();
            Ok(())
        });
        Some(swapped)
    }
}

/// Starts a `.wasm` stream frontend: the host listens on TCP and hands each
/// connection's bytes to the guest. `minor` is the guest's plugin-api minor.
pub fn start_stream_frontend<'a>(
    module: impl Into<Source<'a>>,
    name: &str,
    store: &Arc<Store>,
    minor: u16,
    table: &str,
) -> Result<Box<dyn RunningFrontend>, PluginError> {
    let (sandbox, guest_config) = Sandbox::split(table)?;
    refuse_guest_keys(name, &guest_config, "a WASM stream frontend")?;
    let compiled = compile(module.into(), name, &sandbox, GuestStore::new(store, minor))
        .map_err(PluginError::internal)?;
    // One instance now, so a guest that cannot start stops kvs at start-up.
    let live = Arc::new(AtomicUsize::new(1));
    let first = Instance {
        plugin: instance(&compiled)?,
        live: live.clone(),
        module: 0,
    };
    let table_name = format!("[plugins.{name}]");
    let max_instances = (sandbox.memory_budget_mb / sandbox.memory_max_mb) as usize;
    announce_instance_limit(&table_name, &sandbox, max_instances);
    let settings = kvs_serve::tcp::TcpSettings {
        listen: &sandbox.listen,
        table: &table_name,
        worker_threads: sandbox.worker_threads,
        // Guest calls block their thread (`module::metered_call`).
        blocks_in_place: true,
        thread_name: "kvs-wasm-stream",
        max_connections_per_peer: sandbox.max_connections_per_peer,
        descriptor_reserve: true,
        max_connections: sandbox.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        tls: sandbox.tls.as_ref(),
        deadlines: kvs_serve::Deadlines::from_ms(
            sandbox.handshake_timeout_ms,
            sandbox.idle_timeout_ms,
            &table_name,
        )?,
        log: crate::telemetry::listener_log,
        when_idle: None,
    };
    let shared = Arc::new(Shared {
        name: name.into(),
        compiled: ArcSwap::from_pointee((0, compiled)),
        idle: Mutex::new(vec![first]),
        keep_idle: sandbox.pool_size,
        live,
        max_instances,
        memory_max_mb: sandbox.memory_max_mb,
        memory_budget_mb: sandbox.memory_budget_mb,
        refused: Mutex::new((0, None)),
        write_limits: sandbox.write_limits(),
        wasm_meter: store.metrics().wasm(name),
        meter: store.metrics().frontend(name),
        next_id: AtomicU64::new(1),
    });
    let serving = shared.clone();
    let server = kvs_serve::tcp::TcpServer::start(&settings, |_, _| {
        move |accepted| serve(accepted, serving.clone())
    })?;
    Ok(Box::new(WasmStreamFrontend {
        server,
        tls: sandbox.tls.is_some(),
        shared,
        store: store.clone(),
        table: table.to_string(),
    }))
}

/// Says at start-up how many clients the frontend serves at once: each connection
/// holds an instance, so the memory budget, not `max_connections`, is the limit an
/// operator meets first (a probe found the 17th client closed and looked for why).
fn announce_instance_limit(table: &str, sandbox: &Sandbox, max_instances: usize) {
    let (budget, per_instance) = (sandbox.memory_budget_mb, sandbox.memory_max_mb);
    match sandbox.max_connections {
        Some(max) if max > max_instances => tracing::warn!(
            "{table}: max_connections = {max}, but each connection holds an instance of \
             memory_max_mb = {per_instance} and memory_budget_mb = {budget} fits {max_instances}: \
             connections past {max_instances} are closed; raise memory_budget_mb or lower \
             memory_max_mb to serve more"
        ),
        _ => tracing::info!(
            "{table}: serves at most {max_instances} connections at once (memory_budget_mb = \
             {budget} / memory_max_mb = {per_instance}, an instance per connection); more are \
             closed and logged"
        ),
    }
}
