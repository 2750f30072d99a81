//! What each write of a batch logs: plain puts and deletes as they are, atomic updates
//! evaluated in order against the map and the batch's earlier writes (the rule is
//! `kvs_plugin_api::update::evaluate`), the sweep's removals only if still due.

use std::collections::HashMap;

use kvs_plugin_api::update::{Current, Effect, evaluate, evaluate_transaction};
use kvs_plugin_api::{Outcome, PluginError, Transaction};

use super::WriterLoop;
use crate::map::now_ms;
use crate::store::Map;
use crate::write_request::{Reply, WriteOp, WriteRequest};

impl WriterLoop {
    /// Decides what each write of the batch logs, in order: plain puts and deletes as
    /// they are, updates evaluated against the map and the batch's earlier writes.
    pub(super) fn resolve(&self, batch: &[WriteRequest], first: u64) -> Vec<Resolved> {
        let mut next = first;
        let mut position = |logged: &Logged| {
            let events = logged.events();
            if events == 0 {
                0
            } else {
                next += events;
                next - events
            }
        };
        let evaluated = batch.iter().any(|r| r.op.is_evaluated());
        if !evaluated {
            // The common case: nothing to evaluate, nothing to copy.
            return batch
                .iter()
                .map(|req| {
                    let logged = match req.op {
                        WriteOp::Delete(_) => Logged::Delete,
                        _ => Logged::PutOwn,
                    };
                    let sequence = position(&logged);
                    Resolved {
                        logged,
                        sequence,
                        outcome: Ok(Reply::One(applied())),
                    }
                })
                .collect();
        }
        let now = now_ms();
        // The batch's writes so far, by key: what a later update in it must see.
        let mut written: HashMap<&[u8], Option<Current>> = HashMap::new();
        let mut resolved = Vec::with_capacity(batch.len());
        for (i, req) in batch.iter().enumerate() {
            // What the last request writes no later one reads: not noted (a batch of
            // one, the unpipelined case, then allocates no table and copies no value).
            let last = i + 1 == batch.len();
            let key = req.op.key();
            let raw = match written.get(key) {
                Some(state) => state.clone(),
                None => self.map.entry(key).map(|e| Current {
                    revision: e.revision(),
                    deadline: e.deadline(),
                    value: e.into_value(),
                }),
            };
            let (logged, outcome) = match &req.op {
                WriteOp::Put(_, _) => (Logged::PutOwn, Ok(applied())),
                WriteOp::Delete(_) => (Logged::Delete, Ok(applied())),
                WriteOp::Transaction(transaction) => {
                    let (logged, reply) = self.resolve_transaction(transaction, &written, now);
                    let sequence = position(&logged);
                    if let Logged::Steps(steps) = &logged
                        && !last
                    {
                        let mut at = sequence;
                        for (step, logged) in transaction.steps.iter().zip(steps) {
                            if let Some(after) = after_write(logged, at) {
                                written.insert(&step.update.key, after);
                                at += 1;
                            }
                        }
                    }
                    resolved.push(Resolved {
                        logged,
                        sequence,
                        outcome: reply,
                    });
                    continue;
                }
                WriteOp::Expire(_, revision) => {
                    let due = raw.as_ref().is_some_and(|c| {
                        c.revision == *revision && c.deadline.is_some_and(|d| d <= now)
                    });
                    let logged = if due { Logged::Delete } else { Logged::Nothing };
                    (logged, Ok(Outcome::default()))
                }
                WriteOp::Update(update) => {
                    let live = raw.as_ref().filter(|c| c.deadline.is_none_or(|d| d > now));
                    match evaluate(update, live, now, self.max_value_bytes) {
                        Ok((Effect::Nothing, outcome)) => (Logged::Nothing, Ok(outcome)),
                        Ok((Effect::Delete, outcome)) => (Logged::Delete, Ok(outcome)),
                        Ok((
                            Effect::Put {
                                deadline: Some(_), ..
                            },
                            _,
                        )) if !self.stores_expiry => (
                            Logged::Nothing,
                            Err(PluginError::invalid_input(
                                "the logger cannot store expiry deadlines; the write was refused",
                            )),
                        ),
                        Ok((Effect::Put { value, deadline }, outcome)) => {
                            (Logged::Put { value, deadline }, Ok(outcome))
                        }
                        Err(refused) => (
                            Logged::Nothing,
                            Err(PluginError::new(refused.code, refused.message)),
                        ),
                    }
                }
            };
            let sequence = position(&logged);
            let after = match (&logged, &req.op) {
                _ if last => None,
                (Logged::PutOwn, WriteOp::Put(_, value)) => Some(Some(Current {
                    value: value.to_vec(),
                    revision: sequence,
                    deadline: None,
                })),
                (Logged::PutOwn, _) => unreachable!("only a plain put logs its own value"),
                (logged, _) => after_write(logged, sequence),
            };
            if let Some(after) = after {
                written.insert(key, after);
            }
            resolved.push(Resolved {
                logged,
                sequence,
                outcome: outcome.map(Reply::One),
            });
        }
        resolved
    }

    /// A transaction of the batch: evaluated against the map and the batch's earlier
    /// writes (`written`); what each step logs, and the outcomes.
    fn resolve_transaction(
        &self,
        transaction: &Transaction,
        written: &HashMap<&[u8], Option<Current>>,
        now: u64,
    ) -> (Logged, Result<Reply, PluginError>) {
        let state = |key: &[u8]| {
            let raw = match written.get(key) {
                Some(state) => state.clone(),
                None => self.map.entry(key).map(|e| Current {
                    revision: e.revision(),
                    deadline: e.deadline(),
                    value: e.into_value(),
                }),
            };
            raw.filter(|c| c.deadline.is_none_or(|d| d > now))
        };
        match evaluate_transaction(transaction, state, now, self.max_value_bytes) {
            Err(refused) => (
                Logged::Nothing,
                Err(PluginError::new(refused.code, refused.message)),
            ),
            Ok((effects, _))
                if !self.stores_expiry
                    && effects.iter().any(|e| {
                        matches!(
                            e,
                            Effect::Put {
                                deadline: Some(_),
                                ..
                            }
                        )
                    }) =>
            {
                (
                    Logged::Nothing,
                    Err(PluginError::invalid_input(
                        "the logger cannot store expiry deadlines; the transaction was refused",
                    )),
                )
            }
            Ok((effects, _))
                if !self.atomic_batch
                    && effects.iter().filter(|e| **e != Effect::Nothing).count() > 1 =>
            {
                // Checked when queued too; this catches a logger swapped in since.
                (
                    Logged::Nothing,
                    Err(PluginError::invalid_input(
                        "the logger cannot append a batch all or none (log:atomic_batch); \
                         the transaction was refused",
                    )),
                )
            }
            Ok((effects, outcomes)) => {
                let steps = effects
                    .into_iter()
                    .map(|effect| match effect {
                        Effect::Nothing => Logged::Nothing,
                        Effect::Delete => Logged::Delete,
                        Effect::Put { value, deadline } => Logged::Put { value, deadline },
                    })
                    .collect();
                (Logged::Steps(steps), Ok(Reply::Many(outcomes)))
            }
        }
    }
}

/// A key's state after a write that logs `logged` at `sequence` (`None`: it logs
/// nothing; `Some(None)`: the key is gone). Not for [`Logged::PutOwn`] or
/// [`Logged::Steps`].
fn after_write(logged: &Logged, sequence: u64) -> Option<Option<Current>> {
    match logged {
        Logged::Nothing | Logged::PutOwn | Logged::Steps(_) => None,
        Logged::Delete => Some(None),
        Logged::Put { value, deadline } => Some(Some(Current {
            value: value.clone(),
            revision: sequence,
            deadline: *deadline,
        })),
    }
}

/// What a write of a batch logs.
pub(super) enum Logged {
    /// Nothing (a failed condition, an update that changes nothing, an error).
    Nothing,
    /// A plain put, of the request's own value.
    PutOwn,
    /// A put of a value the writer computed, or with a deadline.
    Put {
        value: Vec<u8>,
        deadline: Option<u64>,
    },
    /// A delete.
    Delete,
    /// A transaction's steps, each logging one of the above (never `PutOwn`): those
    /// that log something take consecutive positions from the request's `sequence`.
    Steps(Vec<Logged>),
}

impl Logged {
    /// How many events it logs.
    pub(super) fn events(&self) -> u64 {
        match self {
            Logged::Nothing => 0,
            Logged::Steps(steps) => steps.iter().map(Logged::events).sum(),
            _ => 1,
        }
    }
}

/// A write of a batch, resolved: what it logs, at which position, and what its caller
/// is told once that is durable.
pub(super) struct Resolved {
    pub(super) logged: Logged,
    /// Its sequence number (0 if it logs nothing).
    pub(super) sequence: u64,
    pub(super) outcome: Result<Reply, PluginError>,
}

/// A plain put's or delete's outcome: it always applies.
fn applied() -> Outcome {
    Outcome {
        applied: true,
        ..Outcome::default()
    }
}

/// Applies one logged write to the map; the change in data bytes. `expired` counts the
/// sweep's removals.
pub(super) fn apply_write(
    map: &Map,
    key: &[u8],
    logged: &Logged,
    sequence: u64,
    op: &WriteOp,
    expired: &mut u64,
) -> i64 {
    match (logged, op) {
        (Logged::Nothing | Logged::Steps(_), _) => 0,
        (Logged::Delete, WriteOp::Expire(..)) => {
            *expired += 1;
            map.remove(key)
        }
        (Logged::Delete, _) => map.remove(key),
        (Logged::PutOwn, WriteOp::Put(_, v)) => map.insert(key, v, sequence, None),
        (Logged::PutOwn, _) => 0,
        (Logged::Put { value, deadline }, _) => map.insert(key, value, sequence, *deadline),
    }
}

/// The key's revision after a logged write (`None`: it wrote nothing; 0: deleted).
pub(super) fn revision_after(logged: &Logged, sequence: u64) -> Option<u64> {
    match logged {
        Logged::Nothing | Logged::Steps(_) => None,
        Logged::Delete => Some(0),
        _ => Some(sequence),
    }
}

/// The writes a resolved request logs, in order: its key, what it logs and at which
/// position — one for a write or an update, one per step for a transaction (the steps
/// that log something at consecutive positions).
pub(super) fn writes<'a>(req: &'a WriteRequest, r: &'a Resolved) -> Writes<'a> {
    match (&r.logged, &req.op) {
        (Logged::Steps(steps), WriteOp::Transaction(t)) => Writes::Steps {
            steps: steps.iter().zip(&t.steps),
            at: r.sequence,
        },
        (logged, _) => Writes::One(Some((req.op.key(), logged, r.sequence))),
    }
}

/// [`writes`]'s iterator: a plain one for the common case of one write, so a batch
/// without transactions pays one match per write for them.
pub(super) enum Writes<'a> {
    One(Option<(&'a [u8], &'a Logged, u64)>),
    Steps {
        steps: std::iter::Zip<
            std::slice::Iter<'a, Logged>,
            std::slice::Iter<'a, kvs_plugin_api::update::Step>,
        >,
        at: u64,
    },
}

impl<'a> Iterator for Writes<'a> {
    type Item = (&'a [u8], &'a Logged, u64);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Writes::One(one) => one.take(),
            Writes::Steps { steps, at } => {
                let (logged, step) = steps.next()?;
                let sequence = if logged.events() > 0 {
                    *at += 1;
                    *at - 1
                } else {
                    0
                };
                Some((step.update.key.as_slice(), logged, sequence))
            }
        }
    }
}
