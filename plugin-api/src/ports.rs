//! The ports a plug-in author implements, in plain Rust: [`TransactionLogger`],
//! [`SharedLog`] (1.3) and [`Frontend`].
//!
//! [`export_plugin!`](crate::export_plugin) wraps them in the FFI-safe objects of
//! [`native`](crate::native), catching panics on the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::PluginError;
use crate::event::Event;

/// Where the host's writes become durable, and where they come back from on start.
///
/// The host calls a logger from one thread at a time (its writer thread, or a
/// frontend's thread committing its own writes; not always the same thread), so
/// methods take `&mut self`. The call order is: `replay` once, then any number of `append`, then
/// `close`.
pub trait TransactionLogger: Send + 'static {
    /// Makes `batch` durable, in order, as one unit.
    ///
    /// **Durable** means: once this returns `Ok`, the events survive a crash of the
    /// process (and, under the logger's strictest sync policy, of the machine) and are
    /// returned by every later `replay`. The host acknowledges the writes to clients only
    /// after this returns `Ok`. On `Err`, none of the batch may be replayed later *if it
    /// can be helped*; the host will not reuse the batch's sequence numbers, so a partly
    /// written batch is at worst replayed, never confused with a later one.
    ///
    /// A logger should do one write and at most one sync per call, whatever the batch
    /// size: the host gathers concurrent writes into one batch to amortise that sync.
    /// Return [`ErrorCode::UNAVAILABLE`](crate::ErrorCode::UNAVAILABLE) when the backing
    /// store is down and a retry may succeed.
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError>;

    /// Feeds every logged event to `sink` in sequence order, in chunks of any size.
    ///
    /// Called once, before the first `append`. If `sink` returns an error, stop and
    /// return it. A logger that compacts may leave out superseded events (a key's
    /// earlier puts, deletes of keys put no more), but must still replay its newest
    /// event: the host numbers its next write after the highest sequence replayed, and
    /// keys' revisions (clients' entity tags, 1.4) are those numbers, so they must
    /// never be handed out twice.
    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError>;

    /// Flushes anything buffered and releases resources. No call follows.
    fn close(&mut self) -> Result<(), PluginError>;

    /// A flag this logger keeps current, saying whether appends are expected to succeed
    /// (e.g. false while its database is unreachable). The host folds it into readiness,
    /// so probes see "not ready" while writes would fail. Asked once, after opening;
    /// `None` (the default) means "always healthy".
    fn health(&self) -> Option<Health> {
        None
    }
}

/// A shared health flag a logger flips and the host reads from any thread.
#[derive(Clone, Debug)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// A flag starting out healthy or not.
    pub fn new(healthy: bool) -> Self {
        Health(Arc::new(AtomicBool::new(healthy)))
    }

    /// Sets the flag.
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Release);
    }

    /// Reads the flag.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A logger whose log other writers append to as well — other kvs nodes on one etcd
/// cluster, say (plugin-api 1.3). Declared with
/// [`export_plugin!`](crate::export_plugin)`(shared_logger: ...)`, which adds the
/// capability [`LOG_SHARED`](crate::capability::LOG_SHARED).
///
/// For such a logger the host never applies its own writes directly: it applies only
/// what [`follow`](SharedLog::follow) delivers, in log order, and acknowledges a write
/// once the delivered log has reached the position [`append`](SharedLog::append)
/// returned for it. So every node's map is a prefix of one global order, and a node
/// reads its own writes. Methods take `&self`: the host appends from its writer thread
/// while the logger delivers from threads of its own and `barrier` is called from
/// request threads.
pub trait SharedLog: Send + Sync + 'static {
    /// Makes `batch` durable in the shared log, in order, and returns the log position
    /// of its last event. Positions increase along the log. A batch may be stored in
    /// several order-preserving parts if the log limits its transactions.
    fn append(&self, batch: &[Event<'_>]) -> Result<u64, PluginError>;

    /// Starts delivering the whole log to `follower`, from the logger's own threads,
    /// until [`close`](SharedLog::close): first a snapshot (`begin_snapshot`, the live
    /// keys as puts, `end_snapshot` with the snapshot's position), then every later
    /// event in log order (`deliver`), and again a snapshot whenever the logger cannot
    /// continue from where it was (e.g. the log was compacted past it). Called once,
    /// before the first `append`; returns once delivery has started.
    fn follow(&self, follower: Follower) -> Result<(), PluginError>;

    /// A position at least as far as every write any node had acknowledged when this
    /// was called, as the log's quorum sees it (for linearizable reads: the host waits
    /// until delivery has reached it). Should also prompt delivery to report its
    /// progress, so an idle node catches up without new events.
    fn barrier(&self) -> Result<u64, PluginError>;

    /// Stops delivery and releases resources. No call follows.
    fn close(&self) -> Result<(), PluginError>;

    /// As [`TransactionLogger::health`].
    fn health(&self) -> Option<Health> {
        None
    }
}

/// The host's side of [`SharedLog::follow`]: where a shared logger delivers the log.
/// Cheap to clone; callable from any thread, one delivery at a time.
#[derive(Clone)]
pub struct Follower(pub(crate) std::sync::Arc<crate::native::v1_3::FollowSinkBox>);

impl Follower {
    /// A snapshot starts: the events until [`end_snapshot`](Follower::end_snapshot) are
    /// every live key as a put, in any order.
    pub fn begin_snapshot(&self) {
        self.0.begin_snapshot();
    }

    /// The snapshot is complete as of log position `position`: keys it did not
    /// mention are gone.
    pub fn end_snapshot(&self, position: u64) {
        self.0.end_snapshot(position);
    }

    /// The next events of the log in order (each event's `sequence` is its position),
    /// and the position the log has been delivered through after them: at least the
    /// last event's, and possibly more with no events at all (a progress report).
    pub fn deliver(&self, events: &[Event<'_>], through: u64) {
        self.0
            .deliver(abi_stable::std_types::RSlice::from_slice(events), through);
    }
}

/// A running frontend: it serves clients by calling the [`Store`](crate::Store) it was
/// started with.
///
/// A native frontend runs its own threads (e.g. its own tokio runtime): the host's async
/// runtime, if any, does not cross the library boundary.
pub trait Frontend: Send + 'static {
    /// Where clients reach it, e.g. `["http://127.0.0.1:8080"]`. The host logs these.
    fn endpoints(&self) -> Vec<String> {
        Vec::new()
    }

    /// Stops gracefully: stop accepting, let in-flight requests finish for at most
    /// `deadline`, then return. No call follows.
    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError>;

    /// Applies a changed config table while serving, keeping the listener and open
    /// connections: what `kvs reload` asks when only this frontend's table changed
    /// (plugin-api 1.4). Return `None` (the default) when it cannot — say, `listen`
    /// changed —: the host then starts a new instance with the new table beside this
    /// one (same address: a listener with `SO_REUSEPORT` shares it) and stops this one.
    /// `Some(Err(_))` refuses the table, saying why; this frontend keeps the old one.
    /// Called from the host's reload thread while requests are being served.
    fn reconfigure(&mut self, config: &str) -> Option<Result<(), PluginError>> {
        let _ = config;
        None
    }
}
