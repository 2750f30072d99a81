//! The host functions a guest imports: the store (`kvs_get`, `kvs_put`, `kvs_delete`),
//! reached as the caller whose request the call serves, and `kvs_log`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use extism::{CurrentPlugin, UserData, Val};
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
    pub(super) context: RequestContext,
    pub(super) received: Instant,
}

thread_local! {
    pub(super) static CALL_CONTEXT: RefCell<Option<CallContext>> = const { RefCell::new(None) };
}

/// The store the host functions reach: a frontend's store, or none (handshake, loggers).
pub(super) type StoreRef = Option<Arc<Store>>;

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

pub(super) fn host_get(
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

pub(super) fn host_put(
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

pub(super) fn host_delete(
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
