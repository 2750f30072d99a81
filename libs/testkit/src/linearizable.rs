//! A linearizability checker for histories of reads, writes and compare-and-sets on
//! registers (keys),
//! exhaustive over short histories: Wing and Gong's search with memoisation (as in
//! porcupine). Keys are independent objects, so each is checked alone.
//!
//! No well-kept checker exists as a Rust or Python library (Knossos is Clojure,
//! porcupine Go), hence this one; its tests show it accepts linearizable histories and
//! rejects a non-linearizable one.

use std::collections::{BTreeMap, HashSet};

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Wrote this value.
    Write(String),
    /// Read this value (`None`: the key was missing).
    Read(Option<String>),
    /// Set `new` if the register held `expected` (`None`: missing); `ok` is whether it
    /// did, `None` if the outcome is unknown (then `end` is `u64::MAX`).
    Cas {
        /// The value it had to hold.
        expected: Option<String>,
        /// The value it was set to.
        new: String,
        /// What the client was told.
        ok: Option<bool>,
    },
}

/// One client operation on one key: when it was invoked and when it returned, in any
/// monotonic unit (e.g. nanoseconds since the test began). A write whose outcome is
/// unknown (it failed or timed out, but may have happened) has `end = u64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The register.
    pub key: String,
    /// Invocation time.
    pub start: u64,
    /// Response time.
    pub end: u64,
    /// What it did.
    pub action: Action,
}

/// Whether the whole history is linearizable, every key starting missing. On failure,
/// the key whose history is not.
pub fn check(history: &[Op]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        // Reads of the initial state with nothing else concurrent are trivially fine;
        // the search is exponential only in concurrency, and u128 bounds its size.
        assert!(
            ops.len() <= 128,
            "key {key}: at most 128 operations per key"
        );
        let mut seen = HashSet::new();
        if !search(&ops, 0, &None, &mut seen) {
            return Err(format!(
                "the history of key {key:?} is not linearizable: {ops:#?}"
            ));
        }
    }
    Ok(())
}

/// Can the ops not in `done` be linearized after `done`, from `state`?
fn search(
    ops: &[&Op],
    done: u128,
    state: &Option<String>,
    seen: &mut HashSet<(u128, Option<String>)>,
) -> bool {
    let all = if ops.len() == 128 {
        u128::MAX
    } else {
        (1u128 << ops.len()) - 1
    };
    if done == all {
        return true;
    }
    if !seen.insert((done, state.clone())) {
        return false; // explored already, and it failed
    }
    // An op may go next only if no other pending op returned before it was invoked.
    let pending = |i: usize| done & (1 << i) == 0;
    let earliest_end = (0..ops.len())
        .filter(|&i| pending(i))
        .map(|i| ops[i].end)
        .min();
    for i in (0..ops.len()).filter(|&i| pending(i)) {
        if earliest_end.is_some_and(|end| end < ops[i].start) {
            continue;
        }
        let next: Vec<Option<String>> = match &ops[i].action {
            Action::Write(v) => vec![Some(v.clone())],
            Action::Read(v) if v == state => vec![state.clone()],
            Action::Read(_) => vec![],
            Action::Cas { expected, new, ok } => {
                let holds = expected == state;
                match ok {
                    Some(true) if holds => vec![Some(new.clone())],
                    Some(false) if !holds => vec![state.clone()],
                    Some(_) => vec![],
                    // Unknown: it may have applied (if it could) or not.
                    None if holds => vec![Some(new.clone()), state.clone()],
                    None => vec![state.clone()],
                }
            }
        };
        if next
            .iter()
            .any(|next| search(ops, done | (1 << i), next, seen))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: u64, end: u64, v: &str) -> Op {
        Op {
            key: "k".into(),
            start,
            end,
            action: Action::Write(v.into()),
        }
    }
    fn r(start: u64, end: u64, v: Option<&str>) -> Op {
        Op {
            key: "k".into(),
            start,
            end,
            action: Action::Read(v.map(Into::into)),
        }
    }

    fn cas(start: u64, end: u64, expected: Option<&str>, new: &str, ok: bool) -> Op {
        Op {
            key: "k".into(),
            start,
            end,
            action: Action::Cas {
                expected: expected.map(Into::into),
                new: new.into(),
                ok: Some(ok),
            },
        }
    }

    #[test]
    fn compare_and_set_is_checked_against_the_register() {
        // Two concurrent CAS from the same value: only one may succeed.
        assert!(
            check(&[
                w(0, 1, "0"),
                cas(2, 5, Some("0"), "1", true),
                cas(2, 5, Some("0"), "1", false),
                r(6, 7, Some("1")),
            ])
            .is_ok()
        );
        assert!(
            check(&[
                w(0, 1, "0"),
                cas(2, 5, Some("0"), "a", true),
                cas(2, 5, Some("0"), "b", true),
            ])
            .is_err(),
            "a lost update: both CAS from 0 succeeded"
        );
        assert!(check(&[cas(0, 1, None, "x", true), r(2, 3, Some("x"))]).is_ok());
        assert!(check(&[cas(0, 1, None, "x", false), r(2, 3, None)]).is_err());
    }

    #[test]
    fn accepts_linearizable_histories() {
        // Sequential.
        assert!(
            check(&[
                w(0, 1, "a"),
                r(2, 3, Some("a")),
                w(4, 5, "b"),
                r(6, 7, Some("b"))
            ])
            .is_ok()
        );
        // A read concurrent with a write may see either value.
        assert!(check(&[w(0, 10, "a"), r(1, 2, None), r(3, 4, Some("a"))]).is_ok());
        // Concurrent writes may land in either order; reads after both agree with one.
        assert!(
            check(&[
                w(0, 10, "a"),
                w(1, 9, "b"),
                r(11, 12, Some("a")),
                r(13, 14, Some("a"))
            ])
            .is_ok()
        );
        // A write of unknown outcome may or may not have happened.
        assert!(check(&[w(0, u64::MAX, "x"), r(5, 6, None)]).is_ok());
        assert!(check(&[w(0, u64::MAX, "x"), r(5, 6, Some("x"))]).is_ok());
    }

    #[test]
    fn rejects_non_linearizable_histories() {
        // A stale read after a write completed.
        assert!(check(&[w(0, 1, "a"), r(2, 3, None)]).is_err());
        // Two reads after both writes finished disagree, and the second goes back.
        assert!(
            check(&[
                w(0, 10, "a"),
                w(1, 9, "b"),
                r(11, 12, Some("a")),
                r(13, 14, Some("b"))
            ])
            .is_err()
        );
        // A value nobody wrote.
        assert!(check(&[w(0, 1, "a"), r(2, 3, Some("z"))]).is_err());
        // Reads going back in time across clients.
        assert!(
            check(&[
                w(0, 1, "a"),
                w(2, 3, "b"),
                r(4, 5, Some("b")),
                r(6, 7, Some("a"))
            ])
            .is_err()
        );
    }
}
