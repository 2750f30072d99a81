//! The write path: one writer thread, group commit, log-then-apply.
//!
//! Every write goes through one thread, which
//! 1. takes the first queued write, plus every write queued meanwhile (group commit),
//! 2. numbers them with consecutive sequence numbers,
//! 3. hands the whole batch to the logger in one `append` call,
//! 4. on success applies the batch to the map in sequence order, then completes each
//!    caller; on failure completes each caller with the logger's error and applies
//!    nothing.
//!
//! One thread is what makes map order equal log order without a lock across the logger
//! call, and the batching is what lets many durable writes share one fsync.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use std::collections::HashMap;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kvs_plugin_api::event::split_deadline;
use kvs_plugin_api::update::{Current, Effect, evaluate};
use kvs_plugin_api::{Event, EventKind, Outcome, PluginError};

use crate::map::now_ms;
use crate::metrics::Metrics;
use crate::ports::Log;
use crate::store::Map;
use crate::telemetry::{self, TRACE_TARGET};
use crate::write_request::{Completion, Msg, WriteOp, WriteRequest};

/// What the writer did, returned when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    /// `append` calls made.
    pub batches: u64,
    /// Writes logged and applied.
    pub writes: u64,
    /// Writes the logger refused.
    pub failed: u64,
}

/// What the writer does with a batch the logger accepted.
pub enum Acknowledge {
    /// Apply it to the map, then complete its writes (a local log).
    Apply,
    /// Hand its writes' completions over (a shared log, whose delivery applies the batch
    /// and completes them once it has come back: `shared`).
    Handoff(Handoff),
}

/// The writer's side of a shared log (`shared::follow`).
pub struct Handoff {
    /// Gives a logged batch's completions to delivery, to complete once it has applied
    /// the batch.
    pub hand_off: Box<dyn FnMut(Vec<Completion>) + Send>,
    /// The position the last append reached.
    pub last_position: Arc<std::sync::atomic::AtomicU64>,
    /// Waits until delivery has applied everything the log held when called (a quorum
    /// barrier), so an update whose conditional append conflicted is evaluated again on
    /// current state. `None`: the log cannot append conditionally (no updates).
    pub catch_up: Option<Box<dyn FnMut() -> Result<(), PluginError> + Send>>,
}

/// How often an update over a shared log is evaluated again after its conditional
/// append found the key moved, before it fails as contended.
const SHARED_UPDATE_ATTEMPTS: usize = 64;

/// How a writer runs.
pub struct WriterSettings {
    /// One past the last replayed event's sequence number.
    pub next_sequence: u64,
    /// Most writes per `append`.
    pub max_batch: usize,
    /// What happens to a logged batch.
    pub acknowledge: Acknowledge,
    /// Whether the logger stores deadlines (`log:expiry`).
    pub stores_expiry: bool,
    /// The store's value limit (what an `APPEND` may grow a value to).
    pub max_value_bytes: u64,
}

/// The running writer thread.
pub struct Writer {
    thread: JoinHandle<(WriterStats, Result<(), PluginError>)>,
    queue: Sender<Msg>,
}

impl Writer {
    /// Starts the writer. If its thread cannot start, the logger is handed back
    /// (unclosed) with the error, so the caller can close it.
    #[allow(clippy::result_large_err)]
    pub fn spawn(
        logger: Box<dyn Log>,
        map: Arc<Map>,
        queue: (Sender<Msg>, Receiver<Msg>),
        settings: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Writer, (std::io::Error, Box<dyn Log>)> {
        let (queue, rx) = queue;
        let state = WriterLoop {
            logger,
            map,
            acknowledge: settings.acknowledge,
            rx,
            next_sequence: settings.next_sequence,
            max_batch: settings.max_batch,
            stores_expiry: settings.stores_expiry,
            max_value_bytes: settings.max_value_bytes,
            next_sweep: Instant::now(),
            stats: WriterStats::default(),
            metrics,
        };
        // The state goes to the thread once it runs, so a thread that cannot start
        // leaves the logger with us.
        let (hand_over, take_over) = std::sync::mpsc::sync_channel::<WriterLoop>(1);
        let spawned = std::thread::Builder::new()
            .name("kvs-writer".into())
            .spawn(move || match take_over.recv() {
                Ok(state) => state.run(),
                Err(_) => (WriterStats::default(), Ok(())),
            });
        match spawned {
            Ok(thread) => {
                let _ = hand_over.send(state);
                Ok(Writer { thread, queue })
            }
            Err(e) => Err((e, state.logger)),
        }
    }

    /// Logs everything queued so far, closes the logger and waits for the thread.
    /// Returns the writer's statistics and the logger's `close` outcome.
    pub fn stop(self) -> (WriterStats, Result<(), PluginError>) {
        // A blocking send: Stop must not be lost to a full queue.
        let _ = self.queue.send(Msg::Stop);
        drop(self.queue);
        self.thread.join().unwrap_or_else(|_| {
            (
                WriterStats::default(),
                Err(PluginError::internal("the writer thread panicked")),
            )
        })
    }
}

struct WriterLoop {
    logger: Box<dyn Log>,
    map: Arc<Map>,
    acknowledge: Acknowledge,
    rx: Receiver<Msg>,
    next_sequence: u64,
    max_batch: usize,
    stores_expiry: bool,
    max_value_bytes: u64,
    /// When the expiry sweep runs next.
    next_sweep: Instant,
    stats: WriterStats,
    metrics: Arc<Metrics>,
}

impl WriterLoop {
    fn run(mut self) -> (WriterStats, Result<(), PluginError>) {
        let mut stopping = false;
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            if !stopping {
                let received = match self.sweep_wait() {
                    None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(wait) => self.rx.recv_timeout(wait),
                };
                match received {
                    Ok(Msg::Write(req)) => batch.push(req),
                    Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            // Group commit: everything that queued up while the last append ran.
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(Msg::Write(req)) => batch.push(req),
                    Ok(Msg::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            if !stopping {
                self.sweep_into(&mut batch);
            }
            if batch.is_empty() {
                if stopping {
                    break;
                }
                continue;
            }
            self.commit(&mut batch);
        }
        tracing::debug!(?self.stats, "writer stopping; closing logger");
        let closed = self.logger.close();
        (self.stats, closed)
    }

    /// Adds the sweep's removals of expired keys to `batch`, at most
    /// [`SWEEP_MAX_KEYS`] every [`SWEEP_EVERY`], so expiry costs a bounded share of the
    /// writer however many keys expire at once.
    fn sweep_into(&mut self, batch: &mut Vec<WriteRequest>) {
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
            });
        }
    }

    /// How long the writer may wait for a write before the sweep is due, if some key
    /// has a deadline.
    fn sweep_wait(&self) -> Option<std::time::Duration> {
        let deadline = self.map.next_deadline()?;
        let until_deadline = deadline.saturating_sub(now_ms());
        let until_tick = self.next_sweep.saturating_duration_since(Instant::now());
        Some(until_tick.max(std::time::Duration::from_millis(until_deadline)))
    }

    /// Decides what each write of the batch logs, in order: plain puts and deletes as
    /// they are, updates evaluated against the map and the batch's earlier writes.
    fn resolve(&self, batch: &[WriteRequest], first: u64) -> Vec<Resolved> {
        let mut next = first;
        let mut position = |logged: &Logged| {
            if matches!(logged, Logged::Nothing) {
                0
            } else {
                next += 1;
                next - 1
            }
        };
        let evaluated = batch
            .iter()
            .any(|r| matches!(r.op, WriteOp::Update(_) | WriteOp::Expire(..)));
        if !evaluated {
            // The common case: nothing to evaluate, nothing to copy.
            return batch
                .iter()
                .map(|req| {
                    let logged = match req.op {
                        WriteOp::Delete(_) => Logged::Delete,
                        _ => Logged::PutOwn,
                    };
                    let sequence = position(&logged);
                    Resolved {
                        logged,
                        sequence,
                        outcome: Ok(applied()),
                    }
                })
                .collect();
        }
        let now = now_ms();
        // The batch's writes so far, by key: what a later update in it must see.
        let mut written: HashMap<&[u8], Option<Current>> = HashMap::new();
        let mut resolved = Vec::with_capacity(batch.len());
        for req in batch {
            let key = req.op.key();
            let raw = match written.get(key) {
                Some(state) => state.clone(),
                None => self.map.entry(key).map(|e| Current {
                    revision: e.revision(),
                    deadline: e.deadline(),
                    value: e.into_value(),
                }),
            };
            let (logged, outcome) = match &req.op {
                WriteOp::Put(_, _) => (Logged::PutOwn, Ok(applied())),
                WriteOp::Delete(_) => (Logged::Delete, Ok(applied())),
                WriteOp::Expire(_, revision) => {
                    let due = raw.as_ref().is_some_and(|c| {
                        c.revision == *revision && c.deadline.is_some_and(|d| d <= now)
                    });
                    let logged = if due { Logged::Delete } else { Logged::Nothing };
                    (logged, Ok(Outcome::default()))
                }
                WriteOp::Update(update) => {
                    let live = raw.as_ref().filter(|c| c.deadline.is_none_or(|d| d > now));
                    match evaluate(update, live, now, self.max_value_bytes) {
                        Ok((Effect::Nothing, outcome)) => (Logged::Nothing, Ok(outcome)),
                        Ok((Effect::Delete, outcome)) => (Logged::Delete, Ok(outcome)),
                        Ok((
                            Effect::Put {
                                deadline: Some(_), ..
                            },
                            _,
                        )) if !self.stores_expiry => (
                            Logged::Nothing,
                            Err(PluginError::invalid_input(
                                "the logger cannot store expiry deadlines; the write was refused",
                            )),
                        ),
                        Ok((Effect::Put { value, deadline }, outcome)) => {
                            (Logged::Put { value, deadline }, Ok(outcome))
                        }
                        Err(refused) => (
                            Logged::Nothing,
                            Err(PluginError::new(refused.code, refused.message)),
                        ),
                    }
                }
            };
            let sequence = position(&logged);
            let after = match (&logged, &req.op) {
                (Logged::Nothing, _) => None,
                (Logged::Delete, _) => Some(None),
                (Logged::PutOwn, WriteOp::Put(_, value)) => Some(Some(Current {
                    value: value.to_vec(),
                    revision: sequence,
                    deadline: None,
                })),
                (Logged::Put { value, deadline }, _) => Some(Some(Current {
                    value: value.clone(),
                    revision: sequence,
                    deadline: *deadline,
                })),
                (Logged::PutOwn, _) => unreachable!("only a plain put logs its own value"),
            };
            if let Some(after) = after {
                written.insert(key, after);
            }
            resolved.push(Resolved {
                logged,
                sequence,
                outcome,
            });
        }
        resolved
    }

    fn commit(&mut self, batch: &mut Vec<WriteRequest>) {
        if matches!(self.acknowledge, Acknowledge::Handoff(_))
            && batch
                .iter()
                .any(|r| matches!(r.op, WriteOp::Update(_) | WriteOp::Expire(..)))
        {
            return self.commit_shared_in_order(batch);
        }
        self.commit_plain(batch)
    }

    /// A shared log's batch with updates: its plain writes in runs, each update on its
    /// own, in queue order (a connection's `SET k 1` then `INCR k` must stay in order).
    fn commit_shared_in_order(&mut self, batch: &mut Vec<WriteRequest>) {
        let mut run = Vec::new();
        for req in std::mem::take(batch) {
            if let WriteOp::Update(_) | WriteOp::Expire(..) = req.op {
                if !run.is_empty() {
                    self.commit_plain(&mut run);
                }
                self.commit_shared_update(req);
            } else {
                run.push(req);
            }
        }
        if !run.is_empty() {
            self.commit_plain(&mut run);
        }
    }

    /// One update over a shared log: evaluated against the delivered map, appended on
    /// the condition that its key has not moved since (`EventKind::EXPECT`: etcd
    /// compares the key's mod revision), and on a conflict evaluated again once
    /// delivery has caught up. The append that succeeds is where it takes effect, so it
    /// is linearizable whatever other nodes do; a failed condition is appended too (with
    /// no change), so that it also takes effect at a point in the log.
    fn commit_shared_update(&mut self, req: WriteRequest) {
        let WriteOp::Update(update) = &req.op else {
            // The sweep runs only on local logs: nothing to do.
            return req.done.complete(Ok(()));
        };
        if !matches!(
            self.acknowledge,
            Acknowledge::Handoff(Handoff {
                catch_up: Some(_),
                ..
            })
        ) {
            return req.done.complete(Err(PluginError::unavailable(
                "this shared log cannot append conditionally, so kvs cannot make atomic \
                 operations over it",
            )));
        }
        let key: &[u8] = &update.key;
        for attempt in 0..SHARED_UPDATE_ATTEMPTS {
            if attempt > 0
                && let Acknowledge::Handoff(Handoff {
                    catch_up: Some(catch_up),
                    ..
                }) = &mut self.acknowledge
                && let Err(e) = catch_up()
            {
                return req.done.complete(Err(e));
            }
            let now = now_ms();
            let current = self.map.entry(key).map(|e| Current {
                revision: e.revision(),
                deadline: e.deadline(),
                value: e.into_value(),
            });
            let observed = current.as_ref().map_or(0, |c| c.revision);
            let live = current
                .as_ref()
                .filter(|c| c.deadline.is_none_or(|d| d > now));
            let (effect, mut outcome) = match evaluate(update, live, now, self.max_value_bytes) {
                Ok(evaluated) => evaluated,
                Err(refused) => {
                    return req
                        .done
                        .complete(Err(PluginError::new(refused.code, refused.message)));
                }
            };
            let sequence = self.next_sequence;
            self.next_sequence += 2;
            let mut events = vec![Event {
                sequence: observed,
                kind: EventKind::EXPECT,
                key: key.into(),
                value: (&[][..]).into(),
            }];
            match &effect {
                Effect::Nothing => {}
                Effect::Delete => events.push(Event::delete(sequence, key)),
                Effect::Put {
                    deadline: Some(_), ..
                } => {
                    return req.done.complete(Err(PluginError::invalid_input(
                        "deadlines are not stored over a shared log yet",
                    )));
                }
                Effect::Put { value, .. } => events.push(Event::put(sequence, key, value)),
            }
            let appended = self.logger.append(&events);
            self.stats.batches += 1;
            match appended {
                Ok(()) => {
                    self.stats.writes += 1;
                    let Acknowledge::Handoff(handoff) = &mut self.acknowledge else {
                        unreachable!("only over a shared log")
                    };
                    let position = handoff
                        .last_position
                        .load(std::sync::atomic::Ordering::Acquire);
                    match effect {
                        Effect::Put { .. } => outcome.revision = position,
                        Effect::Delete => outcome.revision = 0,
                        Effect::Nothing => {}
                    }
                    // Completed once delivery has applied it, as every shared write.
                    let done = req.done;
                    let answer = Completion::new(move |r| done.complete_with(r.map(|()| outcome)));
                    (handoff.hand_off)(vec![answer]);
                    return;
                }
                // The key moved: the next attempt catches up first.
                Err(e) if e.code() == kvs_plugin_api::ErrorCode::CONFLICT => continue,
                Err(e) => {
                    self.stats.failed += 1;
                    self.metrics.append_errors.inc();
                    return req.done.complete(Err(e));
                }
            }
        }
        req.done.complete(Err(PluginError::unavailable(format!(
            "the key kept changing on other nodes: {SHARED_UPDATE_ATTEMPTS} attempts at this \
             update conflicted; retry"
        ))))
    }

    fn commit_plain(&mut self, batch: &mut Vec<WriteRequest>) {
        let first = self.next_sequence;
        let resolved = self.resolve(batch, first);
        let logged = resolved
            .iter()
            .filter(|r| !matches!(r.logged, Logged::Nothing))
            .count();
        if logged == 0 {
            // Every write's outcome is known without the log (failed conditions).
            for (req, r) in batch.drain(..).zip(resolved) {
                req.done.complete_with(r.outcome);
            }
            return;
        }
        // Never reuse a number, even if this append fails: a partly written batch must
        // not be mistaken for a later one on replay.
        self.next_sequence += logged as u64;
        let with_deadlines: Vec<Vec<u8>> = resolved
            .iter()
            .filter_map(|r| match &r.logged {
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
            .filter_map(|(req, r)| {
                let key = req.op.key();
                Some(match (&r.logged, &req.op) {
                    (Logged::Nothing, _) => return None,
                    (Logged::Delete, _) => Event::delete(r.sequence, key),
                    (Logged::PutOwn, WriteOp::Put(_, v)) => Event::put(r.sequence, key, v),
                    (Logged::PutOwn, _) => unreachable!("only a plain put logs its own value"),
                    (
                        Logged::Put {
                            value,
                            deadline: None,
                        },
                        _,
                    ) => Event::put(r.sequence, key, value),
                    (
                        Logged::Put {
                            deadline: Some(_), ..
                        },
                        _,
                    ) => {
                        let bytes = with_deadlines.next().expect("one per put with a deadline");
                        Event {
                            kind: EventKind::PUT_UNTIL,
                            ..Event::put(r.sequence, key, bytes)
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
                self.stats.writes += logged as u64;
                // Apply everything first so that a caller who is told "done" and then
                // reads sees its own write and every write logged before it.
                if let Acknowledge::Handoff(handoff) = &mut self.acknowledge {
                    let mut dones = Vec::with_capacity(batch.len());
                    for (req, r) in batch.drain(..).zip(resolved) {
                        match r.outcome {
                            Err(e) => req.done.complete_with(Err(e)),
                            Ok(_) => dones.push(req.done),
                        }
                    }
                    (handoff.hand_off)(dones);
                    return;
                }
                let mut data_bytes = 0i64;
                let mut expired = 0u64;
                let dones: Vec<(Completion, Result<Outcome, PluginError>)> = batch
                    .drain(..)
                    .zip(resolved)
                    .map(|(req, r)| {
                        let key = req.op.key();
                        data_bytes += match (&r.logged, &req.op) {
                            (Logged::Nothing, _) => 0,
                            (Logged::Delete, WriteOp::Expire(..)) => {
                                expired += 1;
                                self.map.remove(key)
                            }
                            (Logged::Delete, _) => self.map.remove(key),
                            (Logged::PutOwn, WriteOp::Put(_, v)) => {
                                self.map.insert(key, v, r.sequence, None)
                            }
                            (Logged::PutOwn, _) => 0,
                            (Logged::Put { value, deadline }, _) => {
                                self.map.insert(key, value, r.sequence, *deadline)
                            }
                        };
                        let outcome = r.outcome.map(|mut outcome| {
                            match r.logged {
                                Logged::Nothing => {}
                                Logged::Delete => outcome.revision = 0,
                                _ => outcome.revision = r.sequence,
                            }
                            outcome
                        });
                        (req.done, outcome)
                    })
                    .collect();
                self.metrics.bytes.add(data_bytes);
                self.metrics.expired_keys.inc_by(expired);
                for (done, outcome) in dones {
                    done.complete_with(outcome);
                }
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

/// What a write of a batch logs.
enum Logged {
    /// Nothing (a failed condition, an update that changes nothing, an error).
    Nothing,
    /// A plain put, of the request's own value.
    PutOwn,
    /// A put of a value the writer computed, or with a deadline.
    Put {
        value: Vec<u8>,
        deadline: Option<u64>,
    },
    /// A delete.
    Delete,
}

/// A write of a batch, resolved: what it logs, at which position, and what its caller
/// is told once that is durable.
struct Resolved {
    logged: Logged,
    /// Its sequence number (0 if it logs nothing).
    sequence: u64,
    outcome: Result<Outcome, PluginError>,
}

/// A plain put's or delete's outcome: it always applies.
fn applied() -> Outcome {
    Outcome {
        applied: true,
        ..Outcome::default()
    }
}

/// How often the sweep looks for expired keys.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Most expired keys one sweep removes (so at most 10,000 a second).
const SWEEP_MAX_KEYS: usize = 1000;

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

#[cfg(test)]
mod tests;
