//! What the host hands to native plug-ins: its store, as each contract version sees it,
//! and its services (plugin-api 1.1).
//!
//! * [`store_box`] / [`store_box_v1_1`] / [`store_box_v1_3`]: the host's [`Store`]
//!   behind the 1.0, 1.1 and 1.3 `StoreApi` objects. Both name the frontend they were made for, so every call
//!   reaches the store as a [`Caller`] of that frontend; a 1.0 caller is anonymous.
//! * [`host_box`]: `HostApi` for one plug-in: its log messages become `tracing` events
//!   under the target `kvs::plugin`, with a `plugin` field naming it.

use std::sync::Arc;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RVec},
};
use kvs_plugin_api::{
    Limits, PluginError,
    log::Level,
    native::{
        StoreApi, StoreApi_TO, StoreBox, WriteCallbackBox,
        v1_1::{self, HostApi, HostApi_TO, HostBox, LogRecord, RequestContextRef},
        v1_3::{self, StoreStats},
    },
};

use crate::caller::Caller;
use crate::metrics::FrontendMeter;
use crate::store::{Store, held};
use crate::telemetry;
use crate::write_request::Completion;

/// The store as one frontend reaches it.
struct StoreHandle {
    store: Arc<Store>,
    frontend: Arc<str>,
    meter: Arc<FrontendMeter>,
}

impl StoreHandle {
    fn new(store: &Arc<Store>, frontend: &str) -> StoreHandle {
        StoreHandle {
            store: store.clone(),
            frontend: frontend.into(),
            meter: store.metrics().frontend(frontend),
        }
    }

    fn caller<'a>(&'a self, ctx: &'a RequestContextRef<'a>) -> Caller<'a> {
        Caller {
            meter: Some(&self.meter),
            ..Caller::from_ffi(&self.frontend, ctx)
        }
    }
}

fn completion(mut done: WriteCallbackBox) -> Completion {
    Completion::new(move |r| done.complete(r.into()))
}

fn get_reply(r: Result<Option<Vec<u8>>, PluginError>) -> RResult<ROption<RVec<u8>>, PluginError> {
    r.map(|v| v.map(RVec::from).into()).into()
}

/// A 1.0 frontend cannot carry a context: its calls are the 1.1 ones with an empty one,
/// i.e. an anonymous caller of that frontend.
impl StoreApi for StoreHandle {
    fn get(&self, key: RSlice<'_, u8>) -> RResult<ROption<RVec<u8>>, PluginError> {
        v1_1::StoreApi::get(self, &RequestContextRef::default(), key)
    }

    fn put(&self, key: RVec<u8>, value: RVec<u8>, done: WriteCallbackBox) {
        v1_1::StoreApi::put(self, &RequestContextRef::default(), key, value, done)
    }

    fn delete(&self, key: RVec<u8>, done: WriteCallbackBox) {
        v1_1::StoreApi::delete(self, &RequestContextRef::default(), key, done)
    }

    fn is_ready(&self) -> bool {
        v1_1::StoreApi::is_ready(self)
    }

    fn limits(&self) -> Limits {
        v1_1::StoreApi::limits(self)
    }
}

impl v1_1::StoreApi for StoreHandle {
    fn get(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
    ) -> RResult<ROption<RVec<u8>>, PluginError> {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "get");
        let _in_span = span.enter();
        get_reply(self.store.get_as(&caller, key.as_slice()))
    }

    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "put");
        let _in_span = span.enter();
        let done = held(span.clone(), completion(done));
        self.store
            .put_as(&caller, key.into_vec(), value.into_vec(), done);
    }

    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "delete");
        let _in_span = span.enter();
        let done = held(span.clone(), completion(done));
        self.store.delete_as(&caller, key.into_vec(), done);
    }

    fn is_ready(&self) -> bool {
        self.store.is_ready()
    }

    fn limits(&self) -> Limits {
        self.store.limits()
    }
}

/// 1.3 is 1.1 plus `stats`.
impl v1_3::StoreApi for StoreHandle {
    fn get(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
    ) -> RResult<ROption<RVec<u8>>, PluginError> {
        v1_1::StoreApi::get(self, ctx, key)
    }

    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        v1_1::StoreApi::put(self, ctx, key, value, done)
    }

    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        v1_1::StoreApi::delete(self, ctx, key, done)
    }

    fn is_ready(&self) -> bool {
        self.store.is_ready()
    }

    fn limits(&self) -> Limits {
        self.store.limits()
    }

    fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    fn get_consistent(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: u8,
    ) -> RResult<ROption<RVec<u8>>, PluginError> {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "get");
        let _in_span = span.enter();
        let consistency = kvs_plugin_api::Consistency(consistency);
        get_reply(
            self.store
                .get_as_consistent(&caller, key.as_slice(), consistency),
        )
    }
}

/// A 1.0 store object for the frontend `frontend`.
pub fn store_box(store: &Arc<Store>, frontend: &str) -> StoreBox {
    StoreApi_TO::from_value(StoreHandle::new(store, frontend), TD_Opaque)
}

/// A 1.1 store object for the frontend `frontend`.
pub fn store_box_v1_1(store: &Arc<Store>, frontend: &str) -> v1_1::StoreBox {
    v1_1::StoreApi_TO::from_value(StoreHandle::new(store, frontend), TD_Opaque)
}

/// A 1.3 store object for the frontend `frontend`.
pub fn store_box_v1_3(store: &Arc<Store>, frontend: &str) -> v1_3::StoreBox {
    v1_3::StoreApi_TO::from_value(StoreHandle::new(store, frontend), TD_Opaque)
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
pub fn host_box(name: &str) -> HostBox {
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
