//! Swapping the writer's logger between two batches (a reload, `Msg::SwapLog`), and
//! what stands in for a logger when neither the new one nor the old one opens.

use std::sync::Arc;
use std::time::Instant;

use kvs_plugin_api::PluginError;

use super::WriterLoop;
use crate::ports::Log;
use crate::write_request::LogSwap;

impl WriterLoop {
    /// Replaces the logger between two batches: closes it, opens the new one; if that
    /// fails, opens the old one again. The writes queued meanwhile wait in the queue and
    /// are answered once durable in whichever logger serves next.
    pub(super) fn swap_log(&mut self, swap: LogSwap) {
        let started = Instant::now();
        // A logger whose close failed may not have made everything durable or released
        // its storage: it is not trusted again either way, and the old one is opened
        // afresh (it re-reads its storage) rather than the new one over it.
        let closed = self.logger.close();
        let opened = match closed {
            Ok(()) => (swap.open)(),
            Err(e) => Err(format!("the logger in use did not close cleanly ({e})")),
        };
        let outcome = match opened {
            Ok(next) => {
                self.logger = next;
                self.stores_expiry = swap.stores_expiry;
                self.atomic_batch = swap.atomic_batch;
                Ok(self.logger.health())
            }
            Err(why) => match (swap.reopen)() {
                Ok(old) => {
                    self.logger = old;
                    Err(format!(
                        "{why}; the logger in use was reopened and keeps serving"
                    ))
                }
                Err(again) => {
                    self.logger = Box::new(Unusable(again.clone()));
                    Err(format!(
                        "{why}; reopening the logger in use failed too ({again}): writes fail \
                         until a reload opens a logger or kvs is restarted"
                    ))
                }
            },
        };
        tracing::info!(
            paused_ms = started.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "logger swap"
        );
        let _ = swap
            .done
            .send(outcome.map_err(|why| (why, self.logger.health())));
    }
}

/// The writer's logger after a failed swap whose old logger could not be reopened:
/// every append fails, saying why, and nothing is acknowledged.
struct Unusable(String);

impl Log for Unusable {
    fn append(&mut self, _batch: &[kvs_plugin_api::Event<'_>]) -> Result<(), PluginError> {
        Err(PluginError::unavailable(format!(
            "no logger: a swap failed and the old logger could not be reopened ({}); reload once the cause is fixed, or restart kvs",
            self.0
        )))
    }

    fn replay(
        &mut self,
        _sink: &mut dyn FnMut(&[kvs_plugin_api::Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    fn health(&self) -> Option<crate::ports::HealthCheck> {
        Some(Arc::new(|| false))
    }
}
