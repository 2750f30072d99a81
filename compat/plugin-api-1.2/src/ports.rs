//! The two ports a plug-in author implements, in plain Rust.
//!
//! [`export_plugin!`](crate::export_plugin) wraps them in the FFI-safe objects of
//! [`native`](crate::native), catching panics on the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::PluginError;
use crate::event::Event;

/// Where the host's writes become durable, and where they come back from on start.
///
/// The host calls a logger from one thread at a time (its writer), so methods take
/// `&mut self`. The call order is: `replay` once, then any number of `append`, then
/// `close`.
pub trait TransactionLogger: Send + 'static {
    /// Makes `batch` durable, in order, as one unit.
    ///
    /// **Durable** means: once this returns `Ok`, the events survive a crash of the
    /// process (and, under the logger's strictest sync policy, of the machine) and are
    /// returned by every later `replay`. The host acknowledges the writes to clients only
    /// after this returns `Ok`. On `Err`, none of the batch may be replayed later *if it
    /// can be helped*; the host will not reuse the batch's sequence numbers, so a partly
    /// written batch is at worst replayed, never confused with a later one.
    ///
    /// A logger should do one write and at most one sync per call, whatever the batch
    /// size: the host gathers concurrent writes into one batch to amortise that sync.
    /// Return [`ErrorCode::UNAVAILABLE`](crate::ErrorCode::UNAVAILABLE) when the backing
    /// store is down and a retry may succeed.
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError>;

    /// Feeds every logged event to `sink` in sequence order, in chunks of any size.
    ///
    /// Called once, before the first `append`. If `sink` returns an error, stop and
    /// return it.
    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError>;

    /// Flushes anything buffered and releases resources. No call follows.
    fn close(&mut self) -> Result<(), PluginError>;

    /// A flag this logger keeps current, saying whether appends are expected to succeed
    /// (e.g. false while its database is unreachable). The host folds it into readiness,
    /// so probes see "not ready" while writes would fail. Asked once, after opening;
    /// `None` (the default) means "always healthy".
    fn health(&self) -> Option<Health> {
        None
    }
}

/// A shared health flag a logger flips and the host reads from any thread.
#[derive(Clone, Debug)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// A flag starting out healthy or not.
    pub fn new(healthy: bool) -> Self {
        Health(Arc::new(AtomicBool::new(healthy)))
    }

    /// Sets the flag.
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Release);
    }

    /// Reads the flag.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A running frontend: it serves clients by calling the [`Store`](crate::Store) it was
/// started with.
///
/// A native frontend runs its own threads (e.g. its own tokio runtime): the host's async
/// runtime, if any, does not cross the library boundary.
pub trait Frontend: Send + 'static {
    /// Where clients reach it, e.g. `["http://127.0.0.1:8080"]`. The host logs these.
    fn endpoints(&self) -> Vec<String> {
        Vec::new()
    }

    /// Stops gracefully: stop accepting, let in-flight requests finish for at most
    /// `deadline`, then return. No call follows.
    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError>;
}
