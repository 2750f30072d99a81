//! WASM plug-ins: `.wasm` Extism guests behind the same ports as native plug-ins.
//!
//! * [`handshake`]: instantiate with default limits, call `kvs_handshake`, check the
//!   version with the same rule and messages as native plug-ins.
//! * [`open_logger`]: a `WasmLogger` — one instance, reopened after a trap — behind the
//!   host's [`Log`](crate::ports::Log) port, so the writer cannot tell it from a native
//!   logger.
//! * [`entry`]: all of these as one plug-in's [`Entry`], which the lifecycle calls.
//! * [`start_frontend`]: the host owns the listener (the sandbox has no sockets): an
//!   axum server that answers `/healthz` and `/readyz` itself and hands every other
//!   request to `kvs_http_handle` on an instance from a pool. An instance serves one
//!   call at a time; one that traps or times out is dropped, never reused. Calls run on
//!   the server's async workers; a long one, or a durable write, hands its worker's
//!   other tasks to another thread (`hand_off_worker`). A guest's writes are deferred
//!   (queued, not waited for) and settled before its answer is sent.
//!
//! * [`start_stream_frontend`] (1.3): the host owns a TCP listener; each connection
//!   gets an instance of its own and the guest sees its bytes (`kvs_stream_open`,
//!   `kvs_stream_data`, `kvs_stream_close`).
//!
//! Every instance gets a memory cap and a per-call timeout; WASI without network, and
//! no file system unless the operator grants `data_dir`, mounted at `/data`. Those
//! sandbox settings are keys of the plug-in's own table that the host takes out before
//! handing the rest to the guest.
//!
//! Modules: [`sandbox`] (the settings), `module` (compile, instantiate, call,
//! handshake), `host_fns` (what guests import), `logger`, `http`, `stream`.

mod dir_lock;
mod direct;
mod host_fns;
mod http;
mod logger;
mod module;
pub mod sandbox;
mod stream;

pub use http::start_frontend;
pub use logger::open_logger;
pub(crate) use module::read_module;
pub use module::{Source, handshake};
pub use sandbox::Sandbox;
pub use stream::start_stream_frontend;

use std::sync::Arc;

use kvs_plugin_api::{PluginError, capability};

use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{Entry, Log, RunningFrontend};
use crate::store::Store;

/// A `.wasm` plug-in's entry points: compiled with its sandbox settings when opened.
pub fn entry() -> Arc<dyn Entry> {
    Arc::new(WasmEntry)
}

struct WasmEntry;

impl Entry for WasmEntry {
    fn open_logger(
        &self,
        plugin: &Plugin,
        config: &str,
        meter: Option<Arc<WasmMeter>>,
    ) -> Result<Box<dyn Log>, PluginError> {
        open_logger(plugin.wasm_source(), &plugin.name, config, meter)
    }

    fn start_frontend(
        &self,
        plugin: &Plugin,
        store: &Arc<Store>,
        config: &str,
    ) -> Result<Box<dyn RunningFrontend>, PluginError> {
        if plugin
            .capabilities
            .iter()
            .any(|c| c == capability::FRONTEND_STREAM)
        {
            start_stream_frontend(
                plugin.wasm_source(),
                &plugin.name,
                store,
                plugin.api.1,
                config,
            )
        } else {
            start_frontend(
                plugin.wasm_source(),
                &plugin.name,
                store,
                plugin.api.1,
                config,
            )
        }
    }
}
