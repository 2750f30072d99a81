//! The write path: one writer at a time, group commit, log-then-apply.
//!
//! Every write goes through the writer, which
//! 1. takes the first queued write, plus every write queued meanwhile (group commit),
//! 2. numbers them with consecutive sequence numbers,
//! 3. hands the whole batch to the logger in one `append` call,
//! 4. on success applies the batch to the map in sequence order, then completes each
//!    caller; on failure completes each caller with the logger's error and applies
//!    nothing.
//!
//! One writer is what makes map order equal log order, and the batching is what lets
//! many durable writes share one fsync. The writer's state sits in its queue
//! ([`WriteQueue`], `queue.rs`) behind a mutex: the writer thread commits, or a frontend
//! that defers its commits does so on its own thread when it is about to go idle.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Receiver;
use kvs_plugin_api::PluginError;

use crate::metrics::Metrics;
use crate::overload::Overload;
use crate::ports::Log;
use crate::store::Map;
use crate::write_request::{Completion, CutRequest, LogSwap, Msg, Switch, Tee, WriteRequest};

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
    /// Begins a cut of the map as of what delivery has applied (delivery, not the
    /// writer, applies a shared log's writes).
    pub begin_cut: Box<dyn FnMut() -> Result<Arc<crate::map::Cut>, String> + Send>,
}

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
    /// Whether the logger appends a batch all or none (`log:atomic_batch`): what a
    /// transaction that logs more than one event needs.
    pub atomic_batch: bool,
    /// The store's value limit (what an `APPEND` may grow a value to).
    pub max_value_bytes: u64,
    /// Where the queueing delay is measured and expired writes counted.
    pub overload: Arc<Overload>,
}

/// The running writer thread.
pub struct Writer {
    thread: JoinHandle<(WriterStats, Result<(), PluginError>)>,
    queue: Arc<WriteQueue>,
}

impl Writer {
    /// Starts the writer on `queue` (whose writes it takes from then on). If its thread
    /// cannot start, the logger is handed back (unclosed) with the error, so the caller
    /// can close it.
    #[allow(clippy::result_large_err)]
    pub fn spawn(
        logger: Box<dyn Log>,
        map: Arc<Map>,
        queue: Arc<WriteQueue>,
        settings: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Writer, (std::io::Error, Box<dyn Log>)> {
        let mut state = queue.state();
        let rx = match std::mem::replace(&mut *state, State::Stopped) {
            State::Waiting(rx) => rx,
            _ => panic!("a writer queue takes one writer"),
        };
        let max_batch = settings.max_batch;
        queue.attach(matches!(settings.acknowledge, Acknowledge::Handoff(_)));
        *state = State::Running(Box::new(WriterLoop {
            logger,
            map,
            acknowledge: settings.acknowledge,
            rx,
            next_sequence: settings.next_sequence,
            max_batch,
            stores_expiry: settings.stores_expiry,
            atomic_batch: settings.atomic_batch,
            max_value_bytes: settings.max_value_bytes,
            overload: settings.overload,
            next_sweep: Instant::now(),
            tee: None,
            batch: Vec::with_capacity(max_batch),
            stopping: false,
            between: None,
            stats: WriterStats::default(),
            metrics,
        }));
        drop(state);
        let on_thread = queue.clone();
        let spawned = std::thread::Builder::new()
            .name("kvs-writer".into())
            .spawn(move || match on_thread.run() {
                Some(mut writer) => {
                    tracing::debug!(?writer.stats, "writer stopping; closing logger");
                    let closed = writer.logger.close();
                    (writer.stats, closed)
                }
                None => (
                    WriterStats::default(),
                    Err(PluginError::internal(
                        "the writer stopped after a panic (see the log)",
                    )),
                ),
            });
        match spawned {
            Ok(thread) => Ok(Writer { thread, queue }),
            Err(e) => {
                let State::Running(writer) = std::mem::replace(&mut *queue.state(), State::Stopped)
                else {
                    unreachable!("the writer's state is in place until its thread runs")
                };
                Err((e, writer.logger))
            }
        }
    }

    /// Logs everything queued so far, closes the logger and waits for the thread.
    /// Returns the writer's statistics and the logger's `close` outcome.
    pub fn stop(self) -> (WriterStats, Result<(), PluginError>) {
        // A blocking send: Stop must not be lost to a full queue.
        let _ = self.queue.send(Msg::Stop);
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
    atomic_batch: bool,
    max_value_bytes: u64,
    overload: Arc<Overload>,
    /// When the expiry sweep runs next.
    next_sweep: Instant,
    /// During a migration: where each logged batch is copied.
    tee: Option<Tee>,
    /// The batch being gathered (kept for its allocation).
    batch: Vec<WriteRequest>,
    /// `Msg::Stop` was taken: commit what is queued, then stop.
    stopping: bool,
    /// Work taken from the queue to do before the writes queued after it.
    between: Option<Between>,
    stats: WriterStats,
    metrics: Arc<Metrics>,
}

impl WriterLoop {
    /// The writer thread's turn: commits everything queued, batch by batch, doing the
    /// work between batches in its place. True once it has taken `Msg::Stop` and
    /// everything queued before it.
    fn work(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        loop {
            // Work between two batches (a logger swap, a cut, a switch) waits for the
            // writes queued before it to be committed, and the writes queued after it
            // wait for it.
            if let Some(work) = self.between.take() {
                match work {
                    Between::Swap(swap) => self.swap_log(swap),
                    Between::Cut(cut) => self.begin_cut(cut),
                    Between::Switch(switch) => self.switch_log(switch),
                }
            }
            self.gather(&mut batch);
            if !self.stopping && self.between.is_none() {
                self.sweep_into(&mut batch);
            }
            if batch.is_empty() && self.between.is_none() {
                break;
            }
            if !batch.is_empty() {
                self.commit_timed(&mut batch);
                self.metrics.batches_by_writer.inc();
            }
        }
        if self.rx.is_empty() {
            // Nothing waits: the measured delay is no longer current.
            self.overload.idle();
        }
        self.batch = batch;
        self.stopping
    }

    /// A caller's thread's turn (`WriteQueue::commit_here`): commits one batch of what
    /// is queued. False if the writer thread must take over: work between batches is
    /// due (a swap, a cut, a switch, stopping), or the log is shared (its commits wait
    /// for delivery and may retry).
    fn lead(&mut self) -> bool {
        if self.stopping
            || self.between.is_some()
            || matches!(self.acknowledge, Acknowledge::Handoff(_))
        {
            return false;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.gather(&mut batch);
        if !batch.is_empty() {
            self.commit_timed(&mut batch);
            self.metrics.batches_by_frontend.inc();
        }
        self.batch = batch;
        !self.stopping && self.between.is_none()
    }

    /// Takes queued messages into `batch` (group commit: everything queued meanwhile),
    /// up to `max_batch` writes or work between batches.
    fn gather(&mut self, batch: &mut Vec<WriteRequest>) {
        // One clock read per gathering, not per write: the queueing delay and the
        // deadlines are measured in milliseconds, a gathering takes microseconds.
        let now = Instant::now();
        while batch.len() < self.max_batch && self.between.is_none() {
            match self.rx.try_recv() {
                Ok(msg) => self.take(msg, batch, now),
                Err(_) => break,
            }
        }
    }

    /// Commits `batch` and measures it for overload admission.
    fn commit_timed(&mut self, batch: &mut Vec<WriteRequest>) {
        let (writes, started) = (batch.len(), Instant::now());
        self.commit(batch);
        self.overload.batch_done(writes, started.elapsed());
    }

    /// Files one queue message, taken at `now`.
    fn take(&mut self, msg: Msg, batch: &mut Vec<WriteRequest>, now: Instant) {
        match msg {
            Msg::Write(req) => {
                self.overload.taken(&req.admitted, batch.is_empty(), now);
                if self.overload.expired(&req.admitted, now) {
                    // Never logged: the client stopped waiting, and a write it was told
                    // timed out must not happen later.
                    return req.done.complete(Err(PluginError::deadline_exceeded(
                        "the request's deadline passed while the write waited in kvs's \
                         queue; it was not written",
                    )));
                }
                batch.push(req)
            }
            Msg::Stop => self.stopping = true,
            Msg::MaxValueBytes(max) => self.max_value_bytes = max,
            Msg::SwapLog(next) => self.between = Some(Between::Swap(next)),
            Msg::Cut(cut) => self.between = Some(Between::Cut(cut)),
            Msg::Switch(switch) => self.between = Some(Between::Switch(switch)),
        }
    }
}

/// Work the writer does between two batches, with no write in progress.
enum Between {
    Swap(LogSwap),
    Cut(CutRequest),
    Switch(Switch),
}

mod commit;
mod migrate;
mod queue;
mod replay;
mod resolve;
mod shared_update;
mod swap;
mod sweep;

pub(crate) use migrate::BUSY;
use queue::State;
pub use queue::WriteQueue;
pub use replay::{ReplayStats, replay};

#[cfg(test)]
mod tests;
