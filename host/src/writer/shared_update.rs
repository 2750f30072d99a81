//! Atomic updates and transactions over a shared log: each appended alone, on the
//! condition that none of its keys has moved in the log since it was evaluated (one
//! `EventKind::EXPECT` per key), and evaluated again after catching up when one has.

use kvs_plugin_api::update::{Current, Effect, evaluate_transaction};
use kvs_plugin_api::{ErrorCode, Event, EventKind, Outcome, PluginError, Transaction};

use super::{Acknowledge, Handoff, WriterLoop};
use crate::map::now_ms;
use crate::write_request::{Completion, Reply, WriteOp, WriteRequest};

/// How often an update over a shared log is evaluated again after its conditional
/// append found a key moved, before it fails as contended.
const SHARED_UPDATE_ATTEMPTS: usize = 64;

impl WriterLoop {
    /// A shared log's batch with updates: its plain writes in runs, each update or
    /// transaction on its own, in queue order (a connection's `SET k 1` then `INCR k`
    /// must stay in order).
    pub(super) fn commit_shared_in_order(&mut self, batch: &mut Vec<WriteRequest>) {
        let mut run = Vec::new();
        for req in std::mem::take(batch) {
            if req.op.is_evaluated() {
                if !run.is_empty() {
                    self.commit_plain(&mut run);
                }
                self.commit_shared_update(req);
            } else {
                run.push(req);
            }
        }
        if !run.is_empty() {
            self.commit_plain(&mut run);
        }
    }

    /// One update or transaction over a shared log: evaluated against the delivered
    /// map, appended on the condition that none of its keys has moved since
    /// (`EventKind::EXPECT` per key: etcd compares each key's mod revision), and on a
    /// conflict evaluated again once delivery has caught up. The append that succeeds
    /// is where it takes effect, so it is linearizable whatever other nodes do; a
    /// failed condition is appended too (with no change), so that it also takes effect
    /// at a point in the log.
    fn commit_shared_update(&mut self, req: WriteRequest) {
        // An update is a transaction of one step (plugin-api 1.6).
        let single;
        let (transaction, one) = match &req.op {
            WriteOp::Update(update) => {
                single = Transaction::new().and((**update).clone());
                (&single, true)
            }
            WriteOp::Transaction(transaction) => (&**transaction, false),
            // The sweep runs only on local logs: nothing to do.
            _ => return req.done.complete(Ok(())),
        };
        if !matches!(
            self.acknowledge,
            Acknowledge::Handoff(Handoff {
                catch_up: Some(_),
                ..
            })
        ) {
            return req.done.complete(Err(PluginError::unavailable(
                "this shared log cannot append conditionally, so kvs cannot make atomic \
                 operations over it",
            )));
        }
        // Several conditions in one append: only a log that honours them all, and
        // appends all or none (checked when queued too; this catches a swap since).
        if transaction.steps.len() > 1 && !self.atomic_batch {
            return req.done.complete(Err(PluginError::invalid_input(
                "the shared log cannot append a batch all or none on every condition \
                 (log:atomic_batch); the transaction was refused",
            )));
        }
        // Its keys, each once, in the order the steps name them.
        let mut keys: Vec<&[u8]> = Vec::with_capacity(transaction.steps.len());
        for step in &transaction.steps {
            if !keys.contains(&step.update.key.as_slice()) {
                keys.push(&step.update.key);
            }
        }
        for attempt in 0..SHARED_UPDATE_ATTEMPTS {
            if attempt > 0
                && let Acknowledge::Handoff(Handoff {
                    catch_up: Some(catch_up),
                    ..
                }) = &mut self.acknowledge
                && let Err(e) = catch_up()
            {
                return req.done.complete(Err(e));
            }
            let now = now_ms();
            let states: Vec<Option<Current>> = keys
                .iter()
                .map(|key| {
                    self.map.entry(key).map(|e| Current {
                        revision: e.revision(),
                        deadline: e.deadline(),
                        value: e.into_value(),
                    })
                })
                .collect();
            let live = |key: &[u8]| {
                let at = keys.iter().position(|k| *k == key)?;
                states[at]
                    .clone()
                    .filter(|c| c.deadline.is_none_or(|d| d > now))
            };
            let (effects, mut outcomes) =
                match evaluate_transaction(transaction, live, now, self.max_value_bytes) {
                    Ok(evaluated) => evaluated,
                    Err(refused) => {
                        return req
                            .done
                            .complete(Err(PluginError::new(refused.code, refused.message)));
                    }
                };
            // A put with a deadline logs its value led by the deadline.
            let untils: Vec<Vec<u8>> = effects
                .iter()
                .map(|effect| match effect {
                    Effect::Put {
                        value,
                        deadline: Some(deadline),
                    } => [&deadline.to_le_bytes()[..], value].concat(),
                    _ => Vec::new(),
                })
                .collect();
            let events = self.shared_events(&keys, &states, transaction, &effects, &untils);
            let appended = self.logger.append(&events);
            drop(events);
            self.stats.batches += 1;
            match appended {
                Ok(()) => {
                    self.stats.writes +=
                        effects.iter().filter(|e| **e != Effect::Nothing).count() as u64;
                    let Acknowledge::Handoff(handoff) = &mut self.acknowledge else {
                        unreachable!("only over a shared log")
                    };
                    let position = handoff
                        .last_position
                        .load(std::sync::atomic::Ordering::Acquire);
                    for (outcome, effect) in outcomes.iter_mut().zip(&effects) {
                        match effect {
                            Effect::Put { .. } => outcome.revision = position,
                            Effect::Delete => outcome.revision = 0,
                            Effect::Nothing => {}
                        }
                    }
                    let reply = if one {
                        Reply::One(outcomes.pop().unwrap_or_else(Outcome::default))
                    } else {
                        Reply::Many(outcomes)
                    };
                    // Completed once delivery has applied it, as every shared write.
                    let done = req.done;
                    let answer = Completion::new(move |r| done.reply(r.map(|()| reply)));
                    (handoff.hand_off)(vec![answer]);
                    return;
                }
                // A key moved: the next attempt catches up first.
                Err(e) if e.code() == ErrorCode::CONFLICT => continue,
                Err(e) => {
                    self.stats.failed += 1;
                    self.metrics.append_errors.inc();
                    return req.done.complete(Err(e));
                }
            }
        }
        req.done.complete(Err(PluginError::unavailable(format!(
            "the keys kept changing on other nodes: {SHARED_UPDATE_ATTEMPTS} attempts at this \
             update conflicted; retry"
        ))))
    }

    /// What a transaction evaluated against `states` appends: an `EXPECT` per key (its
    /// revision as this node saw it, 0 when absent), then each step's change in order
    /// (a put with a deadline is a `PUT_UNTIL` of its step's `untils`).
    fn shared_events<'a>(
        &mut self,
        keys: &[&'a [u8]],
        states: &[Option<Current>],
        transaction: &'a Transaction,
        effects: &'a [Effect],
        untils: &'a [Vec<u8>],
    ) -> Vec<Event<'a>> {
        let mut events: Vec<Event<'a>> = keys
            .iter()
            .zip(states)
            .map(|(key, state)| Event {
                sequence: state.as_ref().map_or(0, |c| c.revision),
                kind: EventKind::EXPECT,
                key: (*key).into(),
                value: (&[][..]).into(),
            })
            .collect();
        for ((step, effect), until) in transaction.steps.iter().zip(effects).zip(untils) {
            let key: &[u8] = &step.update.key;
            let sequence = self.next_sequence;
            let event = match effect {
                Effect::Nothing => continue,
                Effect::Delete => Event::delete(sequence, key),
                Effect::Put {
                    deadline: Some(_), ..
                } => Event {
                    kind: EventKind::PUT_UNTIL,
                    ..Event::put(sequence, key, until)
                },
                Effect::Put { value, .. } => Event::put(sequence, key, value),
            };
            self.next_sequence += 1;
            events.push(event);
        }
        // The EXPECTs take numbers too, as they always have: never one reused.
        self.next_sequence += keys.len() as u64;
        events
    }
}
