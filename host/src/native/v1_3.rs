//! Plug-ins of plugin-api 1.3: the entry points `KVS_PLUGIN_V1_3` — a store that also
//! answers `stats` and `get_consistent`, and shared loggers.

use std::sync::Arc;

use abi_stable::library::RawLibrary;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RSlice, RVec};
use kvs_plugin_api::native::WriteCallbackBox;
use kvs_plugin_api::native::v1_1::RequestContextRef;
use kvs_plugin_api::native::v1_3::{self, StoreStats};
use kvs_plugin_api::{Consistency, Limits, PluginError};

use super::load::{checked, exported};
use super::store_handle::{GetReply, StoreHandle};
use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{Entry, Log, RunningFrontend, SharedLog};
use crate::store::Store;

/// The 1.3 entry points of a plug-in whose handshake says 1.3.
pub(super) fn load(raw: &'static RawLibrary, api: (u16, u16)) -> Result<Arc<dyn Entry>, String> {
    // SAFETY: a plug-in declaring 1.3 exports this symbol as a `v1_3::Exports`; its
    // layout is checked before the module is used.
    let exports: &'static v1_3::Exports = unsafe { exported(raw, v1_3::SYMBOL, api, "1.3")? };
    Ok(Arc::new(V1_3(checked(
        exports.layout,
        &exports.module,
        "1.3",
    )?)))
}

struct V1_3(&'static v1_3::Module);

impl Entry for V1_3 {
    fn open_logger(
        &self,
        plugin: &Plugin,
        config: &str,
        _meter: Option<Arc<WasmMeter>>,
    ) -> Result<Box<dyn Log>, PluginError> {
        super::open_logger(self.0.open_logger, plugin, config)
    }

    fn open_shared_log(
        &self,
        plugin: &Plugin,
        config: &str,
    ) -> Result<Arc<dyn SharedLog>, PluginError> {
        super::open_shared_log(self.0.open_shared_logger, plugin, config)
    }

    fn start_frontend(
        &self,
        plugin: &Plugin,
        store: &Arc<Store>,
        config: &str,
    ) -> Result<Box<dyn RunningFrontend>, PluginError> {
        let store = v1_3::StoreApi_TO::from_value(StoreHandle::new(store, plugin), TD_Opaque);
        super::start_frontend(self.0.start_frontend, store, plugin, config)
    }
}

impl v1_3::StoreApi for StoreHandle {
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

    fn stats(&self) -> StoreStats {
        stats(&self.store)
    }

    fn get_consistent(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: u8,
    ) -> GetReply {
        StoreHandle::get(self, ctx, key, Consistency(consistency))
    }
}

/// The store's figures as 1.3's `StoreStats` (1.4 passes the same type).
pub(super) fn stats(store: &Store) -> StoreStats {
    let s = store.stats();
    StoreStats {
        keys: s.keys,
        data_bytes: s.data_bytes,
    }
}
