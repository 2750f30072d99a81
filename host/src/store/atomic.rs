//! The store's atomic operations (plugin-api 1.4): conditional and read-modify-write
//! updates and deadlines, queued for the writer, which evaluates them in log order; and
//! reads of a key with its revision and deadline.

use std::time::Instant;

use kvs_plugin_api::update::Entry;
use kvs_plugin_api::update::MAX_STEPS;
use kvs_plugin_api::{
    Change, Condition, Consistency, DeadlineCondition, Expiry, Outcome, PluginError, Transaction,
    Update,
};

use super::{Store, held, metered, read_as};
use crate::caller::{self, Caller};
use crate::telemetry;
use crate::write_request::{Completion, Reply, WriteOp};

/// What the write path can do beyond plain puts and deletes.
#[derive(Debug, Clone, Default)]
pub struct WriteFeatures {
    /// The logger stores deadlines (`log:expiry`).
    pub expiry: bool,
    /// The writer can make atomic updates: a local log, or a shared one that appends
    /// conditionally (`log:conditional`).
    pub atomic: bool,
    /// The logger appends a batch all or none (`log:atomic_batch`): transactions may
    /// write several keys.
    pub atomic_batch: bool,
    /// The log is shared (`log:shared`).
    pub shared: bool,
    /// The logger's name, for messages.
    pub logger: String,
}

impl Store {
    /// [`Store::update`] on behalf of a frontend's caller. The request hook decides
    /// first: an update needs the write it makes (put, or delete for
    /// [`Change::Delete`]), and one that reveals the value (returns it, a new count or
    /// length, or compares against it) needs read as well. A caller without read gets
    /// only whether it applied.
    pub fn update_as(&self, caller: &Caller<'_>, update: Update, done: Completion) {
        let action = action_of(&update);
        let span = telemetry::store_span(action);
        let _in_span = span.enter();
        let done = metered(caller, action, held(span.clone(), done));
        // A caller who may write the key but not read it learns whether its update
        // applied (as a Redis user with write-only access does from SET NX), not the
        // key's revision, deadline or length.
        let hidden = match self.admit_update(caller, &update, reveals(&update)) {
            Ok(hidden) => hidden,
            Err(e) => return done.complete(Err(e)),
        };
        let done = if hidden {
            Completion::with_reply(move |result| {
                done.reply(result.map(|reply| reply.map(only_applied)))
            })
        } else {
            done
        };
        self.update_from(Some(caller), update, done)
    }

    /// Queues an atomic update (a condition, a read-modify-write, a deadline), evaluated
    /// by the writer in log order; `done` gets its [`Outcome`](kvs_plugin_api::Outcome)
    /// once what it wrote is durable (at once if it writes nothing).
    pub fn update(&self, update: Update, done: Completion) {
        self.update_from(None, update, done)
    }

    /// [`Store::update`] for a frontend's `caller` (shed under overload), or the host.
    fn update_from(&self, caller: Option<&Caller<'_>>, mut update: Update, done: Completion) {
        // The clock only for a deadline (a read of it costs an INCR ~80 instructions).
        let now = match update.expiry {
            Expiry::At(_) | Expiry::After(_) => crate::map::now_ms(),
            Expiry::Keep | Expiry::Clear => 0,
        };
        let prepared = self
            .features()
            .and_then(|features| self.prepare(&mut update, &features, now));
        if let Err(e) = prepared {
            return done.complete(Err(e));
        }
        self.submit(caller, WriteOp::Update(Box::new(update)), done)
    }

    /// [`Store::transact`] on behalf of a frontend's caller: each step is admitted as
    /// [`Store::update_as`] admits an update (one operation of the caller's rate limit
    /// each), a condition on a key's deadline needing read too; `done` gets a
    /// [`Reply::Many`] (a caller without read on a key learns only whether its step
    /// applied). A transaction of one step without a deadline condition — what a
    /// frontend's `update` sends — is that update, and its reply a [`Reply::One`] (both
    /// encode as what either decoder reads).
    pub fn transact_as(&self, caller: &Caller<'_>, mut transaction: Transaction, done: Completion) {
        if transaction.is_plain_update() {
            let update = transaction.steps.pop().expect("one step").update;
            return self.update_as(caller, update, done);
        }
        let span = telemetry::store_span(caller::Action::Put);
        let _in_span = span.enter();
        let done = metered(caller, caller::Action::Put, held(span.clone(), done));
        let mut hidden = Vec::with_capacity(transaction.steps.len());
        for step in &transaction.steps {
            // A condition on the deadline tells the caller about it (and, with the
            // transaction's all or none, without changing anything): it needs read.
            let reveals = reveals(&step.update) || step.deadline != DeadlineCondition::ANY;
            match self.admit_update(caller, &step.update, reveals) {
                Ok(hide) => hidden.push(hide),
                Err(e) => return done.complete(Err(e)),
            }
        }
        let done = if hidden.iter().any(|h| *h) {
            Completion::with_reply(move |result| {
                done.reply(result.map(|reply| {
                    match reply {
                        Reply::Many(v) => Reply::Many(
                            v.into_iter()
                                .zip(&hidden)
                                .map(|(o, hide)| if *hide { only_applied(o) } else { o })
                                .collect(),
                        ),
                        one => one.map(only_applied),
                    }
                }))
            })
        } else {
            done
        };
        self.transact_from(Some(caller), transaction, done)
    }

    /// Queues a transaction (plugin-api 1.6): see [`kvs_plugin_api::Transaction`].
    /// `done` gets a [`Reply::Many`].
    pub fn transact(&self, transaction: Transaction, done: Completion) {
        self.transact_from(None, transaction, done)
    }

    fn transact_from(
        &self,
        caller: Option<&Caller<'_>>,
        mut transaction: Transaction,
        done: Completion,
    ) {
        let checked = self.features().and_then(|features| {
            if transaction.steps.is_empty() || transaction.steps.len() > MAX_STEPS {
                return Err(PluginError::invalid_input(format!(
                    "a transaction has 1 to {MAX_STEPS} steps, not {}",
                    transaction.steps.len()
                )));
            }
            // Several steps may log several events (even on one key): all or none only
            // with a logger that appends a batch so — over a shared log, one that also
            // honours a condition on every key (etcd).
            if transaction.steps.len() > 1 && !features.atomic_batch {
                let use_instead = if features.shared {
                    "etcd"
                } else {
                    "file, postgres"
                };
                return Err(PluginError::invalid_input(format!(
                    "the logger `{}` cannot append a batch all or none (it does not declare \
                     `log:atomic_batch`), so kvs cannot make several updates as one: a \
                     crash could keep a part; use a logger that does ({use_instead})",
                    features.logger
                )));
            }
            let now = crate::map::now_ms();
            for step in &mut transaction.steps {
                self.prepare(&mut step.update, &features, now)?;
            }
            Ok(())
        });
        if let Err(e) = checked {
            return done.complete(Err(e));
        }
        self.submit(caller, WriteOp::Transaction(Box::new(transaction)), done)
    }

    /// The request hook's and the rate limit's decision on one update: the write it
    /// makes, read too if it `reveals` the key, one operation of the caller's rate.
    /// `Ok(true)`: admitted, but the caller may not read the key, so its outcome is to
    /// say only whether it applied.
    fn admit_update(
        &self,
        caller: &Caller<'_>,
        update: &Update,
        reveals: bool,
    ) -> Result<bool, PluginError> {
        self.admit(action_of(update), &update.key, caller)?;
        if reveals {
            self.admit(caller::Action::Get, &update.key, caller)?;
        }
        self.rate_limiter
            .take(caller, &update.key, || self.principal(caller))?;
        Ok(!reveals
            && self
                .admit(caller::Action::Get, &update.key, caller)
                .is_err())
    }

    /// What the write path can do now; `unavailable` before kvs serves writes.
    fn features(&self) -> Result<std::sync::Arc<WriteFeatures>, PluginError> {
        // Set before kvs serves: until then, as every write, "starting".
        self.features.load_full().ok_or_else(|| {
            PluginError::unavailable(
                "kvs is not serving writes (starting up or shut down); retry later",
            )
        })
    }

    /// Checks an update against the limits and what the write path can do, and makes
    /// its expiry absolute (as of `now`).
    fn prepare(
        &self,
        update: &mut Update,
        features: &WriteFeatures,
        now: u64,
    ) -> Result<(), PluginError> {
        self.check_key(&update.key)?;
        if let Change::Put(value) | Change::Append(value) = &update.change {
            self.check_value(value)?;
        }
        if !features.atomic {
            return Err(PluginError::unavailable(format!(
                "the shared log `{}` cannot append conditionally (it does not declare \
                 `log:conditional`), so kvs cannot make atomic operations (conditions, \
                 counters, expiry) over it; use plain puts and deletes",
                features.logger
            )));
        }
        if let Expiry::After(ms) = update.expiry {
            // Deadlines are stored as wall-clock times, so they mean the same after a
            // restart and on every node.
            update.expiry = Expiry::At(now.saturating_add(ms));
        }
        if let Expiry::At(at) = update.expiry
            && at > i64::MAX as u64
        {
            // Redis's bound too: a deadline must fit a signed 64-bit count of ms.
            return Err(PluginError::invalid_input(
                "invalid expire time: the deadline is past the end of time (2^63 ms)",
            ));
        }
        // A deadline already past only removes the key: any logger can log that.
        let stores_a_deadline = matches!(update.expiry, Expiry::At(at) if at > now);
        if stores_a_deadline && !features.expiry {
            return Err(PluginError::invalid_input(format!(
                "the logger `{}` cannot store expiry deadlines (it does not declare \
                 `log:expiry`: built against plugin-api 1.3 or older, or it has no place \
                 for them), so a write with a TTL is refused rather than made permanent; \
                 use a logger that does (file, postgres)",
                features.logger
            )));
        }
        Ok(())
    }

    /// [`Store::get_entry`] on behalf of a frontend's caller: the request hook decides
    /// first; counted and traced as a get.
    pub fn get_entry_as(
        &self,
        caller: &Caller<'_>,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Entry>, PluginError> {
        read_as(caller, || {
            self.admit_op(caller::Action::Get, key, caller)
                .and_then(|()| self.get_entry(key, consistency, caller.deadline))
        })
    }

    /// The value under `key` with its revision and deadline, unless it is absent or
    /// past its deadline.
    pub fn get_entry(
        &self,
        key: &[u8],
        consistency: Consistency,
        deadline: Option<Instant>,
    ) -> Result<Option<Entry>, PluginError> {
        self.ready_to_read(key, consistency, deadline)?;
        let now = crate::map::now_ms();
        Ok(self
            .map
            .entry(key)
            .filter(|e| !e.expired_at(now))
            .map(|e| Entry {
                revision: e.revision(),
                expires_at: e.deadline(),
                value: e.into_value(),
            }))
    }
}

/// The write an update makes, as the request hook sees it.
fn action_of(update: &Update) -> caller::Action {
    match update.change {
        Change::Delete => caller::Action::Delete,
        _ => caller::Action::Put,
    }
}

/// Whether an update reveals the key's value to its caller: it returns it, a new count or
/// length, or compares against it.
fn reveals(update: &Update) -> bool {
    update.return_previous
        || matches!(update.condition, Condition::Value(_))
        || matches!(
            update.change,
            Change::Increment(_) | Change::IncrementFloat(_) | Change::Append(_)
        )
}

/// An outcome as a caller without read on its key sees it: only whether it applied.
fn only_applied(outcome: Outcome) -> Outcome {
    Outcome {
        applied: outcome.applied,
        ..Outcome::default()
    }
}
