//! The host functions a guest imports: the store (`kvs_get`, `kvs_put`, `kvs_delete`),
//! reached as the caller whose request the call serves, and `kvs_log`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use extism::{CurrentPlugin, Function, PTR, UserData, Val};
use kvs_plugin_api::wire::{self, Reader, Writer};
use kvs_plugin_api::{ErrorCode, PluginError, RequestContext};

use crate::caller::Caller;
use crate::store::Store;
use crate::write_request::Completion;

/// The request a guest call on this thread is serving: the frontend's name, what the
/// client presented, when it arrived. Set around each `kvs_http_handle` call (a call
/// runs start to end on one thread), read by the store host functions, so a guest's
/// store calls carry its client's context without the guest having to (or being able
/// to) supply it.
pub(super) struct CallContext {
    pub(super) frontend: Arc<str>,
    /// Where the frontend's requests are counted.
    pub(super) meter: Arc<crate::metrics::FrontendMeter>,
    pub(super) context: RequestContext,
    pub(super) received: Instant,
}

thread_local! {
    pub(super) static CALL_CONTEXT: RefCell<Option<CallContext>> = const { RefCell::new(None) };
}

/// The store the host functions reach: a frontend's store, or none (handshake, loggers).
pub(super) type StoreRef = Option<Arc<Store>>;

/// The store calls a guest can import.
#[derive(Debug, Clone, Copy)]
enum StoreCall {
    /// `kvs_get`: key -> result(found:u8 value:bytes).
    Get,
    /// `kvs_put`: key value -> result().
    Put,
    /// `kvs_delete`: key -> result().
    Delete,
}

/// The host functions `kvs_get`, `kvs_put` and `kvs_delete`, reaching `store`.
pub(super) fn store_functions(store: StoreRef) -> Vec<Function> {
    [
        ("kvs_get", StoreCall::Get),
        ("kvs_put", StoreCall::Put),
        ("kvs_delete", StoreCall::Delete),
    ]
    .into_iter()
    .map(|(name, call)| {
        Function::new(
            name,
            [PTR],
            [PTR],
            UserData::new((store.clone(), call)),
            host_store,
        )
    })
    .collect()
}

/// One store call from a guest: decode, run as the caller whose request this call
/// serves (see [`CallContext`]), encode the result frame.
fn host_store(
    plugin: &mut CurrentPlugin,
    inputs: &[Val],
    outputs: &mut [Val],
    data: UserData<(StoreRef, StoreCall)>,
) -> Result<(), extism::Error> {
    let input: Vec<u8> = plugin.memory_get_val(&inputs[0])?;
    let (store, call) = data.get()?.lock().unwrap().clone();
    let reply = CALL_CONTEXT.with_borrow(|context| match (store, context) {
        (Some(store), Some(context)) => {
            let caller = Caller {
                meter: Some(&context.meter),
                ..Caller::from_context(&context.frontend, &context.context, context.received)
            };
            match run(&store, &caller, call, &mut Reader::new(&input)) {
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

fn run(
    store: &Store,
    caller: &Caller<'_>,
    call: StoreCall,
    r: &mut Reader<'_>,
) -> Result<Vec<u8>, PluginError> {
    let key = r.bytes().map_err(bad)?;
    match call {
        StoreCall::Get => {
            let mut w = Writer::default();
            match store.get_as(caller, key)? {
                Some(v) => w.u8(1).bytes(&v),
                None => w.u8(0),
            };
            Ok(w.0)
        }
        StoreCall::Put => {
            let (key, value) = (key.to_vec(), r.bytes().map_err(bad)?.to_vec());
            wait_write(|done| store.put_as(caller, key, value, done))
        }
        StoreCall::Delete => {
            let key = key.to_vec();
            wait_write(|done| store.delete_as(caller, key, done))
        }
    }
}

/// `kvs_log`: a guest's log message, emitted like a native plug-in's.
pub(super) fn host_log(
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
pub(super) fn in_multi_thread_runtime() -> bool {
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
