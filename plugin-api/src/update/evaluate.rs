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
mod tests;
