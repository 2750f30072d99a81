//! Plug-ins of plugin-api 1.1 and 1.2 (1.2 added no native types): the entry points
//! `KVS_PLUGIN_V1_1`, host services (`HostApi`: plug-ins log through the host) and a
//! store whose calls carry a `RequestContextRef`. Later generations reuse the last two,
//! so they are here once: [`host_box`], [`caller`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::library::RawLibrary;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RSlice, RStr, RVec};
use kvs_plugin_api::log::Level;
use kvs_plugin_api::native::WriteCallbackBox;
use kvs_plugin_api::native::v1_1::{
    self, HostApi, HostApi_TO, HostBox, LogRecord, RequestContextRef,
};
use kvs_plugin_api::{Consistency, Limits, PluginError};

use super::load::{checked, exported};
use super::store_handle::{GetReply, StoreHandle};
use crate::caller::Caller;
use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{Entry, Log, RunningFrontend};
use crate::store::Store;

/// The 1.1 entry points of a plug-in whose handshake says 1.1 or 1.2.
pub(super) fn load(raw: &'static RawLibrary, api: (u16, u16)) -> Result<Arc<dyn Entry>, String> {
    // SAFETY: a plug-in declaring 1.1 or 1.2 exports this symbol as a `v1_1::Exports`.
    // Its first field, the layout, is read and checked by abi_stable before the module
    // is used.
    let exports: &'static v1_1::Exports = unsafe { exported(raw, v1_1::SYMBOL, api, "1.1")? };
    Ok(Arc::new(V1_1(checked(
        exports.layout,
        &exports.module,
        "1.1",
    )?)))
}

struct V1_1(&'static v1_1::Module);

impl Entry for V1_1 {
    fn open_logger(
        &self,
        plugin: &Plugin,
        config: &str,
        _meter: Option<Arc<WasmMeter>>,
    ) -> Result<Box<dyn Log>, PluginError> {
        super::open_logger(self.0.open_logger, plugin, config)
    }

    fn start_frontend(
        &self,
        plugin: &Plugin,
        store: &Arc<Store>,
        config: &str,
    ) -> Result<Box<dyn RunningFrontend>, PluginError> {
        let store = v1_1::StoreApi_TO::from_value(StoreHandle::new(store, plugin), TD_Opaque);
        super::start_frontend(self.0.start_frontend, store, plugin, config)
    }
}

impl v1_1::StoreApi for StoreHandle {
    fn get(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>) -> GetReply {
        StoreHandle::get(self, ctx, key, Consistency::DEFAULT)
    }

    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        StoreHandle::put(self, ctx, key, value, done)
    }

    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        StoreHandle::delete(self, ctx, key, done)
    }

    fn is_ready(&self) -> bool {
        self.store.is_ready()
    }

    fn limits(&self) -> Limits {
        self.store.limits()
    }
}

/// The caller a native frontend (1.1 and later) described.
pub(super) fn caller<'a>(frontend: &'a str, ctx: &'a RequestContextRef<'a>) -> Caller<'a> {
    let s = |o: &'a ROption<RStr<'a>>| o.as_ref().map(|s| s.as_str()).into_option();
    Caller {
        frontend,
        bearer_token: s(&ctx.bearer_token),
        client_identity: s(&ctx.client_identity),
        traceparent: s(&ctx.traceparent),
        tracestate: s(&ctx.tracestate),
        deadline: ctx
            .deadline_ms
            .into_option()
            .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms))),
        peer: s(&ctx.peer),
        meter: None,
        defers_commit: false,
    }
}

/// The host services of one plug-in.
struct PluginHost {
    name: String,
}

impl HostApi for PluginHost {
    fn log(&self, record: &LogRecord<'_>) {
        let fields: Vec<String> = record
            .fields
            .iter()
            .map(|f| format!("{}={}", f.key.as_str(), f.value.as_str()))
            .collect();
        plugin_event(
            &self.name,
            record.level,
            record.target.as_str(),
            record.message.as_str(),
            &fields.join(" "),
        );
    }
}

/// The services handle for the plug-in named `name`.
pub(super) fn host_box(name: &str) -> HostBox {
    HostApi_TO::from_value(
        PluginHost {
            name: name.to_string(),
        },
        TD_Opaque,
    )
}

/// Emits a plug-in's log message as a `tracing` event (native and WASM plug-ins alike).
pub fn plugin_event(plugin: &str, level: Level, target: &str, message: &str, fields: &str) {
    macro_rules! event {
        ($level:expr) => {
            match (target.is_empty(), fields.is_empty()) {
                (true, true) => tracing::event!(target: "kvs::plugin", $level, plugin, "{message}"),
                (false, true) => {
                    tracing::event!(target: "kvs::plugin", $level, plugin, area = target, "{message}")
                }
                (true, false) => {
                    tracing::event!(target: "kvs::plugin", $level, plugin, fields = %fields, "{message}")
                }
                (false, false) => tracing::event!(
                    target: "kvs::plugin",
                    $level,
                    plugin,
                    area = target,
                    fields = %fields,
                    "{message}"
                ),
            }
        };
    }
    match level {
        Level::ERROR => event!(tracing::Level::ERROR),
        Level::WARN => event!(tracing::Level::WARN),
        Level::DEBUG => event!(tracing::Level::DEBUG),
        Level::TRACE => event!(tracing::Level::TRACE),
        _ => event!(tracing::Level::INFO),
    }
}
