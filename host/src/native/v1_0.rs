//! Plug-ins of plugin-api 1.0: abi_stable's root module ([`PluginModRef`]), no host
//! services, a store whose calls carry no context (an anonymous caller).

use std::sync::Arc;

use abi_stable::library::{RawLibrary, lib_header_from_raw_library};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RSlice, RStr, RVec};
use kvs_plugin_api::native::v1_1::RequestContextRef;
use kvs_plugin_api::native::{PluginModRef, StoreApi, StoreApi_TO, WriteCallbackBox};
use kvs_plugin_api::{API_MAJOR, API_MINOR, Consistency, Limits, PluginError};

use super::load::one_line;
use super::store_handle::{GetReply, StoreHandle};
use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{Entry, Log, RunningFrontend};
use crate::store::Store;

/// The root module of a plug-in whose handshake says 1.0.
pub(super) fn load(raw: &'static RawLibrary, api: (u16, u16)) -> Result<Arc<dyn Entry>, String> {
    // SAFETY: the library is leaked by the caller, so the 'static references abi_stable
    // hands out stay valid.
    let module = unsafe { lib_header_from_raw_library(raw) }
        .and_then(|header| header.init_root_module::<PluginModRef>())
        .map_err(|e| {
            format!(
                "its handshake says plugin-api {}.{}, but its exported module does not match \
                 this kvs's plugin-api 1.0 root module: rebuild the plug-in against plugin-api \
                 {API_MAJOR}.{API_MINOR} ({})",
                api.0,
                api.1,
                one_line(&e.to_string())
            )
        })?;
    Ok(Arc::new(V1_0(module)))
}

struct V1_0(PluginModRef);

impl Entry for V1_0 {
    fn open_logger(
        &self,
        _plugin: &Plugin,
        config: &str,
        _meter: Option<Arc<WasmMeter>>,
    ) -> Result<Box<dyn Log>, PluginError> {
        super::logger(self.0.open_logger()(RStr::from_str(config)))
    }

    fn start_frontend(
        &self,
        plugin: &Plugin,
        store: &Arc<Store>,
        config: &str,
    ) -> Result<Box<dyn RunningFrontend>, PluginError> {
        let store = StoreApi_TO::from_value(StoreHandle::new(store, plugin), TD_Opaque);
        super::frontend(self.0.start_frontend()(store, RStr::from_str(config)))
    }
}

/// A 1.0 frontend cannot carry a context: its calls are an anonymous caller of it.
impl StoreApi for StoreHandle {
    fn get(&self, key: RSlice<'_, u8>) -> GetReply {
        StoreHandle::get(
            self,
            &RequestContextRef::default(),
            key,
            Consistency::DEFAULT,
        )
    }

    fn put(&self, key: RVec<u8>, value: RVec<u8>, done: WriteCallbackBox) {
        StoreHandle::put(self, &RequestContextRef::default(), key, value, done)
    }

    fn delete(&self, key: RVec<u8>, done: WriteCallbackBox) {
        StoreHandle::delete(self, &RequestContextRef::default(), key, done)
    }

    fn is_ready(&self) -> bool {
        self.store.is_ready()
    }

    fn limits(&self) -> Limits {
        self.store.limits()
    }
}
