//! When the writes this frontend's connections queued are committed (plugin-api 1.7's
//! [`Store::commit`]): when the runtime's thread has nothing left to run, before it
//! waits for the network — what Redis does before its event loop sleeps — so that
//! every connection served in that turn shares one append and one fsync.
//!
//! Committing earlier (a connection about to wait for its writes yielding once, then
//! committing) was measured worse: it commits as soon as the first connection of a
//! turn waits, so 32 clients doing `INCR` one at a time shared an fsync in groups of
//! ~12 instead of ~16 (Redis: ~18), and ran ~20% slower. A thread that always has a
//! ready connection never goes idle: there a write waits for at most
//! [`COMMIT_AFTER_COMMANDS`] more commands (of any connection), as in a long turn of
//! Redis's loop. (The host's writer thread commits any write left queued within a
//! few milliseconds whatever happens.)

use std::sync::atomic::{AtomicU64, Ordering};

use kvs_plugin_api::Store;

/// Commands run, on any connection of the listener, after which writes still queued
/// are committed even though the thread never went idle (~100 us of `GET`s).
pub(crate) const COMMIT_AFTER_COMMANDS: u64 = 64;

/// Whether writes wait for a commit, and for how many commands they have waited.
pub(crate) struct Commits {
    store: Store,
    /// 0: nothing waits; else 1 + the commands run since a write was queued.
    waited: AtomicU64,
}

impl Commits {
    pub(crate) fn new(store: Store) -> Commits {
        Commits {
            store,
            waited: AtomicU64::new(0),
        }
    }

    /// A connection queued writes and waits for them.
    pub(crate) fn queued(&self) {
        // Load before store: a write per command would otherwise dirty the line for
        // nothing. Races between threads only move a commit earlier or to the next
        // idle turn.
        if self.waited.load(Ordering::Relaxed) == 0 {
            self.waited.store(1, Ordering::Relaxed);
        }
    }

    /// A command ran: commits once queued writes have waited for
    /// [`COMMIT_AFTER_COMMANDS`] of them.
    pub(crate) fn ran(&self) {
        let waited = self.waited.load(Ordering::Relaxed);
        if waited == 0 {
            return;
        }
        if waited > COMMIT_AFTER_COMMANDS {
            // A swap, not a store: a write another thread marked meanwhile is either
            // in this commit or still marked for the next one.
            if self.waited.swap(0, Ordering::AcqRel) != 0 {
                self.store.commit();
            }
        } else {
            self.waited.store(waited + 1, Ordering::Relaxed);
        }
    }

    /// The thread has nothing left to run: commits what waits (the runtime's idle
    /// hook).
    pub(crate) fn idle(&self) {
        if self.waited.swap(0, Ordering::AcqRel) != 0 {
            self.store.commit();
        }
    }
}
