//! Overload: what the host refuses when frontends offer writes faster than the logger
//! takes them, so that the writes it admits keep a bounded latency and one greedy
//! client cannot starve the others.
//!
//! * **Queueing delay, measured.** The writer notes how long the first write of each
//!   batch waited in its queue (`Overload::taken`): about what a write queued now will
//!   wait. With group commit a write normally waits for at most the batch ahead of it.
//! * **Shedding.** Once that delay has stayed above `writer.shed_delay_ms` for
//!   [`SHED_AFTER`] (one slow fsync is not overload), a frontend's write from a
//!   connection that already has a write in flight is refused at once (`unavailable`:
//!   503, a RESP error, gRPC UNAVAILABLE) instead of joining the queue, until a batch's
//!   delay is below the target again. A connection that sends one request at a time is
//!   never refused for it; one that pipelines (RESP) or multiplexes (HTTP/2, gRPC) keeps
//!   one write in flight, and the listener's `max_connections_per_peer` bounds how many
//!   connections one address has. Connections are told apart by the peer address the
//!   frontend carried (with its port); a frontend that carries none counts as one
//!   connection. Reads never queue, so they are never shed.
//! * **Bytes.** The queue holds at most `writer.queue_max_bytes` of keys and values
//!   (besides `writer.queue_capacity` writes), so memory stays bounded whatever the
//!   value sizes.
//! * **Deadlines.** A write whose caller's deadline passed while it queued is dropped by
//!   the writer before it reaches the logger (`Overload::expired`): a client that timed
//!   out waiting for it is never surprised by it later.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvs_plugin_api::PluginError;
use prometheus::{Gauge, IntCounter};

use crate::caller::Caller;
use crate::write_request::Completion;

/// Default `writer.shed_delay_ms`: well above one batch's append on a local disk (a
/// few ms) or over etcd (tens of ms), which every write may wait for under group commit.
pub const DEFAULT_SHED_DELAY_MS: u64 = 100;
/// How long the queueing delay must stay above the target before writes are shed.
pub const SHED_AFTER: Duration = Duration::from_millis(100);
/// Default `writer.queue_max_bytes`.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Counters of connections' writes in flight, by a hash of the peer. Two connections
/// that share a slot are treated as one while shedding (rare with this many slots;
/// never worse than refusing a write that could have waited).
const CLIENT_SLOTS: usize = 4096;

/// Why a write was refused or dropped, as counted in `/metrics`.
#[derive(Debug, Clone)]
pub struct RefusalCounters {
    /// Shed: the queue was slow and the client had a write in flight.
    pub shed: IntCounter,
    /// The queue held `queue_capacity` writes.
    pub queue_full: IntCounter,
    /// The queue held `queue_max_bytes`.
    pub queue_bytes: IntCounter,
    /// The caller's deadline passed while the write queued.
    pub deadline: IntCounter,
}

/// The overload state the store (admission) and the writer (measurement) share.
pub struct Overload {
    /// Shed while the queueing delay is above this (`None`: never shed).
    shed_delay: Option<Duration>,
    max_queued_bytes: u64,
    /// Where the µs counts below start.
    base: Instant,
    /// The first write of the writer's latest batch: how long it waited, in µs.
    queue_delay_us: AtomicU64,
    /// Since when (µs after `base`, at least 1) every batch's delay has been above the
    /// target; 0: the latest was not.
    above_since_us: AtomicU64,
    /// Bytes of keys and values queued and not yet taken by the writer.
    queued_bytes: AtomicU64,
    in_flight: Box<[AtomicU32]>,
    hasher: std::hash::RandomState,
    refused: RefusalCounters,
    delay_gauge: Gauge,
}

/// A write that was admitted: what it holds until the writer takes it (bytes) and until
/// it completes (a client slot).
#[derive(Debug, Clone, Copy, Default)]
pub struct Admitted {
    /// When it was queued.
    pub queued: Option<Instant>,
    /// When its caller stops waiting.
    pub deadline: Option<Instant>,
    /// Bytes of key and value, counted against `queue_max_bytes` until taken.
    pub bytes: u64,
}

impl Overload {
    /// From the writer's settings; `refused` and `delay_gauge` are the metrics.
    pub fn new(
        shed_delay_ms: u64,
        max_queued_bytes: u64,
        refused: RefusalCounters,
        delay_gauge: Gauge,
    ) -> Self {
        Overload {
            shed_delay: (shed_delay_ms > 0).then(|| Duration::from_millis(shed_delay_ms)),
            max_queued_bytes,
            base: Instant::now(),
            queue_delay_us: AtomicU64::new(0),
            above_since_us: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            in_flight: (0..CLIENT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
            refused,
            delay_gauge,
        }
    }

    /// With the default settings, counting into `metrics` (tools and tests).
    pub fn with_defaults(metrics: &crate::metrics::Metrics) -> Arc<Self> {
        Arc::new(Overload::new(
            DEFAULT_SHED_DELAY_MS,
            DEFAULT_QUEUE_MAX_BYTES,
            metrics.refusal_counters(),
            metrics.queue_delay.clone(),
        ))
    }

    /// Admits a write of `bytes` (key and value) for the writer's queue, or says why
    /// not. `caller` is the frontend's client (`None`: the host's own write, never
    /// shed). An admitted frontend write's `done` is wrapped to free its client slot.
    pub fn admit(
        self: &Arc<Self>,
        caller: Option<&Caller<'_>>,
        bytes: u64,
        done: Completion,
    ) -> Result<(Admitted, Completion), (PluginError, Completion)> {
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if queued > self.max_queued_bytes && queued != bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.refused.queue_bytes.inc();
            return Err((
                PluginError::unavailable(format!(
                    "kvs is overloaded: its write queue holds {} MiB \
                     (writer.queue_max_bytes); retry later",
                    self.max_queued_bytes >> 20
                )),
                done,
            ));
        }
        let admitted = Admitted {
            queued: Some(Instant::now()),
            deadline: caller.and_then(|c| c.deadline),
            bytes,
        };
        let Some(caller) = caller else {
            return Ok((admitted, done));
        };
        let slot = self.slot(caller);
        let before = self.in_flight[slot].fetch_add(1, Ordering::Relaxed);
        if before > 0
            && let Some(delay) = self.shedding()
        {
            self.in_flight[slot].fetch_sub(1, Ordering::Relaxed);
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.refused.shed.inc();
            return Err((
                PluginError::unavailable(format!(
                    "kvs is overloaded: writes wait {} ms in its queue and this client \
                     already has a write in flight; retry later",
                    delay.as_millis()
                )),
                done,
            ));
        }
        let this = self.clone();
        let done = Completion::with_outcome(move |result| {
            this.in_flight[slot].fetch_sub(1, Ordering::Relaxed);
            done.complete_with(result)
        });
        Ok((admitted, done))
    }

    /// An admitted write that never reached the queue (it was full, or the writer is
    /// gone): gives back its bytes.
    pub fn not_queued(&self, admitted: &Admitted) {
        self.queued_bytes
            .fetch_sub(admitted.bytes, Ordering::Relaxed);
    }

    /// Counts a write refused because the queue held `queue_capacity` writes.
    pub fn queue_full(&self) {
        self.refused.queue_full.inc();
    }

    /// The writer took a write: its bytes leave the queue; the first of a batch sets
    /// the queueing delay.
    pub fn taken(&self, admitted: &Admitted, first_of_batch: bool, now: Instant) {
        self.queued_bytes
            .fetch_sub(admitted.bytes, Ordering::Relaxed);
        let (true, Some(queued)) = (first_of_batch, admitted.queued) else {
            return;
        };
        let waited = now.saturating_duration_since(queued);
        self.queue_delay_us
            .store(waited.as_micros() as u64, Ordering::Relaxed);
        if self.shed_delay.is_some_and(|target| waited > target) {
            let now_us = (now.saturating_duration_since(self.base).as_micros() as u64).max(1);
            let _ = self.above_since_us.compare_exchange(
                0,
                now_us,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.above_since_us.store(0, Ordering::Relaxed);
        }
    }

    /// The writer found its queue empty: nothing waits, so nothing is shed.
    pub fn idle(&self) {
        self.queue_delay_us.store(0, Ordering::Relaxed);
        self.above_since_us.store(0, Ordering::Relaxed);
    }

    /// Whether the writer should drop this write: its caller's deadline has passed. If
    /// so, counts it.
    pub fn expired(&self, admitted: &Admitted, now: Instant) -> bool {
        let expired = admitted.deadline.is_some_and(|d| d <= now);
        if expired {
            self.refused.deadline.inc();
        }
        expired
    }

    /// The queueing delay, if writes are being shed now: it has been above the target
    /// for [`SHED_AFTER`].
    fn shedding(&self) -> Option<Duration> {
        let since = self.above_since_us.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let now_us = self.base.elapsed().as_micros() as u64;
        (now_us.saturating_sub(since) >= SHED_AFTER.as_micros() as u64).then(|| self.queue_delay())
    }

    /// The queueing delay last measured.
    pub fn queue_delay(&self) -> Duration {
        Duration::from_micros(self.queue_delay_us.load(Ordering::Relaxed))
    }

    /// Sets the queue delay gauge (when `/metrics` is scraped).
    pub fn publish(&self) {
        self.delay_gauge.set(self.queue_delay().as_secs_f64());
    }

    /// The connection's slot: by peer address (with its port), else by frontend (a
    /// plugin-api 1.0 frontend carries no address).
    fn slot(&self, caller: &Caller<'_>) -> usize {
        let hash = self.hasher.hash_one((caller.frontend, caller.peer));
        (hash % CLIENT_SLOTS as u64) as usize
    }
}

#[cfg(test)]
mod tests;
