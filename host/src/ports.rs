//! The host's own view of its plug-ins: plain Rust traits that the writer, shared-log
//! delivery, the lifecycle and `kvs plugins check` are written against.
//!
//! Plug-ins are adapted to them at the edge — native ones by the adapter of their
//! contract generation ([`crate::native`]), WASM ones by [`crate::wasm`] — so nothing
//! past the edge knows how a plug-in was built, and no abi_stable type travels further.

use std::sync::Arc;
use std::time::Duration;

use kvs_plugin_api::{Event, PluginError};

use crate::metrics::WasmMeter;
use crate::plugins::Plugin;
use crate::store::Store;

/// Asks a logger, from any thread, whether it expects appends to succeed.
pub type HealthCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// A transaction log the host appends to and replays (a logger plug-in, or the writer's
/// side of a shared log). Called from one thread at a time.
pub trait Log: Send {
    /// Makes a batch durable, or fails without acknowledging any of it.
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError>;
    /// Hands every logged event to `sink`, in order, a chunk at a time.
    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError>;
    /// Flushes and releases; called once, last.
    fn close(&mut self) -> Result<(), PluginError>;
    /// The logger's health, if it reports one.
    fn health(&self) -> Option<HealthCheck>;
}

/// A log other kvs nodes append to as well, delivered back in log order.
pub trait SharedLog: Send + Sync {
    /// Appends a batch; the position of its last event.
    fn append(&self, batch: &[Event<'_>]) -> Result<u64, PluginError>;
    /// Starts delivering to `sink`: a snapshot, then events in log order.
    fn follow(&self, sink: Arc<dyn FollowSink>) -> Result<(), PluginError>;
    /// A position every write acknowledged anywhere before this call is at or before.
    fn barrier(&self) -> Result<u64, PluginError>;
    /// Stops delivery and releases.
    fn close(&self) -> Result<(), PluginError>;
    /// The log's health, if it reports one.
    fn health(&self) -> Option<HealthCheck>;
}

/// The host's side of a shared log's delivery.
pub trait FollowSink: Send + Sync {
    /// A snapshot starts.
    fn begin_snapshot(&self);
    /// The snapshot is complete as of `position`; keys it did not mention are gone.
    fn end_snapshot(&self, position: u64);
    /// The next events in log order, then the position delivered through.
    fn deliver(&self, events: &[Event<'_>], through: u64);
}

/// A frontend that is serving.
pub trait RunningFrontend: Send {
    /// Where clients reach it.
    fn endpoints(&self) -> Vec<String>;
    /// Stops gracefully, waiting at most `deadline` for requests in flight.
    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError>;
    /// Takes `plugin` (a new file of this frontend, or the same) with `table` while
    /// serving, keeping its listener and connections: a WASM frontend swaps its module,
    /// a native one of plugin-api 1.4+ may reconfigure itself. `None`: it cannot (its
    /// listener would change, or it does not know how), and the host replaces it
    /// instead — a new instance beside it, then this one drains.
    fn swap_in_place(&mut self, plugin: &Plugin, table: &str) -> Option<Result<(), PluginError>> {
        let _ = (plugin, table);
        None
    }
}

/// A plug-in's code as the host calls it: the entry points of its contract generation
/// (native) or its module (WASM). A call for the other kind is an `invalid input` error.
pub trait Entry: Send + Sync {
    /// Opens `plugin` as a logger with its config table; a WASM logger's guest calls
    /// are counted in `meter`.
    fn open_logger(
        &self,
        plugin: &Plugin,
        config: &str,
        meter: Option<Arc<WasmMeter>>,
    ) -> Result<Box<dyn Log>, PluginError>;
    /// Opens `plugin` as a shared log (capability `log:shared`).
    fn open_shared_log(
        &self,
        plugin: &Plugin,
        config: &str,
    ) -> Result<Arc<dyn SharedLog>, PluginError> {
        let _ = config;
        Err(PluginError::invalid_input(format!(
            "{} cannot share a log: only native loggers of plugin-api 1.3 or later that \
             declare log:shared can",
            plugin.name
        )))
    }
    /// Starts `plugin` as a frontend serving `store`, with its config table.
    fn start_frontend(
        &self,
        plugin: &Plugin,
        store: &Arc<Store>,
        config: &str,
    ) -> Result<Box<dyn RunningFrontend>, PluginError>;
}

#[cfg(test)]
pub(crate) mod recording;
