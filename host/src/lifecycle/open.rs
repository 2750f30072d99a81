//! Opening a logger plug-in, native or WASM, local or shared, by the newest contract
//! generation it speaks.

use std::sync::Arc;

use abi_stable::std_types::RStr;
use anyhow::{Result, anyhow};
use kvs_plugin_api::PluginError;
use kvs_plugin_api::native::{LoggerBox, v1_3::SharedLoggerBox};

use crate::handles::host_box;
use crate::metrics::WasmMeter;
use crate::plugins::{Module, NativeModule, Plugin};

/// Opens the named logger plug-in with its config table.
pub fn open_logger(plugin: &Plugin, config: &str) -> Result<LoggerBox> {
    open_logger_metered(plugin, config, None)
}

/// [`open_logger`], counting a WASM logger's guest calls in `meter`.
pub(super) fn open_logger_metered(
    plugin: &Plugin,
    config: &str,
    meter: Option<Arc<WasmMeter>>,
) -> Result<LoggerBox> {
    let result: Result<_, PluginError> = match &plugin.module {
        Module::Native(native) => match (native.v1_3, native.v1_1) {
            (Some(v1_3), _) => {
                (v1_3.open_logger)(RStr::from_str(config), host_box(&plugin.name)).into()
            }
            (None, Some(v1_1)) => {
                (v1_1.open_logger)(RStr::from_str(config), host_box(&plugin.name)).into()
            }
            (None, None) => native.v1_0.open_logger()(RStr::from_str(config)).into(),
        },
        Module::Wasm => crate::wasm::open_logger(&plugin.path, &plugin.name, config, meter),
    };
    result.map_err(|e| {
        anyhow!(
            "cannot open the {} logger ({}): {e}",
            plugin.name,
            plugin.path.display()
        )
    })
}

/// An open logger: one the host applies writes for, or a shared log whose delivery
/// applies them (`shared`).
pub(super) enum Opened {
    Local(LoggerBox),
    Shared(Arc<SharedLoggerBox>),
}

impl Opened {
    pub(super) fn health_probe(&self) -> Option<kvs_plugin_api::native::HealthProbeBox> {
        match self {
            Opened::Local(l) => l.health_probe().into_option(),
            Opened::Shared(s) => s.health_probe().into_option(),
        }
    }

    pub(super) fn close(&mut self) {
        let _ = match self {
            Opened::Local(l) => l.close(),
            Opened::Shared(s) => s.close(),
        };
    }
}

/// Opens a logger plug-in, as a shared log if it declares `log:shared`.
pub(super) fn open_any(
    plugin: &Plugin,
    config: &str,
    meter: Option<Arc<WasmMeter>>,
) -> Result<Opened> {
    let shared = plugin
        .capabilities
        .iter()
        .any(|c| c == kvs_plugin_api::capability::LOG_SHARED);
    if !shared {
        return open_logger_metered(plugin, config, meter).map(Opened::Local);
    }
    let opened: Result<SharedLoggerBox, PluginError> = match &plugin.module {
        Module::Native(NativeModule {
            v1_3: Some(v1_3), ..
        }) => (v1_3.open_shared_logger)(RStr::from_str(config), host_box(&plugin.name)).into(),
        _ => Err(PluginError::invalid_input(
            "it declares log:shared but has no plugin-api 1.3 native entry points (WASM \
             loggers cannot share a log)",
        )),
    };
    opened.map(|l| Opened::Shared(Arc::new(l))).map_err(|e| {
        anyhow!(
            "cannot open the {} logger ({}): {e}",
            plugin.name,
            plugin.path.display()
        )
    })
}
