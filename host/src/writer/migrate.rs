//! The writer's part in backups and migrations: beginning a cut of the map between two
//! batches, copying what it logs to a migration's new logger (the tee), and switching
//! to that logger.

use std::sync::atomic::Ordering;
use std::time::Instant;

use kvs_plugin_api::{Event, EventKind, PluginError};

use super::{Acknowledge, WriterLoop};
use crate::write_request::{CutRequest, LoggedEvent, Switch, Switched};

impl WriterLoop {
    /// Begins a cut as of the last write applied. For a migration, the cut's keys are
    /// numbered right after its point in the new logger, so the writer skips those
    /// numbers, and from now on copies each batch it logs to the tee.
    pub(super) fn begin_cut(&mut self, request: CutRequest) {
        let cut = match &mut self.acknowledge {
            Acknowledge::Handoff(_) if request.tee.is_some() => Err(
                "a shared log is not migrated live: take a backup, then restore it into the \
                 other logger"
                    .to_string(),
            ),
            Acknowledge::Handoff(handoff) => (handoff.begin_cut)(),
            Acknowledge::Apply => {
                let point = self.next_sequence.saturating_sub(1);
                match self.map.begin_cut(point) {
                    None => Err(BUSY.to_string()),
                    Some(cut) => {
                        if let Some(tee) = request.tee {
                            // Never issued to a client: numbers of the cut's keys in
                            // the new log only, so no revision means two things.
                            self.next_sequence += cut.keys();
                            self.tee = Some(tee);
                        }
                        Ok(cut)
                    }
                }
            }
        };
        if let Err(why) = &cut {
            tracing::warn!("no cut of the map: {why}");
        }
        if let Err(unsent) = request.reply.send(cut) {
            // The asker gave up waiting: nobody reads this cut, so it must not stay.
            if let Ok(cut) = unsent.0 {
                self.map.end_cut(&cut);
                self.tee = None;
            }
        }
    }

    /// Copies a batch the logger accepted to the migration's tee; stops copying if the
    /// migration went away or fell too far behind (it then fails, and says why).
    pub(super) fn send_to_tee(&mut self, batch: Vec<LoggedEvent>) {
        let Some(tee) = &self.tee else {
            return;
        };
        let weight: u64 = batch.iter().map(LoggedEvent::weight).sum();
        let pending = tee.pending_bytes.fetch_add(weight, Ordering::AcqRel) + weight;
        if pending > tee.max_pending_bytes {
            tracing::warn!(
                pending_bytes = pending,
                "migration: the new logger fell behind the writes; copying stopped"
            );
            self.tee = None;
            return;
        }
        if tee.batches.send(batch).is_err() {
            self.tee = None; // the migration ended
        }
    }

    /// Appends what the new logger lacks, then makes it the writer's logger (see
    /// [`Switch`]).
    pub(super) fn switch_log(&mut self, switch: Switch) {
        let started = Instant::now();
        let Switch {
            mut to,
            stores_expiry,
            atomic_batch,
            rest,
            done,
        } = switch;
        let outcome = if self.tee.take().is_none() {
            // The tee stopped (the new logger fell behind): `rest` misses batches.
            let _ = to.close();
            Err(
                "the new logger fell behind the writes (copying stopped); the old logger \
                 keeps serving"
                    .to_string(),
            )
        } else {
            let mut caught_up = 0u64;
            let mut failed = None;
            // The sender is gone: this takes exactly what was copied and not yet taken.
            for batch in rest.try_iter() {
                if !stores_expiry && batch.iter().any(|e| e.kind == EventKind::PUT_UNTIL) {
                    failed = Some(PluginError::invalid_input(
                        "a write with a TTL arrived, which the new logger cannot store (it \
                         does not declare log:expiry)",
                    ));
                    break;
                }
                let events: Vec<Event<'_>> = batch.iter().map(LoggedEvent::as_event).collect();
                if let Err(e) = to.append(&events) {
                    failed = Some(e);
                    break;
                }
                caught_up += events.len() as u64;
            }
            match failed {
                Some(e) => {
                    let _ = to.close();
                    Err(format!(
                        "appending the last writes to the new logger failed ({e}); the old \
                         logger keeps serving"
                    ))
                }
                None => {
                    let old_close = self.logger.close().err();
                    self.logger = to;
                    self.stores_expiry = stores_expiry;
                    self.atomic_batch = atomic_batch;
                    Ok(Switched {
                        paused: started.elapsed(),
                        caught_up,
                        old_close,
                        health: self.logger.health(),
                    })
                }
            }
        };
        tracing::info!(
            paused_ms = started.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "migration: logger switch"
        );
        let _ = done.send(outcome);
    }
}

/// Why a second cut cannot begin.
pub(crate) const BUSY: &str =
    "a backup or migration is already running; retry once it has finished";
