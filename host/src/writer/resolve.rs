//! What each write of a batch logs: plain puts and deletes as they are, atomic updates
//! evaluated in order against the map and the batch's earlier writes (the rule is
//! `kvs_plugin_api::update::evaluate`), the sweep's removals only if still due.

use std::collections::HashMap;

use kvs_plugin_api::update::{Current, Effect, evaluate};
use kvs_plugin_api::{Outcome, PluginError};

use super::WriterLoop;
use crate::map::now_ms;
use crate::write_request::{WriteOp, WriteRequest};

impl WriterLoop {
    /// Decides what each write of the batch logs, in order: plain puts and deletes as
    /// they are, updates evaluated against the map and the batch's earlier writes.
    pub(super) fn resolve(&self, batch: &[WriteRequest], first: u64) -> Vec<Resolved> {
        let mut next = first;
        let mut position = |logged: &Logged| {
            if matches!(logged, Logged::Nothing) {
                0
            } else {
                next += 1;
                next - 1
            }
        };
        let evaluated = batch
            .iter()
            .any(|r| matches!(r.op, WriteOp::Update(_) | WriteOp::Expire(..)));
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
                        outcome: Ok(applied()),
                    }
                })
                .collect();
        }
        let now = now_ms();
        // The batch's writes so far, by key: what a later update in it must see.
        let mut written: HashMap<&[u8], Option<Current>> = HashMap::new();
        let mut resolved = Vec::with_capacity(batch.len());
        for req in batch {
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
                (Logged::Nothing, _) => None,
                (Logged::Delete, _) => Some(None),
                (Logged::PutOwn, WriteOp::Put(_, value)) => Some(Some(Current {
                    value: value.to_vec(),
                    revision: sequence,
                    deadline: None,
                })),
                (Logged::Put { value, deadline }, _) => Some(Some(Current {
                    value: value.clone(),
                    revision: sequence,
                    deadline: *deadline,
                })),
                (Logged::PutOwn, _) => unreachable!("only a plain put logs its own value"),
            };
            if let Some(after) = after {
                written.insert(key, after);
            }
            resolved.push(Resolved {
                logged,
                sequence,
                outcome,
            });
        }
        resolved
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
}

/// A write of a batch, resolved: what it logs, at which position, and what its caller
/// is told once that is durable.
pub(super) struct Resolved {
    pub(super) logged: Logged,
    /// Its sequence number (0 if it logs nothing).
    pub(super) sequence: u64,
    pub(super) outcome: Result<Outcome, PluginError>,
}

/// A plain put's or delete's outcome: it always applies.
fn applied() -> Outcome {
    Outcome {
        applied: true,
        ..Outcome::default()
    }
}
