//! The writer's queue, and who commits what it holds.
//!
//! Writes and control messages wait in one FIFO queue. Whoever holds the writer's state
//! (a mutex) takes them in order and commits them, so log order stays queue order
//! whichever thread commits:
//!
//! * **The writer thread**, woken by the doorbell a queued write rings. The default.
//! * **The caller's own thread**, for a frontend that defers its commits
//!   ([`Caller::defers_commit`](crate::caller::Caller::defers_commit)): its writes wait
//!   without waking anyone until it calls [`WriteQueue::commit_here`], which it does
//!   when its connections have run what they had (before its thread would sleep). The
//!   writes every connection queued meanwhile share that one append, made on that
//!   thread, and their callers are woken there: no wake-up of another thread per write.
//!   That is what Redis does in its event loop before it sleeps. While deferred writes
//!   come, the writer thread looks every [`WATCHDOG`] and commits any nobody did, so a
//!   frontend that forgets costs latency, never a lost or stuck write.
//!
//! Work between batches (a logger swap, a cut, a switch, stopping) and every commit to
//! a shared log stay on the writer thread: a caller's thread that meets them rings the
//! doorbell and returns. A caller's thread never waits for the state either: if another
//! thread holds it, it rings the doorbell and returns, and the writer thread commits
//! what is left once the state is free (the hand-off this design avoids, only when two
//! committers meet). Nor does it commit when the doorbell has been rung (another
//! frontend's writes are queued): the writer thread is coming and takes everything
//! queued, so a mix of frontends keeps one committer and large appends.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use crossbeam_channel::{Receiver, SendError, Sender, TrySendError};

use super::WriterLoop;
use crate::write_request::Msg;

/// How long a deferred write may wait for its frontend to commit it before the writer
/// thread does.
pub const WATCHDOG: Duration = Duration::from_millis(5);

/// The writer thread stops looking every [`WATCHDOG`] after this many looks without a
/// new deferred write (a second), and sleeps until the doorbell or a sweep.
const QUIET_LOOKS: u32 = 200;

/// Batches a caller's thread commits in one [`WriteQueue::commit_here`] before it
/// leaves the rest to the writer thread (its own connections wait meanwhile).
const MAX_LEAD_BATCHES: usize = 4;

/// A caller's thread commits only while at most this many messages are queued; more
/// (pipelines, many busy clients) go to the writer thread, whose fsync then overlaps
/// the caller's thread parsing the next requests — measured faster for pipelined
/// writes, where one thread blocking in each fsync was up to a third slower.
const MAX_LEAD_QUEUED: usize = 64;

thread_local! {
    /// This thread holds the writer's state (it is committing, or it is the writer
    /// thread at work).
    static COMMITTING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as holding the writer's state until dropped (also on unwind).
struct Committing;

impl Committing {
    fn enter() -> Committing {
        COMMITTING.set(true);
        Committing
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        COMMITTING.set(false);
    }
}

/// The writer's queue: see the module documentation.
pub struct WriteQueue {
    tx: Sender<Msg>,
    /// Rung to wake the writer thread (a capacity of one: ringing twice is once).
    doorbell: (Sender<()>, Receiver<()>),
    state: Mutex<State>,
    /// A deferred write was queued since the writer thread last looked.
    deferred_seen: AtomicBool,
    /// The writer thread looks again within `watchdog`, so a deferred write need not
    /// ring.
    watching: AtomicBool,
    /// [`WATCHDOG`] (tests may change it).
    watchdog: Duration,
    /// The log is shared: only the writer thread commits (set when the writer starts).
    shared: AtomicBool,
    /// `[writer] frontend_commits`: false, and writes are never deferred and
    /// `commit_here` does nothing.
    frontend_commits: AtomicBool,
}

/// The writer's state, as whoever commits holds it.
pub(super) enum State {
    /// Before the writer starts: the queue's receiving end.
    Waiting(Receiver<Msg>),
    /// The writer.
    Running(Box<WriterLoop>),
    /// The writer stopped (or a panic while the state was held stopped it): its
    /// receiving end is gone, so nothing more can be queued. What a caller queued in the
    /// moment before stays in the channel until the store is dropped, and is then
    /// answered `unavailable` (the `Completion` drop guard).
    Stopped,
}

impl WriteQueue {
    /// A queue of at most `capacity` messages (`writer.queue_capacity`).
    pub fn new(capacity: usize) -> Arc<WriteQueue> {
        Self::with_watchdog(capacity, WATCHDOG)
    }

    /// A queue whose writer thread commits deferred writes after `watchdog` (not
    /// [`WATCHDOG`]).
    pub(super) fn with_watchdog(capacity: usize, watchdog: Duration) -> Arc<WriteQueue> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Arc::new(WriteQueue {
            tx,
            doorbell: crossbeam_channel::bounded(1),
            state: Mutex::new(State::Waiting(rx)),
            deferred_seen: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            watchdog,
            shared: AtomicBool::new(false),
            frontend_commits: AtomicBool::new(true),
        })
    }

    /// Whether frontends may commit their own writes (`[writer] frontend_commits`,
    /// default true): if not, every write rings for the writer thread.
    pub fn allow_frontend_commits(&self, allowed: bool) {
        self.frontend_commits.store(allowed, Ordering::Relaxed);
    }

    /// Queues `msg` unless the queue is full or the writer has stopped. Rings the
    /// doorbell, unless `deferred` and the writer thread is looking anyway: then the
    /// caller commits it ([`WriteQueue::commit_here`]).
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, msg: Msg, deferred: bool) -> Result<(), TrySendError<Msg>> {
        self.tx.try_send(msg)?;
        if deferred && self.frontend_commits.load(Ordering::Relaxed) {
            self.deferred_seen.store(true, Ordering::Relaxed);
            // Against the writer thread's check before it stops looking (`run`):
            // either it sees this write queued, or this sees it no longer looking.
            fence(Ordering::SeqCst);
            if self.watching.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        self.ring();
        Ok(())
    }

    /// Queues `msg` behind what is queued, waiting for room, and rings the doorbell.
    /// `Err` once the writer has stopped.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, msg: Msg) -> Result<(), SendError<Msg>> {
        self.tx.send(msg)?;
        self.ring();
        Ok(())
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Commits what is queued on the calling thread, a batch at a time, blocking for the
    /// logger's appends. What the calling thread does not do — work between batches, a
    /// shared log's commit, more than [`MAX_LEAD_BATCHES`] batches, anything while
    /// another thread holds the writer's state — it leaves to the writer thread,
    /// ringing the doorbell, and returns. Called again from inside a commit on this
    /// thread (a completion callback), it returns at once.
    pub fn commit_here(&self) {
        if COMMITTING.get() || !self.frontend_commits.load(Ordering::Relaxed) {
            return;
        }
        if self.shared.load(Ordering::Relaxed) {
            if !self.tx.is_empty() {
                self.ring();
            }
            return;
        }
        for _ in 0..MAX_LEAD_BATCHES {
            // This thread's own writes were queued before this look, so an empty queue
            // means someone has taken them. A rung doorbell means the writer thread is
            // coming for what is queued (another frontend's writes, or a hand-off):
            // it takes these too, where committing here first would have two
            // committers take turns on one log with smaller appends each.
            if self.tx.is_empty() || self.rung() {
                return;
            }
            if self.tx.len() > MAX_LEAD_QUEUED {
                break;
            }
            let mut state = match self.state.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(poisoned)) => self.stopped_by_panic(poisoned),
                Err(TryLockError::WouldBlock) => {
                    // Another thread is committing, or the writer thread is at work
                    // between batches (opening a logger may take long): waiting would
                    // stall every connection this thread serves. The doorbell makes
                    // the writer thread look once the state is free.
                    break;
                }
            };
            let State::Running(writer) = &mut *state else {
                return;
            };
            let done_here = {
                let _committing = Committing::enter();
                writer.lead()
            };
            drop(state);
            if !done_here {
                break;
            }
        }
        if !self.tx.is_empty() {
            self.ring();
        }
    }

    /// Tells the queue whether the writer's log is shared (only the writer thread
    /// commits to a shared log).
    pub(super) fn attach(&self, shared: bool) {
        self.shared.store(shared, Ordering::Relaxed);
    }

    /// Leaves what is queued to the writer thread, waking it: for a caller about to
    /// block for its deferred writes where committing them on its own thread would keep
    /// the other connections it serves from adding theirs (a WASM guest waiting inside
    /// its call).
    pub fn hand_over(&self) {
        if !self.tx.is_empty() {
            self.ring();
        }
    }

    fn ring(&self) {
        let _ = self.doorbell.0.try_send(());
    }

    /// The doorbell was rung and the writer thread has not answered yet.
    fn rung(&self) -> bool {
        !self.doorbell.1.is_empty()
    }

    /// The writer's state.
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| self.stopped_by_panic(poisoned))
    }

    /// The state after a panic while it was held (a bug): what the writer was doing is
    /// unknown, so it stops — its logger and receiving end are dropped, later writes are
    /// refused (the queue is disconnected), and nothing more is committed — as when the
    /// writer thread alone ran it and panicked.
    fn stopped_by_panic<'a>(
        &'a self,
        poisoned: std::sync::PoisonError<MutexGuard<'a, State>>,
    ) -> MutexGuard<'a, State> {
        let mut state = poisoned.into_inner();
        if matches!(*state, State::Running(_)) {
            tracing::error!("the writer stopped after a panic; writes are refused from now on");
            *state = State::Stopped;
        }
        self.state.clear_poison();
        state
    }

    /// The writer thread: commits what is queued whenever the doorbell rings, a sweep
    /// is due, or (while deferred writes come) every [`WATCHDOG`]; until it has taken
    /// `Msg::Stop` and everything queued before it. Returns the writer, stopped; `None`
    /// if a panic stopped it.
    pub(super) fn run(&self) -> Option<Box<WriterLoop>> {
        // Not looking until a deferred write comes.
        let mut quiet_looks = QUIET_LOOKS;
        loop {
            let mut state = self.state();
            let State::Running(writer) = &mut *state else {
                return None; // stopped by a panic
            };
            // A completion calling `commit_here` from this thread must not wait for the
            // state this thread holds.
            let stopped = {
                let _committing = Committing::enter();
                writer.work()
            };
            if stopped {
                let State::Running(writer) = std::mem::replace(&mut *state, State::Stopped) else {
                    unreachable!()
                };
                return Some(writer);
            }
            let sweep = writer.sweep_wait();
            drop(state);
            let mut watch = if self.deferred_seen.swap(false, Ordering::Relaxed) {
                quiet_looks = 0;
                true
            } else {
                quiet_looks = quiet_looks.saturating_add(1);
                quiet_looks < QUIET_LOOKS
            };
            self.watching.store(watch, Ordering::Relaxed);
            if !watch {
                // Against a deferred write's look at `watching`: either it saw this
                // thread no longer looking (and rang), or this sees it queued.
                fence(Ordering::SeqCst);
                if !self.tx.is_empty() {
                    self.watching.store(true, Ordering::Relaxed);
                    watch = true;
                }
            }
            let wait = match (sweep, watch) {
                (Some(sweep), true) => Some(sweep.min(self.watchdog)),
                (sweep, false) => sweep,
                (None, true) => Some(self.watchdog),
            };
            // Rung, timed out or (never: the queue holds both ends) disconnected: look.
            match wait {
                Some(wait) => drop(self.doorbell.1.recv_timeout(wait)),
                None => drop(self.doorbell.1.recv()),
            }
        }
    }
}
