//! What an [`Update`] does to a key: the rule the host's writer applies at the update's
//! place in log order, written once here so that it is the specification too. A
//! frontend's tests may run it over a store of their own.
//!
//! Nothing here touches a map, a log or the clock: the caller passes the key's state
//! (absent if past its deadline) and the time, and gets back what to write and what to
//! tell the client.

use super::{Change, Condition, Expiry, Outcome, Transaction, Update, step_holds};
use crate::error::ErrorCode;

/// Why an update could not be made: the value is not a number, a sum overflows, a value
/// would outgrow the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `INVALID_INPUT` or `TOO_LARGE`.
    pub code: ErrorCode,
    /// Why, in Redis's words where Redis has them.
    pub message: String,
}

impl Refused {
    fn invalid(message: &str) -> Refused {
        Refused {
            code: ErrorCode::INVALID_INPUT,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A key's state as an update sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The value.
    pub value: Vec<u8>,
    /// The log position of the write that last changed it.
    pub revision: u64,
    /// Its deadline (milliseconds since the Unix epoch), if it has one.
    pub deadline: Option<u64>,
}

/// What an evaluated update writes to the log and the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: the condition failed, or the change changes nothing.
    Nothing,
    /// Set the key, with a deadline or none.
    Put {
        /// The new value.
        value: Vec<u8>,
        /// The new deadline.
        deadline: Option<u64>,
    },
    /// Remove the key.
    Delete,
}

/// Evaluates `update` against `current` (`None`: absent or expired) at wall-clock time
/// `now` (ms since the Unix epoch). `max_value_bytes` bounds what an `APPEND` may grow
/// a value to. The outcome's revision is the current one; the writer sets it to the
/// write's position if the effect is a write.
pub fn evaluate(
    update: &Update,
    current: Option<&Current>,
    now: u64,
    max_value_bytes: u64,
) -> Result<(Effect, Outcome), Refused> {
    if !condition_holds(&update.condition, current) {
        return Ok((Effect::Nothing, unchanged(update, current)));
    }
    make(update, current, now, max_value_bytes)
}

/// Whether `condition` holds for a key as it is (`None`: absent or expired).
pub(crate) fn condition_holds(condition: &Condition, current: Option<&Current>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::Absent => current.is_none(),
        Condition::Present => current.is_some(),
        Condition::Revision(r) => current.map_or(0, |c| c.revision) == *r,
        Condition::Value(v) => current.is_some_and(|c| c.value == *v),
    }
}

/// What an update whose conditions did not hold tells its caller: `applied: false`, and
/// the key as it is.
fn unchanged(update: &Update, current: Option<&Current>) -> Outcome {
    Outcome {
        applied: false,
        revision: current.map_or(0, |c| c.revision),
        expires_at: current.and_then(|c| c.deadline),
        length: current.map_or(0, |c| c.value.len() as u64),
        previous: if update.return_previous {
            current.map(|c| c.value.clone())
        } else {
            None
        },
        value: None,
    }
}

/// Evaluates a [`Transaction`] (1.6) against the keys as they are before it
/// (`current`: `None` for an absent or expired key) at `now`: every step's conditions
/// against those states; if all hold, each step's change in order, each seeing the
/// ones before it. Returns each step's effect (all [`Effect::Nothing`] if a condition
/// failed) and outcome. A step that cannot be made fails the whole transaction.
/// Outcomes' revisions of keys the transaction writes are the caller's to set (the
/// writer sets them to the writes' positions).
pub fn evaluate_transaction(
    transaction: &Transaction,
    mut current: impl FnMut(&[u8]) -> Option<Current>,
    now: u64,
    max_value_bytes: u64,
) -> Result<(Vec<Effect>, Vec<Outcome>), Refused> {
    let before: Vec<Option<Current>> = transaction
        .steps
        .iter()
        .map(|step| current(&step.update.key))
        .collect();
    let all_hold = transaction
        .steps
        .iter()
        .zip(&before)
        .all(|(step, state)| step_holds(step, state.as_ref(), now));
    if !all_hold {
        return Ok(transaction
            .steps
            .iter()
            .zip(&before)
            .map(|(step, state)| (Effect::Nothing, unchanged(&step.update, state.as_ref())))
            .unzip());
    }
    // Each key's state as the steps so far leave it.
    let mut states: Vec<(&[u8], Option<Current>)> = Vec::with_capacity(before.len());
    let mut effects = Vec::with_capacity(before.len());
    let mut outcomes = Vec::with_capacity(before.len());
    for (step, before) in transaction.steps.iter().zip(before) {
        let key = step.update.key.as_slice();
        let slot = match states.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                states.push((key, before));
                states.len() - 1
            }
        };
        let (effect, outcome) = make(&step.update, states[slot].1.as_ref(), now, max_value_bytes)?;
        match &effect {
            Effect::Nothing => {}
            Effect::Delete => states[slot].1 = None,
            Effect::Put { value, deadline } => {
                states[slot].1 = Some(Current {
                    value: value.clone(),
                    revision: states[slot].1.as_ref().map_or(0, |c| c.revision),
                    deadline: *deadline,
                })
            }
        }
        effects.push(effect);
        outcomes.push(outcome);
    }
    Ok((effects, outcomes))
}

/// The change of an update whose conditions hold.
fn make(
    update: &Update,
    current: Option<&Current>,
    now: u64,
    max_value_bytes: u64,
) -> Result<(Effect, Outcome), Refused> {
    let mut outcome = Outcome {
        applied: false,
        revision: current.map_or(0, |c| c.revision),
        expires_at: current.and_then(|c| c.deadline),
        length: current.map_or(0, |c| c.value.len() as u64),
        previous: if update.return_previous {
            current.map(|c| c.value.clone())
        } else {
            None
        },
        value: None,
    };
    let deadline = |kept: Option<u64>| match update.expiry {
        Expiry::Keep => kept,
        Expiry::Clear => None,
        Expiry::At(at) => Some(at),
        Expiry::After(ms) => Some(now.saturating_add(ms)),
    };
    let kept = current.and_then(|c| c.deadline);
    let value = match &update.change {
        Change::Put(value) => value.clone(),
        Change::Delete => {
            outcome.applied = current.is_some();
            let effect = if current.is_some() {
                Effect::Delete
            } else {
                Effect::Nothing
            };
            outcome.expires_at = None;
            outcome.length = 0;
            return Ok((effect, outcome));
        }
        Change::Keep => {
            let Some(current) = current else {
                return Ok((Effect::Nothing, outcome));
            };
            let new = deadline(kept);
            // PERSIST on a key without a deadline changes nothing and says so (0).
            outcome.applied = !(update.expiry == Expiry::Clear && current.deadline.is_none());
            if new == current.deadline {
                return Ok((Effect::Nothing, outcome));
            }
            current.value.clone()
        }
        Change::Increment(by) => {
            let old = match current {
                Some(c) => parse_integer(&c.value)
                    .ok_or_else(|| Refused::invalid("value is not an integer or out of range"))?,
                None => 0,
            };
            let sum = old
                .checked_add(*by)
                .ok_or_else(|| Refused::invalid("increment or decrement would overflow"))?;
            let value = sum.to_string().into_bytes();
            outcome.value = Some(value.clone());
            value
        }
        Change::IncrementFloat(by) => {
            let old = match current {
                Some(c) => parse_float(&c.value)
                    .ok_or_else(|| Refused::invalid("value is not a valid float"))?,
                None => 0.0,
            };
            let sum = old + by;
            if !sum.is_finite() {
                return Err(Refused::invalid("increment would produce NaN or Infinity"));
            }
            let value = format_float(sum).into_bytes();
            outcome.value = Some(value.clone());
            value
        }
        Change::Append(tail) => {
            let old = current.map_or(&[][..], |c| &c.value);
            let len = old.len() as u64 + tail.len() as u64;
            if len > max_value_bytes {
                return Err(Refused {
                    code: ErrorCode::TOO_LARGE,
                    message: format!(
                        "the value would be {len} bytes; the limit is {max_value_bytes} \
                         (limits.max_value_bytes)"
                    ),
                });
            }
            let mut value = Vec::with_capacity(len as usize);
            value.extend_from_slice(old);
            value.extend_from_slice(tail);
            value
        }
    };
    outcome.applied = true;
    let deadline = deadline(kept);
    if deadline.is_some_and(|d| d <= now) {
        // A deadline already past: the key is gone (Redis's `EXPIREAT` in the past).
        outcome.expires_at = None;
        outcome.length = 0;
        let effect = if current.is_some() {
            Effect::Delete
        } else {
            Effect::Nothing
        };
        return Ok((effect, outcome));
    }
    outcome.expires_at = deadline;
    outcome.length = value.len() as u64;
    Ok((Effect::Put { value, deadline }, outcome))
}

/// A value as Redis reads an integer: an optional `-`, then digits without a leading
/// zero (or `0` alone), fitting an `i64`.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty()
        || digits.len() > 19
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && (bytes.len() > 1))
    {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A value as Redis reads a float: a decimal number (exponents allowed), no spaces,
/// finite.
pub fn parse_float(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A float as `INCRBYFLOAT` stores it: positional (no exponent), the shortest digits
/// that read back as the same `f64` — so adding 0 never changes a value, and what is
/// stored can always be read again. Redis computes in a long double and prints 17
/// digits, so where the `f64` sum is inexact the digits may differ (`0.1 + 0.2` is
/// `0.30000000000000004` here, `0.3` in Redis).
pub fn format_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into(); // not "-0"
    }
    // Rust writes an f64 positionally, with its shortest round-trip digits.
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;
    const LIMIT: u64 = 1 << 20;

    fn at(value: &str, revision: u64, deadline: Option<u64>) -> Current {
        Current {
            value: value.as_bytes().to_vec(),
            revision,
            deadline,
        }
    }

    fn run(update: Update, current: Option<Current>) -> (Effect, Outcome) {
        evaluate(&update, current.as_ref(), NOW, LIMIT).unwrap()
    }

    fn put(value: &str, deadline: Option<u64>) -> Effect {
        Effect::Put {
            value: value.as_bytes().to_vec(),
            deadline,
        }
    }

    #[test]
    fn conditions() {
        let set = || Update::new("k", Change::Put(b"new".to_vec()));
        let held = |o: &Outcome| o.applied;
        let present = Some(at("old", 5, None));
        assert!(held(&run(set().when(Condition::Absent), None).1));
        assert!(!held(
            &run(set().when(Condition::Absent), present.clone()).1
        ));
        assert!(held(
            &run(set().when(Condition::Present), present.clone()).1
        ));
        assert!(!held(&run(set().when(Condition::Present), None).1));
        assert!(held(
            &run(set().when(Condition::Revision(5)), present.clone()).1
        ));
        assert!(!held(
            &run(set().when(Condition::Revision(4)), present.clone()).1
        ));
        assert!(held(&run(set().when(Condition::Revision(0)), None).1));
        let by_value = |v: &str| set().when(Condition::Value(v.as_bytes().to_vec()));
        assert!(held(&run(by_value("old"), present.clone()).1));
        assert!(!held(&run(by_value("other"), present.clone()).1));
        // A failed condition writes nothing and reports the key as it is.
        let (effect, outcome) = run(
            set().when(Condition::Absent).returning_previous(),
            present.clone(),
        );
        assert_eq!(effect, Effect::Nothing);
        assert_eq!(outcome.revision, 5);
        assert_eq!(outcome.previous.as_deref(), Some(&b"old"[..]));
    }

    #[test]
    fn counters() {
        let incr = |by| Update::new("k", Change::Increment(by));
        assert_eq!(run(incr(1), None).0, put("1", None));
        assert_eq!(
            run(incr(-5), Some(at("3", 1, Some(NOW + 10)))).0,
            put("-2", Some(NOW + 10)),
            "INCR keeps the deadline"
        );
        let (_, outcome) = run(incr(2), Some(at("40", 1, None)));
        assert_eq!(outcome.value.as_deref(), Some(&b"42"[..]));
        for bad in [
            "",
            "x",
            "1.5",
            " 1",
            "01",
            "+1",
            "-0",
            "99999999999999999999",
        ] {
            let err = evaluate(&incr(1), Some(&at(bad, 1, None)), NOW, LIMIT).unwrap_err();
            assert!(err.message.contains("not an integer"), "{bad}: {err}");
        }
        let err = evaluate(
            &incr(1),
            Some(&at(&i64::MAX.to_string(), 1, None)),
            NOW,
            LIMIT,
        )
        .unwrap_err();
        assert!(err.message.contains("overflow"), "{err}");
        let float = |by| Update::new("k", Change::IncrementFloat(by));
        assert_eq!(
            run(float(0.2), Some(at("0.1", 1, None))).0,
            put("0.30000000000000004", None),
            "the f64 sum, exactly"
        );
        // Adding 0 never changes a value, and the largest f64 reads back.
        for value in [
            "123456789012345680",
            "9007199254740992",
            "0.12345678901234568",
        ] {
            assert_eq!(
                run(float(0.0), Some(at(value, 1, None))).0,
                put(value, None)
            );
        }
        let (max, _) = run(float(f64::MAX), None);
        let Effect::Put { value, .. } = max else {
            panic!("{max:?}")
        };
        assert_eq!(parse_float(&value), Some(f64::MAX));
        assert_eq!(
            run(float(0.1), Some(at("10.5", 1, None))).0,
            put("10.6", None)
        );
        assert_eq!(run(float(1.0), Some(at("2", 1, None))).0, put("3", None));
        assert_eq!(run(float(5.0e3), None).0, put("5000", None));
        assert_eq!(run(float(-1.5e-7), None).0, put("-0.00000015", None));
        assert!(evaluate(&float(1.0), Some(&at("abc", 1, None)), NOW, LIMIT).is_err());
        assert!(
            evaluate(
                &float(f64::MAX),
                Some(&at(&format!("{}", f64::MAX), 1, None)),
                NOW,
                LIMIT
            )
            .is_err()
        );
    }

    #[test]
    fn appends_and_their_limit() {
        let append = |v: &str| Update::new("k", Change::Append(v.as_bytes().to_vec()));
        let (effect, outcome) = run(append("def"), Some(at("abc", 1, None)));
        assert_eq!((effect, outcome.length), (put("abcdef", None), 6));
        assert_eq!(run(append("x"), None).0, put("x", None));
        let err = evaluate(&append("xy"), Some(&at("abc", 1, None)), NOW, 4).unwrap_err();
        assert_eq!(err.code, ErrorCode::TOO_LARGE);
    }

    #[test]
    fn deadlines() {
        let set = |expiry| Update::new("k", Change::Put(b"v".to_vec())).expiring(expiry);
        assert_eq!(
            run(set(Expiry::After(300)), None).0,
            put("v", Some(NOW + 300))
        );
        assert_eq!(
            run(set(Expiry::At(NOW + 1)), None).1.expires_at,
            Some(NOW + 1)
        );
        let with_deadline = Some(at("v", 1, Some(NOW + 50)));
        assert_eq!(
            run(set(Expiry::Clear), with_deadline.clone()).0,
            put("v", None)
        );
        assert_eq!(
            run(set(Expiry::Keep), with_deadline.clone()).0,
            put("v", Some(NOW + 50)),
            "KEEPTTL"
        );
        // A deadline already past removes the key; on an absent key it writes nothing.
        let (effect, outcome) = run(set(Expiry::At(NOW)), with_deadline.clone());
        assert_eq!((effect, outcome.applied), (Effect::Delete, true));
        assert_eq!(run(set(Expiry::At(NOW - 1)), None).0, Effect::Nothing);
        // EXPIRE / PERSIST: only the deadline changes; not applied to an absent key.
        let touch = |expiry| Update::new("k", Change::Keep).expiring(expiry);
        assert_eq!(
            run(touch(Expiry::After(10)), with_deadline.clone()).0,
            put("v", Some(NOW + 10))
        );
        assert_eq!(run(touch(Expiry::Clear), with_deadline).0, put("v", None));
        let (effect, outcome) = run(touch(Expiry::Clear), Some(at("v", 1, None)));
        assert_eq!(
            (effect, outcome.applied),
            (Effect::Nothing, false),
            "PERSIST: nothing to remove"
        );
        let (effect, outcome) = run(touch(Expiry::Keep), Some(at("v", 1, None)));
        assert_eq!(
            (effect, outcome.applied),
            (Effect::Nothing, true),
            "GETEX without options"
        );
        assert!(!run(touch(Expiry::After(10)), None).1.applied);
        // Deleting: applied only if the key was there.
        let del = Update::new("k", Change::Delete).returning_previous();
        let (effect, outcome) = run(del.clone(), Some(at("v", 1, None)));
        assert_eq!(
            (effect, outcome.previous),
            (Effect::Delete, Some(b"v".to_vec()))
        );
        assert_eq!(run(del, None).0, Effect::Nothing);
    }
}
