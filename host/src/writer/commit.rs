//! One batch to the logger and back: resolve each write against the map, number and
//! log what is to be logged in one `append`, then apply it and complete each caller
//! (or, with a shared log, hand the completions to delivery). Whichever thread holds
//! the writer runs it (`queue.rs`).

use std::time::Instant;

use kvs_plugin_api::{ErrorCode, Event, EventKind, PluginError};

use super::resolve::{Logged, apply_write, revision_after, writes};
use super::{Acknowledge, WriterLoop};
use crate::telemetry::{self, TRACE_TARGET};
use crate::write_request::{Completion, LoggedEvent, Reply, WriteOp, WriteRequest};

impl WriterLoop {
    pub(super) fn commit(&mut self, batch: &mut Vec<WriteRequest>) {
        if matches!(self.acknowledge, Acknowledge::Handoff(_))
            && batch.iter().any(|r| r.op.is_evaluated())
        {
            return self.commit_shared_in_order(batch);
        }
        self.commit_plain(batch)
    }

    pub(super) fn commit_plain(&mut self, batch: &mut Vec<WriteRequest>) {
        let first = self.next_sequence;
        let resolved = self.resolve(batch, first);
        let logged: u64 = resolved.iter().map(|r| r.logged.events()).sum();
        if logged == 0 {
            // Every write's outcome is known without the log (failed conditions).
            for (req, r) in batch.drain(..).zip(resolved) {
                req.done.reply(r.outcome);
            }
            return;
        }
        // Never reuse a number, even if this append fails: a partly written batch must
        // not be mistaken for a later one on replay.
        self.next_sequence += logged;
        let with_deadlines: Vec<Vec<u8>> = batch
            .iter()
            .zip(&resolved)
            .flat_map(|(req, r)| writes(req, r))
            .filter_map(|(_, logged, _)| match logged {
                Logged::Put {
                    value,
                    deadline: Some(deadline),
                } => {
                    let mut bytes = Vec::with_capacity(8 + value.len());
                    bytes.extend_from_slice(&deadline.to_le_bytes());
                    bytes.extend_from_slice(value);
                    Some(bytes)
                }
                _ => None,
            })
            .collect();
        let mut with_deadlines = with_deadlines.iter();
        let events: Vec<Event<'_>> = batch
            .iter()
            .zip(&resolved)
            .flat_map(|(req, r)| writes(req, r).map(move |write| (req, write)))
            .filter_map(|(req, (key, logged, sequence))| {
                Some(match (logged, &req.op) {
                    (Logged::Nothing | Logged::Steps(_), _) => return None,
                    (Logged::Delete, _) => Event::delete(sequence, key),
                    (Logged::PutOwn, WriteOp::Put(_, v)) => Event::put(sequence, key, v),
                    (Logged::PutOwn, _) => unreachable!("only a plain put logs its own value"),
                    (
                        Logged::Put {
                            value,
                            deadline: None,
                        },
                        _,
                    ) => Event::put(sequence, key, value),
                    (
                        Logged::Put {
                            deadline: Some(_), ..
                        },
                        _,
                    ) => {
                        let bytes = with_deadlines.next().expect("one per put with a deadline");
                        Event {
                            kind: EventKind::PUT_UNTIL,
                            ..Event::put(sequence, key, bytes)
                        }
                    }
                })
            })
            .collect();
        // The batch span links to each write's span and each write's to it; the
        // append is its child. All disabled (and skipped) when tracing is off.
        let batch_span = tracing::trace_span!(
            target: TRACE_TARGET,
            "batch",
            otel.name = "writer batch",
            kvs.batch.writes = batch.len(),
        );
        if !batch_span.is_disabled() {
            for req in batch.iter() {
                if let Some(write) = telemetry::span_context(&req.trace) {
                    telemetry::link(&batch_span, write);
                }
            }
            if let Some(this) = telemetry::span_context(&batch_span) {
                for req in batch.iter() {
                    telemetry::link(&req.trace, this.clone());
                }
            }
        }
        // A migration's copy of what is logged, sent once the append succeeded.
        let teed: Option<Vec<LoggedEvent>> = self.tee.as_ref().map(|_| {
            events
                .iter()
                .map(|e| LoggedEvent {
                    kind: e.kind,
                    sequence: e.sequence,
                    key: e.key.to_vec(),
                    value: e.value.to_vec(),
                })
                .collect()
        });
        let started = Instant::now();
        let result = batch_span.in_scope(|| {
            let _append =
                tracing::trace_span!(target: TRACE_TARGET, "append", otel.name = "logger append")
                    .entered();
            self.logger.append(&events)
        });
        self.metrics
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(batch.len() as f64);
        drop(events);
        self.stats.batches += 1;
        match result {
            Ok(()) => {
                self.stats.writes += logged;
                if let Some(teed) = teed {
                    self.send_to_tee(teed);
                }
                // Apply everything first so that a caller who is told "done" and then
                // reads sees its own write and every write logged before it.
                if let Acknowledge::Handoff(handoff) = &mut self.acknowledge {
                    let mut dones = Vec::with_capacity(batch.len());
                    for (req, r) in batch.drain(..).zip(resolved) {
                        match r.outcome {
                            Err(e) => req.done.complete(Err(e)),
                            Ok(_) => dones.push(req.done),
                        }
                    }
                    (handoff.hand_off)(dones);
                    return;
                }
                let mut data_bytes = 0i64;
                let mut expired = 0u64;
                let dones: Vec<(Completion, Result<Reply, PluginError>)> = batch
                    .drain(..)
                    .zip(resolved)
                    .map(|(req, r)| {
                        let map = &self.map;
                        let outcome = if let Logged::Steps(_) = r.logged {
                            let mut revisions = Vec::new();
                            let mut apply = || {
                                for (key, logged, sequence) in writes(&req, &r) {
                                    data_bytes += apply_write(
                                        map,
                                        key,
                                        logged,
                                        sequence,
                                        &req.op,
                                        &mut expired,
                                    );
                                    revisions.push(revision_after(logged, sequence));
                                }
                            };
                            // A transaction's writes are seen together or not at all.
                            if r.logged.events() > 1 {
                                map.apply_together(apply);
                            } else {
                                apply();
                            }
                            let mut revisions = revisions.into_iter();
                            r.outcome.map(|reply| {
                                reply.map(|mut outcome| {
                                    if let Some(Some(revision)) = revisions.next() {
                                        outcome.revision = revision;
                                    }
                                    outcome
                                })
                            })
                        } else {
                            // A write or an update: one key, no allocation.
                            let key = req.op.key();
                            data_bytes +=
                                apply_write(map, key, &r.logged, r.sequence, &req.op, &mut expired);
                            let revision = revision_after(&r.logged, r.sequence);
                            r.outcome.map(|reply| {
                                reply.map(|mut outcome| {
                                    if let Some(revision) = revision {
                                        outcome.revision = revision;
                                    }
                                    outcome
                                })
                            })
                        };
                        (req.done, outcome)
                    })
                    .collect();
                self.metrics.bytes.add(data_bytes);
                self.metrics.expired_keys.inc_by(expired);
                for (done, outcome) in dones {
                    done.reply(outcome);
                }
            }
            Err(err)
                if err.code() == ErrorCode::TOO_LARGE && batch.len() > 1 && self.atomic_batch =>
            {
                // A logger that appends all or none (so it kept nothing) cannot append
                // this much at once (an etcd transaction's limits): the batch in two
                // parts of whole requests, each resolved again (after what the first
                // made) and appended on its own. A request too large alone fails with
                // the logger's message.
                let mut rest = batch.split_off(batch.len() / 2);
                self.commit_plain(batch);
                self.commit_plain(&mut rest);
            }
            Err(err) => {
                self.stats.failed += batch.len() as u64;
                self.metrics.append_errors.inc();
                tracing::warn!(code = %err.code(), "logger refused a batch of {}: {err}", batch.len());
                // Outcomes computed against this batch's earlier writes are void too.
                for req in batch.drain(..) {
                    req.done.complete(Err(err.clone()));
                }
            }
        }
    }
}
