//! The expiry sweep: removals of keys past their deadline, added to the writer's
//! batches at a bounded rate (on a local log; a shared log's own expiry removes them).

use std::time::Instant;

use super::{Acknowledge, WriterLoop};
use crate::map::now_ms;
use crate::write_request::{Completion, WriteOp, WriteRequest};

/// How often the sweep looks for expired keys.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Most expired keys one sweep removes (so at most 10,000 a second).
const SWEEP_MAX_KEYS: usize = 1000;

impl WriterLoop {
    /// Adds the sweep's removals of expired keys to `batch`, at most
    /// [`SWEEP_MAX_KEYS`] every [`SWEEP_EVERY`], so expiry costs a bounded share of the
    /// writer however many keys expire at once.
    pub(super) fn sweep_into(&mut self, batch: &mut Vec<WriteRequest>) {
        let now = Instant::now();
        if now < self.next_sweep || matches!(self.acknowledge, Acknowledge::Handoff(_)) {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        for (key, revision) in self.map.expired(now_ms(), SWEEP_MAX_KEYS) {
            batch.push(WriteRequest {
                op: WriteOp::Expire(key.into(), revision),
                done: Completion::new(|_| {}),
                trace: tracing::Span::none(),
                admitted: Default::default(),
            });
        }
    }

    /// How long the writer may wait for a write before the sweep is due, if some key
    /// has a deadline.
    pub(super) fn sweep_wait(&self) -> Option<std::time::Duration> {
        let deadline = self.map.next_deadline()?;
        let until_deadline = deadline.saturating_sub(now_ms());
        let until_tick = self.next_sweep.saturating_duration_since(Instant::now());
        Some(until_tick.max(std::time::Duration::from_millis(until_deadline)))
    }
}
