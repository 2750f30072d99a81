//! The core store: a sharded in-memory map fed by the write path.
//!
//! Reads go straight to the map. Writes are validated (`writes`), then queued for the
//! single writer ([`crate::writer`]), which logs them and only then applies them to the
//! map; atomic updates and expiry are `atomic`, a backup's cut of the map is `cut`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;
pub use kvs_plugin_api::Limits;
use kvs_plugin_api::{Consistency, PluginError};

use crate::caller::{self, Caller, RequestHook};
use crate::metrics::Metrics;
use crate::overload::Overload;
use crate::ports::HealthCheck;
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::telemetry;
use crate::write_request::{Completion, Msg};
use crate::writer::WriteQueue;

pub use crate::map::Map;

/// A linearizable read's barrier (`shared::read_barrier`).
/// Given the reader's deadline, if it has one.
type ReadBarrier = Box<dyn Fn(Option<Instant>) -> Result<(), PluginError> + Send + Sync>;

/// The store shared by the host and every frontend. Cheap to share via `Arc`.
pub struct Store {
    /// Applied state. Written only by the writer thread, in log order.
    map: Arc<Map>,
    /// Queue to the writer. Bounded, so an overloaded host answers `unavailable` rather
    /// than growing without limit.
    writes: Arc<WriteQueue>,
    /// Size limits enforced before a write is queued; a reload may change them.
    max_key_bytes: AtomicU64,
    max_value_bytes: AtomicU64,
    /// Where the host is in its life: see [`Phase`].
    phase: AtomicU8,
    /// The logger's own health, if it reports one: part of readiness. Replaced when
    /// the logger is swapped.
    logger_health: ArcSwapOption<HealthCheck>,
    /// Sees every frontend request first (see [`crate::caller`]); a reload may
    /// replace it (new access rules).
    hook: ArcSwapOption<Arc<dyn RequestHook>>,
    /// A linearizable read's barrier, with a shared log; and whether reads use it
    /// unless the client asks otherwise.
    read_barrier: std::sync::OnceLock<(ReadBarrier, bool)>,
    /// What this kvs counts.
    metrics: Arc<Metrics>,
    /// Admission under overload; shared with the writer, which measures the queue.
    overload: Arc<Overload>,
    /// What the write path can do beyond puts and deletes; set at start-up and when
    /// the logger is swapped.
    features: ArcSwapOption<WriteFeatures>,
    /// Per-client rate limits (`[rate_limit]`; off unless set).
    rate_limiter: RateLimiter,
}

/// `done`, keeping `span` open until the write completes (a write's span lasts until it
/// is durable). Tracing off: `done` itself.
pub(crate) fn held(span: tracing::Span, done: Completion) -> Completion {
    if span.is_disabled() {
        return done;
    }
    // tracing-opentelemetry ends a span at its last exit: entering it to complete makes
    // it end once the outcome is delivered.
    Completion::with_reply(move |result| span.in_scope(|| done.reply(result)))
}

/// `done`, counting the write's outcome and latency (until durable) on completion.
fn metered(caller: &Caller<'_>, op: caller::Action, done: Completion) -> Completion {
    let Some(meter) = caller.meter.filter(|m| m.enabled()).cloned() else {
        return done;
    };
    let started = Instant::now();
    Completion::with_reply(move |result| {
        meter.record(op, result.as_ref().map(|_| ()), started.elapsed());
        done.reply(result)
    })
}

/// A frontend caller's read, `read`, in a get's span and counted as a get: found, a
/// miss, or the error.
fn read_as<T>(
    caller: &Caller<'_>,
    read: impl FnOnce() -> Result<Option<T>, PluginError>,
) -> Result<Option<T>, PluginError> {
    let span = telemetry::store_span(caller::Action::Get);
    let _in_span = span.enter();
    let meter = caller.meter.filter(|m| m.enabled());
    let started = meter.map(|_| Instant::now());
    let result = read();
    if let (Some(meter), Some(started)) = (meter, started) {
        match &result {
            Ok(Some(_)) => meter.record(caller::Action::Get, Ok(()), started.elapsed()),
            Ok(None) => meter.record_miss(started.elapsed()),
            Err(e) => meter.record(caller::Action::Get, Err(e), started.elapsed()),
        }
    }
    result
}

/// The host's life, as the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Replaying the log: not ready; reads and writes answer `unavailable`.
    Starting = 0,
    /// Ready; reads and writes served.
    Serving = 1,
    /// Shutdown began: not ready (probes say so), but writes still accepted so that
    /// in-flight requests finish while frontends drain.
    Draining = 2,
    /// Frontends are stopped; writes refused, the writer is flushing.
    Stopped = 3,
}

/// How much the store holds: keys, and bytes of keys and values (the map: writes the
/// logger made durable, not those still queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Number of keys.
    pub keys: u64,
    /// Bytes of keys and values together.
    pub data_bytes: u64,
}

impl Store {
    pub(crate) fn new(
        map: Arc<Map>,
        writes: Arc<WriteQueue>,
        limits: Limits,
        logger_health: Option<HealthCheck>,
        hook: Option<Arc<dyn RequestHook>>,
        metrics: Arc<Metrics>,
        overload: Arc<Overload>,
    ) -> Self {
        Store {
            map,
            writes,
            max_key_bytes: AtomicU64::new(limits.max_key_bytes),
            max_value_bytes: AtomicU64::new(limits.max_value_bytes),
            phase: AtomicU8::new(Phase::Starting as u8),
            logger_health: ArcSwapOption::new(logger_health.map(Arc::new)),
            hook: ArcSwapOption::new(hook.map(Arc::new)),
            read_barrier: std::sync::OnceLock::new(),
            metrics,
            overload,
            features: ArcSwapOption::empty(),
            rate_limiter: RateLimiter::default(),
        }
    }

    /// Per-client rate limits, at start-up and from a reload.
    pub(crate) fn set_rate_limit(&self, config: &RateLimitConfig) {
        self.rate_limiter.set(config);
    }

    /// Says what the write path can do beyond puts and deletes: at start-up, and again
    /// when the logger is swapped.
    pub(crate) fn set_write_features(&self, features: WriteFeatures) {
        self.features.store(Some(Arc::new(features)));
    }

    /// Queues a control message for the writer behind the writes queued so far,
    /// waiting for room; false if the writer has stopped.
    pub(crate) fn send_to_writer(&self, msg: Msg) -> bool {
        self.writes.send(msg).is_ok()
    }

    /// The health check of the logger swapped in.
    pub(crate) fn set_logger_health(&self, health: Option<HealthCheck>) {
        self.logger_health.store(health.map(Arc::new));
    }

    /// New size limits, from a reload: writes checked from now on see them.
    pub(crate) fn set_limits(&self, limits: Limits) {
        self.max_key_bytes
            .store(limits.max_key_bytes, Ordering::Relaxed);
        self.max_value_bytes
            .store(limits.max_value_bytes, Ordering::Relaxed);
    }

    /// A new request hook (or none), from a reload: requests that begin from now on go
    /// through it.
    pub(crate) fn set_request_hook(&self, hook: Option<Arc<dyn RequestHook>>) {
        self.hook.store(hook.map(Arc::new));
    }

    /// Gives reads over a shared log their barrier: used by every read if
    /// `by_default`, else by those that ask for linearizable reads. Set once, at
    /// start-up.
    pub(crate) fn set_read_barrier(
        &self,
        barrier: impl Fn(Option<Instant>) -> Result<(), PluginError> + Send + Sync + 'static,
        by_default: bool,
    ) {
        let _ = self.read_barrier.set((Box::new(barrier), by_default));
    }

    /// What this kvs counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Admission under overload (the writer measures the queue through it).
    pub fn overload(&self) -> &Arc<Overload> {
        &self.overload
    }

    /// Writes waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.writes.len()
    }

    /// Commits the writes queued so far on the calling thread, blocking it for the
    /// logger's append (or waiting for a commit under way elsewhere): what a frontend
    /// whose writes are deferred ([`Caller::defers_commit`]) calls once its connections
    /// have run what they had. See [`WriteQueue`].
    pub fn commit_queued(&self) {
        self.writes.commit_here()
    }

    /// Wakes the writer thread for the writes queued so far: for a deferring caller
    /// that must block for them inside a call, where committing on its own thread would
    /// make every such call an append of its own. See [`WriteQueue::hand_over`].
    pub fn hand_over_queued(&self) {
        self.writes.hand_over()
    }

    /// Whether the logger says it is healthy (true if it reports nothing).
    pub fn logger_healthy(&self) -> bool {
        self.logger_health
            .load()
            .as_deref()
            .is_none_or(|healthy| healthy())
    }

    /// Whether `caller` may read the admin listener's `/metrics` and `/plugins`: the
    /// request hook decides (no hook: anyone may).
    pub fn admit_admin(&self, caller: &Caller<'_>) -> Result<(), PluginError> {
        match &*self.hook.load() {
            Some(hook) => hook.check_admin(caller),
            None => Ok(()),
        }
    }

    /// Whether `caller` may back up the whole store (or, with `writes`, migrate it):
    /// the request hook's `check_whole_store`.
    pub fn admit_whole_store(&self, caller: &Caller<'_>, writes: bool) -> Result<(), PluginError> {
        match &*self.hook.load() {
            Some(hook) => hook.check_whole_store(caller, writes),
            None => Ok(()),
        }
    }

    /// The request hook's decision about `op` on `key`.
    fn admit(
        &self,
        op: caller::Action,
        key: &[u8],
        caller: &Caller<'_>,
    ) -> Result<(), PluginError> {
        match &*self.hook.load() {
            Some(hook) => hook.check(op, key, caller),
            None => Ok(()),
        }
    }

    /// What every frontend operation passes once before it is served: the request
    /// hook, then the caller's rate limit ([`crate::rate_limit`]).
    fn admit_op(
        &self,
        op: caller::Action,
        key: &[u8],
        caller: &Caller<'_>,
    ) -> Result<(), PluginError> {
        self.admit(op, key, caller)?;
        self.rate_limiter
            .take(caller, key, || self.principal(caller))
    }

    /// Whom the request hook verified `caller` to be.
    fn principal(&self, caller: &Caller<'_>) -> Option<Arc<str>> {
        self.hook
            .load()
            .as_ref()
            .and_then(|hook| hook.principal(caller))
    }

    /// Whether `caller` may do `action` on `key`: what the store and the request hook
    /// would answer the call itself, without making it (plugin-api 1.4's `check`). A
    /// frontend asks it for every key of a multi-key write before queueing any.
    pub fn check_as(
        &self,
        caller: &Caller<'_>,
        action: caller::Action,
        key: &[u8],
    ) -> Result<(), PluginError> {
        self.check_key(key)?;
        self.admit(action, key, caller)?;
        self.rate_limiter
            .precheck(caller, key, || self.principal(caller))
    }

    /// [`Store::get`] on behalf of a frontend's caller: the request hook decides first.
    pub fn get_as(&self, caller: &Caller<'_>, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        self.get_as_consistent(caller, key, Consistency::DEFAULT)
    }

    /// [`Store::get_as`] at the read consistency the client asked for.
    pub fn get_as_consistent(
        &self,
        caller: &Caller<'_>,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        read_as(caller, || {
            self.admit_op(caller::Action::Get, key, caller)
                .and_then(|()| self.get_before(key, consistency, caller.deadline))
        })
    }

    /// [`Store::get_as`], the value lent to `with` in place (see [`Map::get_with`]:
    /// `with` may run more than once) instead of copied into a `Vec`.
    pub fn get_with_as<R>(
        &self,
        caller: &Caller<'_>,
        key: &[u8],
        with: impl FnMut(&[u8]) -> R,
    ) -> Result<Option<R>, PluginError> {
        read_as(caller, || {
            self.admit_op(caller::Action::Get, key, caller)?;
            self.ready_to_read(key, Consistency::DEFAULT, caller.deadline)?;
            Ok(self.map.get_with(key, with))
        })
    }

    /// The value under `key`, if any. Never touches the logger. The host's own calls
    /// (tools, tests) use this directly; a frontend's go through [`Store::get_as`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        self.get_consistent(key, Consistency::DEFAULT)
    }

    /// [`Store::get`] at a read consistency (which matters only over a shared log).
    pub fn get_consistent(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        self.get_before(key, consistency, None)
    }

    /// [`Store::get_consistent`] for a reader that stops waiting at `deadline`.
    fn get_before(
        &self,
        key: &[u8],
        consistency: Consistency,
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        self.ready_to_read(key, consistency, deadline)?;
        Ok(self.map.get(key))
    }

    /// Whether `key` may be read now, at `consistency`: the key's limits, not while
    /// replaying, and after the barrier the consistency calls for.
    fn ready_to_read(
        &self,
        key: &[u8],
        consistency: Consistency,
        deadline: Option<Instant>,
    ) -> Result<(), PluginError> {
        self.check_key(key)?;
        if self.phase() == Phase::Starting {
            // The map is half-replayed: an answer now could be stale or missing.
            return Err(PluginError::unavailable(
                "kvs is starting: replaying the transaction log; retry shortly",
            ));
        }
        if let Some((barrier, by_default)) = self.read_barrier.get() {
            let linearizable = match consistency {
                Consistency::LINEARIZABLE => true,
                Consistency::LOCAL => false,
                _ => *by_default,
            };
            if linearizable {
                barrier(deadline)?;
            }
        }
        Ok(())
    }

    /// Whether kvs is ready: replay is done, shutdown has not begun, and the logger (if
    /// it reports its health) expects writes to succeed.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Serving && self.logger_healthy()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            2 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The configured size limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes.load(Ordering::Relaxed),
            max_value_bytes: self.max_value_bytes.load(Ordering::Relaxed),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// How many keys and bytes of keys and values the store holds.
    pub fn stats(&self) -> Stats {
        Stats {
            keys: self.map.len() as u64,
            data_bytes: u64::try_from(self.metrics.bytes.get()).unwrap_or(0),
        }
    }

    /// Whether some key has a deadline (a TTL).
    pub fn has_deadlines(&self) -> bool {
        self.map.next_deadline().is_some()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A copy of every entry, sorted by key. For tests and tools, not the hot path.
    pub fn snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all: Vec<_> = self
            .map
            .iter()
            .map(|e| (e.key().to_vec(), e.value().to_vec()))
            .collect();
        all.sort();
        all
    }
}

mod atomic;
mod cut;
mod writes;

pub use atomic::WriteFeatures;

#[cfg(test)]
mod tests;
