//! The host functions a guest imports: the store (`kvs_get`, `kvs_put`, `kvs_delete`,
//! `kvs_stats`, `kvs_check`, `kvs_update`, `kvs_get_entry`), reached as the caller whose
//! request the call serves, and `kvs_log`. `kvs_update` waits for its outcome (the guest
//! answers with it); plain writes are deferred.
//!
//! A guest's writes are *deferred* ([`Deferred`]): queued and accepted at once, not
//! waited for, so the instance serves on during the fsync and one call can queue a whole
//! pipeline into one group commit. The frontend (HTTP edge, stream connection) settles
//! them before it sends what the call answered; a read inside the call settles them
//! first, so the guest sees its own writes. What one call keeps queued is bounded
//! ([`WriteLimits`]: `call_max_writes`, `call_max_write_mb`): a write past either bound
//! first waits for the call's earlier writes, so a guest queuing writes in a loop holds
//! at most that much memory in the write queue, however long it loops.
//!
//! `kvs_log` is rate-limited per plug-in ([`LogGate`]: `log_lines_per_sec`,
//! `log_line_max_bytes`), so a guest cannot flood kvs's log: that is `host_fns/log.rs`.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use extism::{CurrentPlugin, Function, UserData, Val};
use kvs_plugin_api::wasm_abi::{self, HostFunction};
use kvs_plugin_api::wire::{self, Reader, Writer};
use kvs_plugin_api::{ErrorCode, PluginError, RequestContext, Transaction};

use crate::caller::Caller;
use crate::store::Store;
use crate::write_request::Completion;

use super::direct::val_type;

mod log;

pub(super) use log::{LogGate, emit_log, host_log};

/// The request a guest call on this thread is serving: the frontend's name, what the
/// client presented, when it arrived. Set around each `kvs_http_handle` call (a call
/// runs start to end on one thread), read by the store host functions, so a guest's
/// store calls carry its client's context without the guest having to (or being able
/// to) supply it.
pub(super) struct CallContext {
    pub(super) frontend: Arc<str>,
    /// Where the frontend's requests are counted.
    pub(super) meter: Arc<crate::metrics::FrontendMeter>,
    /// Boxed: the call context is moved in and out of its thread-local on every call,
    /// and a request's context is most of its size.
    pub(super) context: Box<RequestContext>,
    pub(super) received: Instant,
    /// The writes this call queued, for the frontend to settle.
    pub(super) deferred: Deferred,
}

/// What one guest call may keep queued and not yet durable (the sandbox keys
/// `call_max_writes`, `call_max_write_mb`).
#[derive(Debug, Clone, Copy)]
pub(super) struct WriteLimits {
    pub(super) max_writes: usize,
    /// Keys and values, bytes.
    pub(super) max_bytes: u64,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            max_writes: 1024,
            max_bytes: 64 << 20,
        }
    }
}

/// The writes a call queued without waiting for them. Their commit is deferred too
/// ([`Caller::defers_commit`]): whoever waits for them commits them first
/// ([`Store::commit_queued`]), after letting the frontend's other ready connections
/// queue theirs, so all share one append on this thread.
#[derive(Default)]
pub(super) struct Deferred {
    writes: Vec<tokio::sync::oneshot::Receiver<Result<(), PluginError>>>,
    /// The store they were queued at (set with the first).
    store: Option<Arc<Store>>,
    /// Bytes of keys and values in `writes`.
    queued_bytes: u64,
    limits: WriteLimits,
    /// The first queued write that failed.
    failed: Option<PluginError>,
}

impl Deferred {
    pub(super) fn new(limits: WriteLimits) -> Deferred {
        Deferred {
            limits,
            ..Deferred::default()
        }
    }

    /// Before queuing a write of `bytes`: if it would take the call past its
    /// [`WriteLimits`], waits for the writes already queued (a write larger than the
    /// byte bound on its own still goes, alone). Waiting, not failing: a pipeline of
    /// small writes larger than the bound (a Redis client's `-P 2000`) is legitimate,
    /// and waiting only makes the call take longer — within `call_timeout_ms`.
    fn make_room(&mut self, bytes: u64) {
        if !self.writes.is_empty()
            && (self.writes.len() >= self.limits.max_writes
                || self.queued_bytes.saturating_add(bytes) > self.limits.max_bytes)
        {
            self.settle_blocking();
        }
    }

    fn record(&mut self, outcome: Result<Result<(), PluginError>, impl std::fmt::Debug>) {
        let outcome = outcome.unwrap_or_else(|_| Err(PluginError::unavailable("write dropped")));
        if let (Err(e), None) = (outcome, &self.failed) {
            self.failed = Some(e);
        }
    }

    /// Waits, blocking the thread, for every queued write: a read inside the call must
    /// see them. The writer thread commits them (woken now), so the other connections
    /// this worker serves, moved to another thread meanwhile, can add theirs.
    fn settle_blocking(&mut self) {
        if self.writes.is_empty() {
            return; // the common read: nothing to wait for, and no worker hand-off
        }
        if let Some(store) = &self.store {
            store.hand_over_queued();
        }
        let writes = std::mem::take(&mut self.writes);
        self.queued_bytes = 0;
        block_for_store(|| {
            for rx in writes {
                self.record(rx.blocking_recv());
            }
        })
    }

    /// Waits for every queued write; `Err` with the first failure, if any. Lets the
    /// runtime's other ready tasks run first (their writes then share the commit),
    /// then commits on this thread.
    pub(super) async fn settle(mut self) -> Result<(), PluginError> {
        if let (false, Some(store)) = (self.writes.is_empty(), &self.store) {
            tokio::task::yield_now().await;
            store.commit_queued();
        }
        for rx in std::mem::take(&mut self.writes) {
            self.record(rx.await);
        }
        self.failed.map_or(Ok(()), Err)
    }
}

thread_local! {
    pub(super) static CALL_CONTEXT: RefCell<Option<CallContext>> = const { RefCell::new(None) };
    /// How long the host function running on this thread blocked for the store, for
    /// [`excuse`].
    static STORE_WAITS: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Runs `wait`, which blocks the thread until the store has done something (writes made
/// durable), off the async worker if there is one, and counts how long it took: the
/// guest's call is not charged for it ([`excuse`]).
fn block_for_store<R>(wait: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let result = if in_multi_thread_runtime() {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    };
    STORE_WAITS.set(STORE_WAITS.get() + started.elapsed());
    result
}

/// After a host function: the time it blocked for the store (a durable write, the
/// writes a read must see), as [`take_store_waits`] gave it, moves its call's deadline
/// later, up to ten timeouts in all (the patched extism's bound, so a guest that keeps
/// the host waiting still ends). `call_timeout_ms` stops a guest that runs too long; a
/// pipeline of 3,000 `INCR`s, each waiting for its fsync on a slow disk, is the client's
/// doing, not the guest's, and cutting it off would close the connection after writes
/// it had made (found by an outside probe: 1,407 of 3,000 applied, none answered, under
/// 3 ms fsyncs and a 5 s timeout).
pub(super) fn excuse(plugin: &CurrentPlugin, waited: Duration) {
    if !waited.is_zero() {
        plugin.excuse_wait(waited);
    }
}

/// How long this thread's host function has blocked for the store since the last take,
/// reset: taken as soon as the store call returns, so a host function that fails after
/// it (a bad pointer from the guest) leaves nothing for the next call on the thread.
pub(super) fn take_store_waits() -> Duration {
    STORE_WAITS.take()
}

/// The store the host functions reach: a frontend's store, or none (handshake, loggers).
pub(super) type StoreRef = Option<GuestStore>;

/// A frontend's store as its guest reaches it: errors are fitted to the contract minor
/// the guest was built against ([`crate::caller::for_minor`]).
#[derive(Clone)]
pub(super) struct GuestStore {
    pub(super) store: Arc<Store>,
    /// The guest's plugin-api minor (its handshake's).
    pub(super) minor: u16,
}

impl GuestStore {
    pub(super) fn new(store: &Arc<Store>, minor: u16) -> StoreRef {
        Some(GuestStore {
            store: store.clone(),
            minor,
        })
    }
}

/// The store calls a guest can import.
#[derive(Debug, Clone, Copy)]
pub(super) enum StoreCall {
    /// `kvs_get`: key -> result(found:u8 value:bytes).
    Get,
    /// `kvs_put`: key value -> result().
    Put,
    /// `kvs_delete`: key -> result().
    Delete,
    /// `kvs_stats`: -> result(keys:u64 data_bytes:u64) (1.3).
    Stats,
    /// `kvs_check`: action:u8 key -> result() (1.4).
    Check,
    /// `kvs_update`: update -> result(outcome) (1.4).
    Update,
    /// `kvs_get_entry`: key -> result(found:u8 entry) (1.4).
    GetEntry,
}

/// What a direct call's op (`kvs_call`, 1.4) names: its position in the contract's
/// table of host functions.
#[derive(Debug, Clone, Copy)]
pub(super) enum HostOp {
    Store(StoreCall),
    Log,
}

impl HostOp {
    pub(super) fn from_op(op: i32) -> Option<HostOp> {
        let f = wasm_abi::HOST_FUNCTIONS.get(usize::try_from(op).ok()?)?;
        Some(match f.name {
            n if n == wasm_abi::KVS_LOG.name => HostOp::Log,
            n => HostOp::Store(STORE_CALLS.iter().find(|(f, _)| f.name == n)?.1),
        })
    }
}

/// The store's host functions and what each does.
const STORE_CALLS: [(HostFunction, StoreCall); 7] = [
    (wasm_abi::KVS_GET, StoreCall::Get),
    (wasm_abi::KVS_PUT, StoreCall::Put),
    (wasm_abi::KVS_DELETE, StoreCall::Delete),
    (wasm_abi::KVS_STATS, StoreCall::Stats),
    (wasm_abi::KVS_CHECK, StoreCall::Check),
    (wasm_abi::KVS_UPDATE, StoreCall::Update),
    (wasm_abi::KVS_GET_ENTRY, StoreCall::GetEntry),
];

/// An extism host function with the name and signature `f` has in the contract's table
/// ([`wasm_abi`]): what a guest imports is what the table says, and a change to a
/// registered signature is a change to the table (which `plugin-api/tests/frozen.rs`
/// checks against every released minor).
pub(super) fn host_function<T: 'static>(
    f: &HostFunction,
    data: UserData<T>,
    run: impl Fn(&mut CurrentPlugin, &[Val], &mut [Val], UserData<T>) -> Result<(), extism::Error>
    + Sync
    + Send
    + 'static,
) -> Function {
    Function::new(
        f.name,
        f.params.iter().map(|t| val_type(*t)),
        f.results.iter().map(|t| val_type(*t)),
        data,
        run,
    )
}

/// The store's host functions (`kvs_get`, `kvs_put`, `kvs_delete`, `kvs_stats`,
/// `kvs_check`, `kvs_update`, `kvs_get_entry`), reaching `store`.
pub(super) fn store_functions(store: StoreRef) -> Vec<Function> {
    STORE_CALLS
        .into_iter()
        .map(|(f, call)| {
            // The store is captured, not kept in `UserData`: that is one mutex for all
            // of the plug-in's instances, which every call would take.
            let store = store.clone();
            host_function(
                &f,
                UserData::new(()),
                move |plugin: &mut CurrentPlugin, inputs: &[Val], outputs: &mut [Val], _| {
                    let input: Vec<u8> = plugin.memory_get_val(&inputs[0])?;
                    let mut reply = Vec::new();
                    store_reply(&store, call, &input, &mut reply);
                    excuse(plugin, take_store_waits());
                    plugin.memory_set_val(&mut outputs[0], reply)
                },
            )
        })
        .collect()
}

/// One store call from a guest: decode `input`, run as the caller whose request this
/// call serves (see [`CallContext`]), and put the result frame in `reply` (cleared
/// first: a caller that keeps it between calls allocates nothing for a GET).
pub(super) fn store_reply(store: &StoreRef, call: StoreCall, input: &[u8], reply: &mut Vec<u8>) {
    reply.clear();
    CALL_CONTEXT.with_borrow_mut(|context| match (store, context) {
        (Some(store), Some(context)) => {
            let CallContext {
                frontend,
                meter,
                context,
                received,
                deferred,
            } = context;
            let caller = Caller {
                meter: Some(meter),
                // Its writes wait for `Deferred::settle` (or a read, or an update).
                defers_commit: true,
                ..Caller::from_context(frontend, context, *received)
            };
            // The frame's "ok" tag, then what the call appends.
            reply.push(0);
            let result = run(
                &store.store,
                &caller,
                call,
                &mut Reader::new(input),
                deferred,
                reply,
            );
            if let Err(e) = result {
                let e = crate::caller::for_minor(e, store.minor);
                reply.clear();
                reply.extend_from_slice(&wire::err(e.code(), e.message()));
            }
        }
        _ => reply.extend_from_slice(&wire::err(
            ErrorCode::UNAVAILABLE,
            "no store: the store is reached only while a frontend serves a request",
        )),
    })
}

/// Runs `write` on a [`Writer`] over `out`, appending to it.
fn append(out: &mut Vec<u8>, write: impl FnOnce(&mut Writer)) {
    let mut w = Writer(std::mem::take(out));
    write(&mut w);
    *out = w.0;
}

fn run(
    store: &Arc<Store>,
    caller: &Caller<'_>,
    call: StoreCall,
    r: &mut Reader<'_>,
    deferred: &mut Deferred,
    out: &mut Vec<u8>,
) -> Result<(), PluginError> {
    if let StoreCall::Stats = call {
        let stats = store.stats();
        append(out, |w| {
            w.u64(stats.keys).u64(stats.data_bytes);
        });
        return Ok(());
    }
    if let StoreCall::Check = call {
        let action =
            crate::caller::Action::from_contract(kvs_plugin_api::Action(r.u8().map_err(bad)?))?;
        return store.check_as(caller, action, r.bytes().map_err(bad)?);
    }
    if let StoreCall::Update = call {
        // An update, or (1.6) a transaction.
        let transaction = Transaction::decode(r.rest()).map_err(bad)?;
        // The guest needs the outcome to answer, so this call waits for it (after the
        // call's earlier writes, which the writer orders before it).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Completion::with_reply(move |r| {
            let _ = tx.send(r);
        });
        // Not deferred: the guest waits for it inside its call, so the writer thread
        // commits it (with the call's earlier writes, queued before it) while this
        // worker's other connections, moved to another thread, add theirs.
        let caller = Caller {
            defers_commit: false,
            ..*caller
        };
        store.transact_as(&caller, transaction, done);
        let outcome = block_for_store(|| {
            rx.blocking_recv()
                .unwrap_or_else(|_| Err(PluginError::unavailable("update dropped")))
        })?;
        out.extend_from_slice(&outcome.encode());
        return Ok(());
    }
    let key = r.bytes().map_err(bad)?;
    match call {
        StoreCall::Stats | StoreCall::Check | StoreCall::Update => unreachable!("answered above"),
        StoreCall::GetEntry => {
            deferred.settle_blocking();
            match store.get_entry_as(caller, key, kvs_plugin_api::Consistency::DEFAULT)? {
                Some(entry) => {
                    out.push(1);
                    out.extend_from_slice(&entry.encode());
                }
                None => out.push(0),
            }
            Ok(())
        }
        StoreCall::Get => {
            deferred.settle_blocking();
            // Straight from the map into the frame (the closure may run again if the
            // read overlapped a transaction: it starts over each time).
            let start = out.len();
            let found = store.get_with_as(caller, key, |value| {
                out.truncate(start);
                append(out, |w| {
                    w.u8(1).bytes(value);
                });
            })?;
            if found.is_none() {
                out.truncate(start);
                out.push(0);
            }
            Ok(())
        }
        StoreCall::Put => {
            let value = r.bytes().map_err(bad)?;
            let bytes = (key.len() + value.len()) as u64;
            let (key, value) = (key.to_vec(), value.to_vec());
            defer_write(deferred, store, bytes, |done| {
                store.put_as(caller, key, value, done)
            })
        }
        StoreCall::Delete => {
            let key = key.to_vec();
            defer_write(deferred, store, key.len() as u64, |done| {
                store.delete_as(caller, key, done)
            })
        }
    }
}

fn bad(e: wire::WireError) -> PluginError {
    PluginError::invalid_input(e.to_string())
}

/// Whether `block_in_place` may be called here: inside a multi-threaded tokio runtime
/// (where it hands the worker's other tasks to another thread, or does nothing on a
/// thread that is not a worker). Outside one, or in a current-thread runtime, it must not.
pub(super) fn in_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Queues the write without waiting: a refusal the store answers at once (limits,
/// access) is the guest's error now; otherwise the write joins the call's deferred ones.
fn defer_write(
    deferred: &mut Deferred,
    store: &Arc<Store>,
    bytes: u64,
    submit: impl FnOnce(Completion),
) -> Result<(), PluginError> {
    deferred.make_room(bytes);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    submit(Completion::new(move |r| {
        let _ = tx.send(r);
    }));
    match rx.try_recv() {
        Ok(result) => result,
        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
            deferred.writes.push(rx);
            deferred.queued_bytes += bytes;
            deferred.store.get_or_insert_with(|| store.clone());
            Ok(())
        }
        Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
            Err(PluginError::unavailable("write dropped"))
        }
    }
}
