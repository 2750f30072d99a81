//! Atomic updates over a shared log: each appended alone, on the condition that its key
//! has not moved in the log since it was evaluated (`EventKind::EXPECT`), and evaluated
//! again after catching up when it has.

use kvs_plugin_api::update::{Current, Effect, evaluate};
use kvs_plugin_api::{Event, EventKind, PluginError};

use super::{Acknowledge, Handoff, WriterLoop};
use crate::map::now_ms;
use crate::write_request::{Completion, WriteOp, WriteRequest};

/// How often an update over a shared log is evaluated again after its conditional
/// append found the key moved, before it fails as contended.
const SHARED_UPDATE_ATTEMPTS: usize = 64;

impl WriterLoop {
    /// A shared log's batch with updates: its plain writes in runs, each update on its
    /// own, in queue order (a connection's `SET k 1` then `INCR k` must stay in order).
    pub(super) fn commit_shared_in_order(&mut self, batch: &mut Vec<WriteRequest>) {
        let mut run = Vec::new();
        for req in std::mem::take(batch) {
            if let WriteOp::Transaction(_) = req.op {
                // Refused when queued (`Store::transact_as`); a swap cannot make a local
                // log shared, so this is only a guard.
                req.done.complete(Err(PluginError::unavailable(
                    "transactions are not served over a shared log yet",
                )));
                continue;
            }
            if let WriteOp::Update(_) | WriteOp::Expire(..) = req.op {
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

    /// One update over a shared log: evaluated against the delivered map, appended on
    /// the condition that its key has not moved since (`EventKind::EXPECT`: etcd
    /// compares the key's mod revision), and on a conflict evaluated again once
    /// delivery has caught up. The append that succeeds is where it takes effect, so it
    /// is linearizable whatever other nodes do; a failed condition is appended too (with
    /// no change), so that it also takes effect at a point in the log.
    fn commit_shared_update(&mut self, req: WriteRequest) {
        let WriteOp::Update(update) = &req.op else {
            // The sweep runs only on local logs: nothing to do.
            return req.done.complete(Ok(()));
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
        let key: &[u8] = &update.key;
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
            let current = self.map.entry(key).map(|e| Current {
                revision: e.revision(),
                deadline: e.deadline(),
                value: e.into_value(),
            });
            let observed = current.as_ref().map_or(0, |c| c.revision);
            let live = current
                .as_ref()
                .filter(|c| c.deadline.is_none_or(|d| d > now));
            let (effect, mut outcome) = match evaluate(update, live, now, self.max_value_bytes) {
                Ok(evaluated) => evaluated,
                Err(refused) => {
                    return req
                        .done
                        .complete(Err(PluginError::new(refused.code, refused.message)));
                }
            };
            let sequence = self.next_sequence;
            self.next_sequence += 2;
            // A put with a deadline is a PUT_UNTIL, its value led by the deadline.
            let until = match &effect {
                Effect::Put {
                    value,
                    deadline: Some(deadline),
                } => [&deadline.to_le_bytes()[..], value].concat(),
                _ => Vec::new(),
            };
            let mut events = vec![Event {
                sequence: observed,
                kind: EventKind::EXPECT,
                key: key.into(),
                value: (&[][..]).into(),
            }];
            match &effect {
                Effect::Nothing => {}
                Effect::Delete => events.push(Event::delete(sequence, key)),
                Effect::Put {
                    deadline: Some(_), ..
                } => events.push(Event {
                    kind: EventKind::PUT_UNTIL,
                    ..Event::put(sequence, key, &until)
                }),
                Effect::Put { value, .. } => events.push(Event::put(sequence, key, value)),
            }
            let appended = self.logger.append(&events);
            self.stats.batches += 1;
            match appended {
                Ok(()) => {
                    self.stats.writes += 1;
                    let Acknowledge::Handoff(handoff) = &mut self.acknowledge else {
                        unreachable!("only over a shared log")
                    };
                    let position = handoff
                        .last_position
                        .load(std::sync::atomic::Ordering::Acquire);
                    match effect {
                        Effect::Put { .. } => outcome.revision = position,
                        Effect::Delete => outcome.revision = 0,
                        Effect::Nothing => {}
                    }
                    // Completed once delivery has applied it, as every shared write.
                    let done = req.done;
                    let answer = Completion::new(move |r| done.complete_with(r.map(|()| outcome)));
                    (handoff.hand_off)(vec![answer]);
                    return;
                }
                // The key moved: the next attempt catches up first.
                Err(e) if e.code() == kvs_plugin_api::ErrorCode::CONFLICT => continue,
                Err(e) => {
                    self.stats.failed += 1;
                    self.metrics.append_errors.inc();
                    return req.done.complete(Err(e));
                }
            }
        }
        req.done.complete(Err(PluginError::unavailable(format!(
            "the key kept changing on other nodes: {SHARED_UPDATE_ATTEMPTS} attempts at this \
             update conflicted; retry"
        ))))
    }
}
