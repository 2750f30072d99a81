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

use crossbeam_channel::{Receiver, Sender};
use kvs_plugin_api::{Event, EventKind, PluginError};

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
    Handoff(Box<dyn FnMut(Vec<Completion>) + Send>),
}

/// How a writer runs.
pub struct WriterSettings {
    /// One past the last replayed event's sequence number.
    pub next_sequence: u64,
    /// Most writes per `append`.
    pub max_batch: usize,
    /// What happens to a logged batch.
    pub acknowledge: Acknowledge,
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
    stats: WriterStats,
    metrics: Arc<Metrics>,
}

impl WriterLoop {
    fn run(mut self) -> (WriterStats, Result<(), PluginError>) {
        let mut stopping = false;
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            if !stopping {
                match self.rx.recv() {
                    Ok(Msg::Write(req)) => batch.push(req),
                    Ok(Msg::Stop) | Err(_) => stopping = true,
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

    fn commit(&mut self, batch: &mut Vec<WriteRequest>) {
        let first = self.next_sequence;
        // Never reuse a number, even if this append fails: a partly written batch must
        // not be mistaken for a later one on replay.
        self.next_sequence += batch.len() as u64;
        let events: Vec<Event<'_>> = batch
            .iter()
            .zip(first..)
            .map(|(req, seq)| match &req.op {
                WriteOp::Put(k, v) => Event::put(seq, k, v),
                WriteOp::Delete(k) => Event::delete(seq, k),
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
                self.stats.writes += batch.len() as u64;
                // Apply everything first so that a caller who is told "done" and then
                // reads sees its own write and every write logged before it.
                if let Acknowledge::Handoff(hand_off) = &mut self.acknowledge {
                    hand_off(batch.drain(..).map(|req| req.done).collect());
                    return;
                }
                let mut data_bytes = 0i64;
                let dones: Vec<Completion> = batch
                    .drain(..)
                    .map(|req| {
                        data_bytes += match &req.op {
                            WriteOp::Put(k, v) => self.map.insert(k, v),
                            WriteOp::Delete(k) => self.map.remove(k),
                        };
                        req.done
                    })
                    .collect();
                self.metrics.bytes.add(data_bytes);
                for done in dones {
                    done.complete(Ok(()));
                }
            }
            Err(err) => {
                self.stats.failed += batch.len() as u64;
                self.metrics.append_errors.inc();
                tracing::warn!(code = %err.code(), "logger refused a batch of {}: {err}", batch.len());
                for req in batch.drain(..) {
                    req.done.complete(Err(err.clone()));
                }
            }
        }
    }
}

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
                    self.stats.data_bytes += self.map.insert(e.key.as_slice(), e.value.as_slice());
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
