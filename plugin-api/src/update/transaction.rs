//! Transactions (1.6): several updates made at one place in log order, all or none,
//! and conditions on a key's deadline (`EXPIRE ... NX|XX|GT|LT`).
//!
//! A transaction travels through the same entry points as an update (`update_with`,
//! `kvs_update`): its first step is a 1.4 `update`, and what 1.6 adds follows it as
//! fields a 1.4 reader would skip — which no host ever does to a 1.6 plug-in, since a
//! host refuses plug-ins of a newer minor than its own. A single update of 1.4 is a
//! transaction of one step.
//!
//! ```text
//! transaction = update deadline_condition more:u32 step{more}   (1.6 fields after the update)
//! step        = update deadline_condition
//! deadline_condition = has:u8 new_is:u8
//! has         = 0 any | 1 no deadline | 2 a deadline
//! new_is      = 0 any | 1 later | 2 sooner | 3 equal      (no deadline: later than any time)
//! outcomes    = outcome more:u32 outcome{more}
//! ```

use std::cmp::Ordering;

use super::{Outcome, Update, evaluate::Current};
use crate::wire::{Reader, WireError, Writer};

/// Most steps one transaction may have.
pub const MAX_STEPS: usize = 1024;

/// A condition on a key's deadline (1.6), checked beside the update's
/// [`Condition`](super::Condition): both must hold. Redis's `EXPIRE` options: `NX` is
/// [`DeadlineCondition::having`]`(false)`, `XX` `having(true)`, `GT`
/// [`DeadlineCondition::new_is`]`(Greater)`, `LT` `new_is(Less)`, and `XX LT` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeadlineCondition {
    /// `Some(false)`: only if the key has no deadline (an absent key has none);
    /// `Some(true)`: only if it has one.
    pub has_deadline: Option<bool>,
    /// Only if the deadline the update sets compares so with the key's: `Greater` for
    /// later, `Less` for sooner. No deadline counts as later than any time, so a key
    /// without one is never sooner-than and always later-than.
    pub new_is: Option<Ordering>,
}

impl DeadlineCondition {
    /// No condition on the deadline.
    pub const ANY: DeadlineCondition = DeadlineCondition {
        has_deadline: None,
        new_is: None,
    };

    /// This condition, and the key has a deadline (`true`) or has none (`false`).
    pub const fn having(mut self, deadline: bool) -> DeadlineCondition {
        self.has_deadline = Some(deadline);
        self
    }

    /// This condition, and the new deadline compares as `ordering` with the key's.
    pub const fn new_is(mut self, ordering: Ordering) -> DeadlineCondition {
        self.new_is = Some(ordering);
        self
    }

    /// Whether it holds for a key whose deadline is `current` when the update would set
    /// `new` (`None`: no deadline, later than any time).
    pub fn holds(self, current: Option<u64>, new: Option<u64>) -> bool {
        let never = u64::MAX as u128 + 1;
        let (old_at, new_at) = (
            current.map_or(never, u128::from),
            new.map_or(never, u128::from),
        );
        self.has_deadline.is_none_or(|has| has == current.is_some())
            && self
                .new_is
                .is_none_or(|ordering| new_at.cmp(&old_at) == ordering)
    }

    fn write(self, w: &mut Writer) {
        let has = match self.has_deadline {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        let new_is = match self.new_is {
            None => 0,
            Some(Ordering::Greater) => 1,
            Some(Ordering::Less) => 2,
            Some(Ordering::Equal) => 3,
        };
        w.u8(has).u8(new_is);
    }

    fn read(r: &mut Reader<'_>) -> Result<DeadlineCondition, WireError> {
        let has_deadline = match r.u8()? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            other => return Err(WireError(format!("unknown deadline condition {other}"))),
        };
        let new_is = match r.u8()? {
            0 => None,
            1 => Some(Ordering::Greater),
            2 => Some(Ordering::Less),
            3 => Some(Ordering::Equal),
            other => return Err(WireError(format!("unknown deadline comparison {other}"))),
        };
        Ok(DeadlineCondition {
            has_deadline,
            new_is,
        })
    }
}

/// One step of a [`Transaction`]: an update and a condition on its key's deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The update.
    pub update: Update,
    /// A condition on the key's deadline, beside the update's own condition.
    pub deadline: DeadlineCondition,
}

/// Updates made together (1.6). Every step's conditions are checked against the keys
/// as they were before the transaction (as etcd checks a transaction's compares); if
/// all hold, every step's change is made, in order, each seeing the changes before it
/// (two increments of one key add both), at one place in log order — durably all or
/// none, even across a power loss. If one does not hold, nothing is made, and every
/// step's [`Outcome`] says `applied: false` and describes its key as it is. `MSETNX` is
/// a transaction of puts, each on the condition that its key is absent.
///
/// A step that cannot be made (an increment of a value that is not a number, a value
/// over the limit) fails the whole transaction with that error; nothing is made.
/// Writing more than one key needs a logger that appends a batch all or none
/// (`log:atomic_batch`); a transaction of one step does not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transaction {
    /// The steps, in order (1..=[`MAX_STEPS`]).
    pub steps: Vec<Step>,
}

impl Transaction {
    /// A transaction of no steps yet: add them with [`Transaction::and`].
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// This transaction with one more step, `update`, with no deadline condition.
    pub fn and(self, update: Update) -> Transaction {
        self.and_if_deadline(update, DeadlineCondition::ANY)
    }

    /// This transaction with one more step: `update`, if its key's deadline meets
    /// `deadline` too.
    pub fn and_if_deadline(mut self, update: Update, deadline: DeadlineCondition) -> Transaction {
        self.steps.push(Step { update, deadline });
        self
    }

    /// The `transaction` encoding (see the module docs). Empty if it has no steps.
    pub fn encode(&self) -> Vec<u8> {
        let Some((first, rest)) = self.steps.split_first() else {
            return Vec::new();
        };
        let mut w = Writer(first.update.encode());
        first.deadline.write(&mut w);
        w.u32(rest.len() as u32);
        for step in rest {
            let update = step.update.encode();
            w.0.extend_from_slice(&update);
            step.deadline.write(&mut w);
        }
        w.0
    }

    /// Reads the `transaction` encoding; a 1.4 `update` alone is a transaction of one
    /// step. Bytes after it (fields of a later minor) are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Transaction, WireError> {
        let mut r = Reader::new(bytes);
        let first = Update::read(&mut r)?;
        if r.rest().is_empty() {
            return Ok(Transaction::new().and(first));
        }
        let deadline = DeadlineCondition::read(&mut r)?;
        let more = r.u32()? as usize;
        if more >= MAX_STEPS {
            return Err(WireError(format!(
                "a transaction of {} steps; at most {MAX_STEPS}",
                more as u64 + 1
            )));
        }
        let mut steps = Vec::with_capacity(1 + more.min(r.rest().len() / 4));
        steps.push(Step {
            update: first,
            deadline,
        });
        for _ in 0..more {
            let update = Update::read(&mut r)?;
            let deadline = DeadlineCondition::read(&mut r)?;
            steps.push(Step { update, deadline });
        }
        Ok(Transaction { steps })
    }

    /// Whether it is one step without a deadline condition: a 1.4 update.
    pub fn is_plain_update(&self) -> bool {
        self.steps.len() == 1 && self.steps[0].deadline == DeadlineCondition::ANY
    }
}

/// Whether a step's conditions hold for its key as it is (`None`: absent or expired) at
/// `now`: the update's [`Condition`](super::Condition) and the deadline condition
/// against the deadline the update would set.
pub fn step_holds(step: &Step, current: Option<&Current>, now: u64) -> bool {
    use super::Expiry;
    let update = &step.update;
    let holds = super::evaluate::condition_holds(&update.condition, current);
    let old = current.and_then(|c| c.deadline);
    let new = match update.expiry {
        Expiry::Keep => old,
        Expiry::Clear => None,
        Expiry::At(at) => Some(at),
        Expiry::After(ms) => Some(now.saturating_add(ms)),
    };
    holds && step.deadline.holds(old, new)
}

/// The `outcomes` encoding: one [`Outcome`] per step.
pub fn encode_outcomes(outcomes: &[Outcome]) -> Vec<u8> {
    let Some((first, rest)) = outcomes.split_first() else {
        return Vec::new();
    };
    let mut w = Writer(first.encode());
    w.u32(rest.len() as u32);
    for outcome in rest {
        w.0.extend_from_slice(&outcome.encode());
    }
    w.0
}

/// Reads the `outcomes` encoding; a 1.4 `outcome` alone is one.
pub fn decode_outcomes(bytes: &[u8]) -> Result<Vec<Outcome>, WireError> {
    let mut r = Reader::new(bytes);
    let first = Outcome::read(&mut r)?;
    if r.rest().is_empty() {
        return Ok(vec![first]);
    }
    let more = r.u32()? as usize;
    if more >= MAX_STEPS {
        return Err(WireError(format!(
            "{} outcomes; at most {MAX_STEPS}",
            more as u64 + 1
        )));
    }
    let mut outcomes = Vec::with_capacity(1 + more);
    outcomes.push(first);
    for _ in 0..more {
        outcomes.push(Outcome::read(&mut r)?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::super::{Change, Condition, Effect, Expiry, evaluate_transaction};
    use super::*;

    fn at(value: &str, revision: u64, deadline: Option<u64>) -> Current {
        Current {
            value: value.into(),
            revision,
            deadline,
        }
    }

    #[test]
    fn transactions_and_outcomes_round_trip_and_an_update_is_one_step() {
        let tx = Transaction::new()
            .and(Update::new("a", Change::Put(b"1".to_vec())).when(Condition::Absent))
            .and_if_deadline(
                Update::new("b", Change::Keep).expiring(Expiry::At(5)),
                DeadlineCondition::ANY.having(true).new_is(Ordering::Less),
            )
            .and(Update::new("a", Change::Increment(2)));
        let mut bytes = tx.encode();
        assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
        bytes.extend_from_slice(b"fields of a later minor");
        assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
        // A 1.4 update, and a 1.4 reader of a transaction's first step.
        let update = Update::new("k", Change::Delete);
        let one = Transaction::decode(&update.encode()).unwrap();
        assert!(one.is_plain_update());
        assert_eq!(one.steps[0].update, update);
        assert_eq!(Update::decode(&tx.encode()).unwrap(), tx.steps[0].update);
        let outcomes = vec![
            Outcome {
                applied: true,
                revision: 3,
                ..Outcome::default()
            },
            Outcome::default(),
        ];
        assert_eq!(
            decode_outcomes(&encode_outcomes(&outcomes)).unwrap(),
            outcomes
        );
        assert_eq!(
            decode_outcomes(&outcomes[0].encode()).unwrap(),
            outcomes[..1]
        );
        // Bounded: a count past MAX_STEPS is refused before anything is allocated.
        let mut huge = Update::new("k", Change::Delete).encode();
        huge.extend_from_slice(&[0, 0]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Transaction::decode(&huge).is_err());
    }

    /// `MSETNX`: every key absent before, or nothing; the same key twice is one check
    /// (Redis sets it to the last value).
    #[test]
    fn conditions_are_checked_before_any_change_and_fail_all() {
        let msetnx = |pairs: &[(&str, &str)]| {
            pairs.iter().fold(Transaction::new(), |tx, (k, v)| {
                tx.and(Update::new(*k, Change::Put(v.as_bytes().to_vec())).when(Condition::Absent))
            })
        };
        let state = |present: &'static [&'static str]| {
            move |key: &[u8]| {
                present
                    .iter()
                    .any(|p| p.as_bytes() == key)
                    .then(|| at("old", 7, None))
            }
        };
        let (effects, outcomes) =
            evaluate_transaction(&msetnx(&[("a", "1"), ("a", "2")]), state(&[]), 0, 100).unwrap();
        assert!(outcomes.iter().all(|o| o.applied));
        assert_eq!(
            effects[1],
            Effect::Put {
                value: b"2".to_vec(),
                deadline: None
            }
        );
        let (effects, outcomes) =
            evaluate_transaction(&msetnx(&[("a", "1"), ("b", "2")]), state(&["b"]), 0, 100)
                .unwrap();
        assert!(effects.iter().all(|e| *e == Effect::Nothing));
        assert!(outcomes.iter().all(|o| !o.applied));
        assert_eq!(outcomes[1].revision, 7, "the key as it is");
        // Changes see the ones before them: two increments add both.
        let incr = Transaction::new()
            .and(Update::new("n", Change::Increment(2)))
            .and(Update::new("n", Change::Increment(3)));
        let (_, outcomes) = evaluate_transaction(&incr, |_| None, 0, 100).unwrap();
        assert_eq!(outcomes[1].value.as_deref(), Some(&b"5"[..]));
        // A step that cannot be made fails the whole transaction.
        let bad = Transaction::new()
            .and(Update::new("a", Change::Put(b"1".to_vec())))
            .and(Update::new("b", Change::Increment(1)));
        assert!(evaluate_transaction(&bad, state(&["b"]), 0, 100).is_err());
    }

    /// Redis's `EXPIRE` options, with no deadline as later than any time.
    #[test]
    fn deadline_conditions_answer_as_redis_options_do() {
        use Ordering::{Greater, Less};
        let any = DeadlineCondition::ANY;
        let (nx, xx, gt, lt) = (
            any.having(false),
            any.having(true),
            any.new_is(Greater),
            any.new_is(Less),
        );
        let xx_lt = xx.new_is(Less);
        // (condition, current deadline, new deadline, holds)
        let cases = [
            (nx, None, Some(10), true),
            (nx, Some(5), Some(10), false),
            (xx, None, Some(10), false),
            (xx, Some(5), Some(10), true),
            (gt, Some(5), Some(10), true),
            (gt, Some(10), Some(5), false),
            (gt, None, Some(10), false),
            (lt, None, Some(10), true),
            (lt, Some(5), Some(10), false),
            (lt, Some(10), Some(5), true),
            (xx_lt, None, Some(10), false),
            (xx_lt, Some(10), Some(5), true),
            (gt, Some(10), None, true),
        ];
        for (condition, current, new, holds) in cases {
            assert_eq!(
                condition.holds(current, new),
                holds,
                "{condition:?} {current:?} {new:?}"
            );
        }
        let expire_gt = |deadline| {
            Transaction::new().and_if_deadline(
                Update::new("k", Change::Keep).expiring(Expiry::At(deadline)),
                gt,
            )
        };
        let key = |_: &[u8]| Some(at("v", 3, Some(1000)));
        let (effects, outcomes) = evaluate_transaction(&expire_gt(2000), key, 0, 100).unwrap();
        assert!(outcomes[0].applied);
        assert_eq!(
            effects[0],
            Effect::Put {
                value: b"v".to_vec(),
                deadline: Some(2000)
            }
        );
        let (effects, outcomes) = evaluate_transaction(&expire_gt(500), key, 0, 100).unwrap();
        assert!(!outcomes[0].applied);
        assert_eq!(effects[0], Effect::Nothing);
    }
}
