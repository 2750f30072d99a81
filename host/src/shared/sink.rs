//! The follow sink: what a shared log delivers, applied to the map in log order.

use std::collections::HashSet;
use std::sync::Arc;

use kvs_plugin_api::event::split_deadline;
use kvs_plugin_api::{Event, EventKind};

use super::{Delivered, DeliveryState, complete};
use crate::ports::FollowSink;

/// The host's [`FollowSink`]: applies what the shared log delivers.
pub(super) struct Sink(pub(super) Arc<Delivered>);

impl FollowSink for Sink {
    fn begin_snapshot(&self) {
        self.0.state.lock().unwrap().snapshot = Some(HashSet::new());
    }

    fn end_snapshot(&self, position: u64) {
        let d = &self.0;
        let mut state = d.state.lock().unwrap();
        if let Some(seen) = state.snapshot.take() {
            // Keys the snapshot did not mention were deleted while this node was not
            // following (e.g. behind a compaction).
            let stale: Vec<Vec<u8>> = d
                .map
                .iter()
                .filter(|e| !seen.contains(e.key()))
                .map(|e| e.key().to_vec())
                .collect();
            for key in stale {
                d.metrics.bytes.add(d.map.remove(&key));
            }
        }
        let done = d.advance(&mut state, position);
        drop(state);
        complete(done, Ok(()));
    }

    fn deliver(&self, events: &[Event<'_>], through: u64) {
        let d = &self.0;
        let mut state = d.state.lock().unwrap();
        let (mut bytes, mut stale) = (0i64, 0u64);
        let live = state.snapshot.is_none();
        // The events of one position are one append (a transaction, a batch): readers
        // see all of them or none (`Map::apply_together`; on a shared log delivery is
        // all that changes a node's map, one delivery at a time).
        for group in events.chunk_by(|a, b| a.sequence == b.sequence) {
            let mut apply = || {
                for e in group {
                    match apply_event(d, &mut state, e) {
                        Some(changed) => bytes += changed,
                        None => stale += 1,
                    }
                }
            };
            if live && group.len() > 1 {
                d.map.apply_together(apply);
            } else {
                apply();
            }
        }
        if stale > 0 {
            tracing::error!(
                "the shared log re-delivered {stale} event(s) at or before position {}, which \
                 this node had applied; skipped",
                state.through
            );
        }
        state.events += events.len() as u64 - stale;
        d.metrics.bytes.add(bytes);
        if state.snapshot.is_none() {
            let done = d.advance(&mut state, through);
            drop(state);
            complete(done, Ok(()));
        }
    }
}

/// Applies one delivered event to the map: the change in bytes held, or `None` if it
/// is at or before what the map already reflects (skipped).
fn apply_event(d: &Delivered, state: &mut DeliveryState, e: &Event<'_>) -> Option<i64> {
    if let Some(seen) = state.snapshot.as_mut() {
        seen.insert(e.key.to_vec());
    } else if e.sequence <= state.through {
        // Already applied (or older): applying it again could undo a later write. A
        // log that re-sends is buggy; the map stays a prefix of it.
        return None;
    }
    Some(match e.kind {
        EventKind::PUT => d
            .map
            .insert(e.key.as_slice(), e.value.as_slice(), e.sequence, None),
        EventKind::PUT_UNTIL => match split_deadline(e.value.as_slice()) {
            // Kept even past its deadline (reads hide it): the log deletes it.
            Some((deadline, value)) => {
                d.map
                    .insert(e.key.as_slice(), value, e.sequence, Some(deadline))
            }
            None => {
                tracing::error!(
                    "the shared log delivered a PUT_UNTIL without a deadline at {}; skipped",
                    e.sequence
                );
                0
            }
        },
        EventKind::DELETE => d.map.remove(e.key.as_slice()),
        other => {
            tracing::error!(
                "the shared log delivered an event of unknown kind {} at {}; skipped",
                other.0,
                e.sequence
            );
            0
        }
    })
}
