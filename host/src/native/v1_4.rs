//! Plug-ins of plugin-api 1.4, which export their own generation only: the handshake
//! and `KVS_PLUGIN_ENTRIES`, an `Entries` of 1.4's `Module`.

use std::sync::Arc;
use std::time::Duration;

use abi_stable::library::RawLibrary;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RVec};
use kvs_plugin_api::native::v1_1::RequestContextRef;
use kvs_plugin_api::native::v1_3::StoreStats;
use kvs_plugin_api::native::v1_4::UpdateCallbackBox;
use kvs_plugin_api::native::{ENTRIES_SYMBOL, Entries, WriteCallbackBox, v1_4};
use kvs_plugin_api::{Consistency, Limits, PluginError};

use super::load::{checked, exported};
use super::store_handle::{GetReply, StoreHandle};
use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{Entry, Log, RunningFrontend, SharedLog};
use crate::store::Store;

/// The 1.4 entry points of a plug-in whose handshake says 1.4.
pub(super) fn load(raw: &'static RawLibrary, api: (u16, u16)) -> Result<Arc<dyn Entry>, String> {
    // SAFETY: a plug-in declaring 1.4 exports this symbol as `Entries<v1_4::Module>`;
    // its layout is checked before the module is used.
    let entries: &'static Entries<v1_4::Module> =
        unsafe { exported(raw, ENTRIES_SYMBOL, api, "1.4")? };
    Ok(Arc::new(V1_4(checked(
        entries.layout,
        &entries.module,
        "1.4",
    )?)))
}

struct V1_4(&'static v1_4::Module);

impl Entry for V1_4 {
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
        let store = v1_4::StoreApi_TO::from_value(StoreHandle::new(store, plugin), TD_Opaque);
        let started = (self.0.start_frontend)(
            store,
            RStr::from_str(config),
            super::v1_1::host_box(&plugin.name),
        );
        Result::from(started).map(|f| frontend(f, plugin))
    }
}

/// A running 1.4 (or later) frontend, as the host drives it.
pub(super) fn frontend(frontend: v1_4::FrontendBox, plugin: &Plugin) -> Box<dyn RunningFrontend> {
    Box::new(Frontend {
        frontend,
        hash: plugin.hash.clone(),
    })
}

/// A 1.4 (or later) frontend: it may take a new table while serving (`reconfigure`).
struct Frontend {
    frontend: v1_4::FrontendBox,
    /// The file it runs: a new file is never a reconfiguration.
    hash: String,
}

impl RunningFrontend for Frontend {
    fn endpoints(&self) -> Vec<String> {
        self.frontend
            .endpoints()
            .into_iter()
            .map(|e| e.into_string())
            .collect()
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        self.frontend.stop(ms).into()
    }

    fn swap_in_place(&mut self, plugin: &Plugin, table: &str) -> Option<Result<(), PluginError>> {
        if plugin.hash != self.hash {
            return None;
        }
        self.frontend
            .reconfigure(RStr::from_str(table))
            .into_option()
            .map(Result::from)
    }
}

/// 1.4's store methods over [`StoreHandle`], shared by every later generation's
/// `StoreApi` (each of which has them and adds its own).
macro_rules! store_api_1_4 {
    () => {
        fn get(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>) -> GetReply {
            StoreHandle::get(self, ctx, key, Consistency::DEFAULT)
        }

        fn get_consistent(
            &self,
            ctx: &RequestContextRef<'_>,
            key: RSlice<'_, u8>,
            consistency: u8,
        ) -> GetReply {
            StoreHandle::get(self, ctx, key, Consistency(consistency))
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
            super::v1_3::stats(&self.store)
        }

        fn check(
            &self,
            ctx: &RequestContextRef<'_>,
            action: u8,
            key: RSlice<'_, u8>,
        ) -> RResult<(), PluginError> {
            StoreHandle::check(self, ctx, action, key).into()
        }

        fn get_entry(
            &self,
            ctx: &RequestContextRef<'_>,
            key: RSlice<'_, u8>,
            consistency: u8,
        ) -> GetReply {
            StoreHandle::get_entry(self, ctx, key, Consistency(consistency))
        }

        fn update(&self, ctx: &RequestContextRef<'_>, update: RVec<u8>, done: UpdateCallbackBox) {
            StoreHandle::update(self, ctx, update, done)
        }
    };
}
pub(super) use store_api_1_4;

impl v1_4::StoreApi for StoreHandle {
    store_api_1_4!();
}
