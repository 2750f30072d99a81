//! Opening a logger plug-in, native or WASM, local or shared, through its [`Entry`]
//! (crate::ports::Entry).

use std::sync::Arc;

use anyhow::{Result, anyhow};
use kvs_plugin_api::capability::LOG_SHARED;

use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::ports::{HealthCheck, Log, SharedLog};

/// Opens the logger plug-in `plugin` with its config table.
pub fn open_logger(plugin: &Plugin, config: &str) -> Result<Box<dyn Log>> {
    open_logger_metered(plugin, config, None)
}

/// [`open_logger`], counting a WASM logger's guest calls in `meter`.
pub(super) fn open_logger_metered(
    plugin: &Plugin,
    config: &str,
    meter: Option<Arc<WasmMeter>>,
) -> Result<Box<dyn Log>> {
    plugin
        .entry
        .open_logger(plugin, config, meter)
        .map_err(|e| cannot_open(plugin, e))
}

fn cannot_open(plugin: &Plugin, e: kvs_plugin_api::PluginError) -> anyhow::Error {
    anyhow!(
        "cannot open the {} logger ({}): {e}",
        plugin.name,
        plugin.path.display()
    )
}

/// An open logger: one the host applies writes for, or a shared log whose delivery
/// applies them (`shared`).
pub(super) enum Opened {
    Local(Box<dyn Log>),
    Shared(Arc<dyn SharedLog>),
}

impl Opened {
    pub(super) fn health(&self) -> Option<HealthCheck> {
        match self {
            Opened::Local(l) => l.health(),
            Opened::Shared(s) => s.health(),
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
    if plugin.capabilities.iter().any(|c| c == LOG_SHARED) {
        let log = plugin.entry.open_shared_log(plugin, config);
        log.map(Opened::Shared).map_err(|e| cannot_open(plugin, e))
    } else {
        open_logger_metered(plugin, config, meter).map(Opened::Local)
    }
}
