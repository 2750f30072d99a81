//! Plug-ins of plugin-api 1.7: 1.4's entry points, but `start_frontend` hands the
//! frontend 1.7's `StoreApi` (1.4's and `commit`).

use std::sync::Arc;

use abi_stable::library::RawLibrary;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RVec};
use kvs_plugin_api::native::v1_1::RequestContextRef;
use kvs_plugin_api::native::v1_3::StoreStats;
use kvs_plugin_api::native::v1_7::UpdateCallbackBox;
use kvs_plugin_api::native::{ENTRIES_SYMBOL, Entries, WriteCallbackBox, v1_7};
use kvs_plugin_api::{Consistency, Limits, PluginError};

use super::load::{checked, exported};
use super::store_handle::{GetReply, StoreHandle};
use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{Entry, Log, RunningFrontend, SharedLog};
use crate::store::Store;

/// The 1.7 entry points of a plug-in whose handshake says 1.7 or later.
pub(super) fn load(raw: &'static RawLibrary, api: (u16, u16)) -> Result<Arc<dyn Entry>, String> {
    // SAFETY: a plug-in declaring 1.7 exports this symbol as `Entries<v1_7::Module>`;
    // its layout is checked before the module is used.
    let entries: &'static Entries<v1_7::Module> =
        unsafe { exported(raw, ENTRIES_SYMBOL, api, "1.7")? };
    Ok(Arc::new(V1_7(checked(
        entries.layout,
        &entries.module,
        "1.7",
    )?)))
}

struct V1_7(&'static v1_7::Module);

impl Entry for V1_7 {
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
        let store = v1_7::StoreApi_TO::from_value(StoreHandle::new(store, plugin), TD_Opaque);
        let started = (self.0.start_frontend)(
            store,
            RStr::from_str(config),
            super::v1_1::host_box(&plugin.name),
        );
        Result::from(started).map(|f| super::v1_4::frontend(f, plugin))
    }
}

impl v1_7::StoreApi for StoreHandle {
    super::v1_4::store_api_1_4!();

    fn commit(&self) {
        StoreHandle::commit(self)
    }
}
