//! When the writes a frontend's connections queued are committed, for a frontend that
//! commits them itself (plugin-api 1.7's `Store::commit`, or the host's WASM frontends):
//! when the runtime's thread has nothing left to run, before it waits for the network —
//! what Redis does before its event loop sleeps — so that every connection served in
//! that turn shares one append and one fsync. The runtime calls [`Commits::idle`] from
//! its park hook ([`crate::tcp::IdleHook`]).
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

/// Commands run, on any connection of the listener, after which writes still queued
/// are committed even though the thread never went idle (~100 us of `GET`s).
pub const COMMIT_AFTER_COMMANDS: u64 = 64;

/// Whether writes wait for a commit, and for how many commands they have waited.
pub struct Commits {
    /// Commits what is queued, on the calling thread.
    commit: Box<dyn Fn() + Send + Sync>,
    /// 0: nothing waits; else 1 + the commands run since a write was queued.
    waited: AtomicU64,
}

impl Commits {
    /// `commit` commits the queued writes on the calling thread (e.g. plugin-api's
    /// `Store::commit`).
    pub fn new(commit: impl Fn() + Send + Sync + 'static) -> Commits {
        Commits {
            commit: Box::new(commit),
            waited: AtomicU64::new(0),
        }
    }

    /// A connection queued writes and waits for them.
    pub fn queued(&self) {
        // Load before store: a write per command would otherwise dirty the line for
        // nothing. Races between threads only move a commit earlier or to the next
        // idle turn.
        if self.waited.load(Ordering::Relaxed) == 0 {
            self.waited.store(1, Ordering::Relaxed);
        }
    }

    /// A command ran: commits once queued writes have waited for
    /// [`COMMIT_AFTER_COMMANDS`] of them.
    pub fn ran(&self) {
        let waited = self.waited.load(Ordering::Relaxed);
        if waited == 0 {
            return;
        }
        if waited > COMMIT_AFTER_COMMANDS {
            // A swap, not a store: a write another thread marked meanwhile is either
            // in this commit or still marked for the next one.
            if self.waited.swap(0, Ordering::AcqRel) != 0 {
                (self.commit)();
            }
        } else {
            self.waited.store(waited + 1, Ordering::Relaxed);
        }
    }

    /// The thread has nothing left to run: commits what waits (the runtime's idle
    /// hook).
    pub fn idle(&self) {
        if self.waited.swap(0, Ordering::AcqRel) != 0 {
            (self.commit)();
        }
    }

    /// The idle hook for a listener's runtime ([`crate::tcp::TcpSettings::when_idle`]).
    pub fn idle_hook(self: &std::sync::Arc<Self>) -> crate::tcp::IdleHook {
        let commits = self.clone();
        crate::tcp::IdleHook(std::sync::Arc::new(move || commits.idle()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn counting() -> (Arc<AtomicU64>, Commits) {
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        let commits = Commits::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        (count, commits)
    }

    #[test]
    fn nothing_queued_commits_nothing() {
        let (count, commits) = counting();
        commits.idle();
        for _ in 0..1000 {
            commits.ran();
        }
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn queued_writes_are_committed_at_idle_once() {
        let (count, commits) = counting();
        commits.queued();
        commits.queued();
        commits.ran();
        assert_eq!(
            count.load(Ordering::Relaxed),
            0,
            "not before the thread idles"
        );
        commits.idle();
        commits.idle();
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_thread_that_never_idles_commits_after_the_bound() {
        let (count, commits) = counting();
        commits.queued();
        for _ in 0..COMMIT_AFTER_COMMANDS {
            commits.ran();
        }
        assert_eq!(count.load(Ordering::Relaxed), 0);
        commits.ran();
        assert_eq!(count.load(Ordering::Relaxed), 1);
        commits.idle();
        assert_eq!(count.load(Ordering::Relaxed), 1, "nothing left to commit");
    }
}
