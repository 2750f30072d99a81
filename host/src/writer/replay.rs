//! Start-up replay: the logger's events into the map, in order.

use std::time::Instant;

use kvs_plugin_api::event::split_deadline;
use kvs_plugin_api::{Event, EventKind, PluginError};

use crate::ports::Log;
use crate::store::Map;

/// What replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Events replayed.
    pub events: u64,
    /// The last sequence number seen (0 for an empty log).
    pub last_sequence: u64,
    /// Bytes of keys and values in the map afterwards.
    pub data_bytes: i64,
}

struct MapSink<'m> {
    map: &'m Map,
    stats: ReplayStats,
    started: Instant,
}

impl MapSink<'_> {
    fn accept(&mut self, events: &[Event<'_>]) -> Result<(), PluginError> {
        for e in events.iter() {
            if self.stats.events > 0 && e.sequence <= self.stats.last_sequence {
                return Err(PluginError::internal(format!(
                    "log out of order: sequence {} follows {}; the log is damaged",
                    e.sequence, self.stats.last_sequence
                )));
            }
            match e.kind {
                EventKind::PUT => {
                    self.stats.data_bytes +=
                        self.map
                            .insert(e.key.as_slice(), e.value.as_slice(), e.sequence, None);
                }
                EventKind::PUT_UNTIL => {
                    // Kept even if its deadline has passed: reads hide it, and the sweep
                    // logs its removal, so the log's compaction can drop it.
                    let (deadline, value) =
                        split_deadline(e.value.as_slice()).ok_or_else(|| {
                            PluginError::internal(format!(
                                "event {} is a PUT_UNTIL without a deadline; the log is damaged",
                                e.sequence
                            ))
                        })?;
                    self.stats.data_bytes +=
                        self.map
                            .insert(e.key.as_slice(), value, e.sequence, Some(deadline));
                }
                EventKind::DELETE => {
                    self.stats.data_bytes += self.map.remove(e.key.as_slice());
                }
                other => {
                    return Err(PluginError::internal(format!(
                        "unknown event kind {} at sequence {}; this log was written by a newer kvs",
                        other.0, e.sequence
                    )));
                }
            }
            self.stats.last_sequence = e.sequence;
            self.stats.events += 1;
            if self.stats.events.is_multiple_of(1_000_000) {
                tracing::info!(
                    events = self.stats.events,
                    elapsed_ms = self.started.elapsed().as_millis() as u64,
                    "replaying"
                );
            }
        }
        Ok(())
    }
}

/// Replays the logger's events into `map`, checking that sequence numbers increase.
pub fn replay(logger: &mut dyn Log, map: &Map) -> Result<ReplayStats, PluginError> {
    let mut sink = MapSink {
        map,
        stats: ReplayStats::default(),
        started: Instant::now(),
    };
    logger.replay(&mut |events| sink.accept(events))?;
    Ok(sink.stats)
}
