//! Overload: what the host refuses when frontends offer writes faster than the logger
//! takes them, so that the writes it admits keep a bounded latency and one greedy
//! client cannot starve the others.
//!
//! * **Queueing delay.** The writer reports how long each batch took and how many writes
//!   it held; from that (a moving average of the time per write) and the writes queued
//!   now, the store estimates at once how long a write queued now would wait
//!   ([`Overload::wait_estimate`]). It also records how long the first write of each
//!   batch actually waited, for `/metrics`.
//! * **Shedding.** While the estimate is above `writer.shed_delay_ms`, a frontend's write
//!   is refused at once (`unavailable`: 503, a RESP error, gRPC UNAVAILABLE) instead of
//!   joining the queue if its connection already holds at least an equal share of the
//!   writes in flight and other connections have writes in flight too, and its writes
//!   have been in flight for [`BURST`] (so one request's writes, an `MSET`'s keys, are
//!   not split). A connection that sends one request at a time is never refused for
//!   it, nor is a client alone (nobody waits behind it but itself); the greedy
//!   connections (multiplexed HTTP/2 and gRPC; RESP reads a connection's next pipeline
//!   only once the last is durable) are the ones refused, and the listener's
//!   `max_connections_per_peer` bounds how many connections one address has.
//!   Connections are told apart by the peer address the frontend carried (with its
//!   port); a frontend that carries none counts as one connection. Reads never queue,
//!   so they are never shed.
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

pub use kvs_config::{DEFAULT_QUEUE_MAX_BYTES, DEFAULT_SHED_DELAY_MS};

/// Writes a connection makes within this long of its first (with nothing of its own in
/// flight before) are never shed: a request that writes several keys (`MSET`, a
/// pipeline the RESP frontend read in one go, a WASM guest's writes) is not cut in two.
pub const BURST: Duration = Duration::from_millis(50);

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
    /// The first write of the writer's latest batch: how long it waited, in µs.
    queue_delay_us: AtomicU64,
    /// The writer's recent time per write (a moving average over batches), in ns.
    per_write_ns: AtomicU64,
    /// Bytes of keys and values queued and not yet taken by the writer.
    queued_bytes: AtomicU64,
    in_flight: Box<[AtomicU32]>,
    /// When each slot's current burst began (ms after `base`): its first write with
    /// nothing of its own in flight.
    burst_start_ms: Box<[AtomicU64]>,
    base: Instant,
    /// Slots with a write in flight.
    active: AtomicU32,
    /// Writes in flight, all slots.
    total_in_flight: AtomicU32,
    /// Seeded per process: a client cannot pick its port to share another's slot.
    hasher: foldhash::fast::RandomState,
    refused: RefusalCounters,
    delay_gauge: Gauge,
}

/// An admitted write of a client slot, counted in flight until dropped (its
/// [`Completion`] holds it until the outcome is delivered).
pub struct InFlight {
    overload: Arc<Overload>,
    slot: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.overload.leave(self.slot);
    }
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
            queue_delay_us: AtomicU64::new(0),
            per_write_ns: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            in_flight: (0..CLIENT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            burst_start_ms: (0..CLIENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            base: Instant::now(),
            active: AtomicU32::new(0),
            total_in_flight: AtomicU32::new(0),
            hasher: foldhash::fast::RandomState::default(),
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

    /// Admits a write of `bytes` (key and value) for the writer's queue, which holds
    /// `queued` writes now, or says why not. `caller` is the frontend's client (`None`:
    /// the host's own write, never shed). An admitted frontend write's `done` is
    /// wrapped to free its connection's slot.
    pub fn admit(
        self: &Arc<Self>,
        caller: Option<&Caller<'_>>,
        queued_writes: usize,
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
        // One clock read per write: the queueing time and the burst's start share it.
        let now = Instant::now();
        let admitted = Admitted {
            queued: Some(now),
            deadline: caller.and_then(|c| c.deadline),
            bytes,
        };
        let Some(caller) = caller else {
            return Ok((admitted, done));
        };
        let slot = self.slot(caller);
        let before = self.enter(slot, now);
        if let Some(delay) = self.shedding(queued_writes)
            && self.more_than_its_share(before)
            && self.past_burst(slot, now)
        {
            self.leave(slot);
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.refused.shed.inc();
            return Err((
                PluginError::unavailable(format!(
                    "kvs is overloaded: a write queued now would wait about {} ms \
                     (writer.shed_delay_ms is {}) and this connection already has more \
                     writes in flight than other clients; retry later",
                    delay.as_millis(),
                    self.shed_delay.unwrap_or_default().as_millis()
                )),
                done,
            ));
        }
        let done = done.holding(InFlight {
            overload: self.clone(),
            slot,
        });
        Ok((admitted, done))
    }

    /// Counts a write in flight for `slot`; returns how many it had before.
    fn enter(&self, slot: usize, now: Instant) -> u32 {
        let before = self.in_flight[slot].fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            self.active.fetch_add(1, Ordering::Relaxed);
            self.burst_start_ms[slot].store(self.ms_at(now), Ordering::Relaxed);
        }
        self.total_in_flight.fetch_add(1, Ordering::Relaxed);
        before
    }

    /// A write of `slot` is done (or was refused).
    fn leave(&self, slot: usize) {
        if self.in_flight[slot].fetch_sub(1, Ordering::Relaxed) == 1 {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
        self.total_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Milliseconds from `base` to `at`.
    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Whether `slot`'s current burst began at least [`BURST`] before `now`.
    fn past_burst(&self, slot: usize, now: Instant) -> bool {
        let started = self.burst_start_ms[slot].load(Ordering::Relaxed);
        self.ms_at(now).saturating_sub(started) >= BURST.as_millis() as u64
    }

    /// Whether a connection that had `before` writes in flight holds at least its share
    /// of all writes in flight, with other connections waiting: a connection alone is
    /// never shed (nobody waits behind it but itself), nor one with nothing in flight.
    fn more_than_its_share(&self, before: u32) -> bool {
        let active = u64::from(self.active.load(Ordering::Relaxed));
        let total = u64::from(self.total_in_flight.load(Ordering::Relaxed));
        before > 0 && active >= 2 && u64::from(before + 1) * active >= total
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
    /// the measured queueing delay.
    pub fn taken(&self, admitted: &Admitted, first_of_batch: bool, now: Instant) {
        self.queued_bytes
            .fetch_sub(admitted.bytes, Ordering::Relaxed);
        if first_of_batch && let Some(queued) = admitted.queued {
            let waited = now.saturating_duration_since(queued).as_micros() as u64;
            self.queue_delay_us.store(waited, Ordering::Relaxed);
        }
    }

    /// The writer found its queue empty: the measured delay goes to 0.
    pub fn idle(&self) {
        self.queue_delay_us.store(0, Ordering::Relaxed);
    }

    /// The writer committed a batch of `writes` in `took`: updates its time per write
    /// (a moving average, weight 1/8, so one slow fsync moves it only for a few batches).
    pub fn batch_done(&self, writes: usize, took: Duration) {
        if writes == 0 {
            return;
        }
        let sample = took.as_nanos() as u64 / writes as u64;
        let old = self.per_write_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.per_write_ns.store(new, Ordering::Relaxed);
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

    /// How long a write queued behind `queued_writes` others would wait: their number
    /// times the writer's recent time per write.
    pub fn wait_estimate(&self, queued_writes: usize) -> Duration {
        Duration::from_nanos(
            (queued_writes as u64).saturating_mul(self.per_write_ns.load(Ordering::Relaxed)),
        )
    }

    /// The estimated wait, if writes are being shed now: it is above the target.
    fn shedding(&self, queued_writes: usize) -> Option<Duration> {
        let target = self.shed_delay?;
        let wait = self.wait_estimate(queued_writes);
        (wait > target).then_some(wait)
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
