//! The store's atomic operations (plugin-api 1.4): conditional and read-modify-write
//! updates and deadlines, queued for the writer, which evaluates them in log order; and
//! reads of a key with its revision and deadline.

use std::time::Instant;

use kvs_plugin_api::update::Entry;
use kvs_plugin_api::{Change, Condition, Consistency, Expiry, Outcome, PluginError, Update};

use super::{Store, held, metered, read_as};
use crate::caller::{self, Caller};
use crate::telemetry;
use crate::write_request::{Completion, WriteOp};

/// What the write path can do beyond plain puts and deletes.
#[derive(Debug, Clone, Default)]
pub struct WriteFeatures {
    /// The logger stores deadlines (`log:expiry`).
    pub expiry: bool,
    /// The writer can make atomic updates: a local log, or a shared one that appends
    /// conditionally (`log:conditional`).
    pub atomic: bool,
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
        let action = match update.change {
            Change::Delete => caller::Action::Delete,
            _ => caller::Action::Put,
        };
        let span = telemetry::store_span(action);
        let _in_span = span.enter();
        let done = metered(caller, action, held(span.clone(), done));
        let reveals = update.return_previous
            || matches!(update.condition, Condition::Value(_))
            || matches!(
                update.change,
                Change::Increment(_) | Change::IncrementFloat(_) | Change::Append(_)
            );
        let admitted = self.admit(action, &update.key, caller).and_then(|()| {
            if reveals {
                self.admit(caller::Action::Get, &update.key, caller)?;
            }
            self.rate_limiter
                .take(caller, &update.key, || self.principal(caller))
        });
        if let Err(e) = admitted {
            return done.complete(Err(e));
        }
        // A caller who may write the key but not read it learns whether its update
        // applied (as a Redis user with write-only access does from SET NX), not the
        // key's revision, deadline or length.
        let done = if !reveals
            && self
                .admit(caller::Action::Get, &update.key, caller)
                .is_err()
        {
            Completion::with_outcome(move |result| {
                done.complete_with(result.map(|outcome| Outcome {
                    applied: outcome.applied,
                    ..Outcome::default()
                }))
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
        let checked = self
            .check_key(&update.key)
            .and_then(|()| match &update.change {
                Change::Put(value) | Change::Append(value) => self.check_value(value),
                _ => Ok(()),
            });
        if let Err(e) = checked {
            return done.complete(Err(e));
        }
        let features = self.features.load();
        let Some(features) = features.as_deref() else {
            // Set before kvs serves: until then, as every write, "starting".
            return done.complete(Err(PluginError::unavailable(
                "kvs is not serving writes (starting up or shut down); retry later",
            )));
        };
        if !features.atomic {
            return done.complete(Err(PluginError::unavailable(format!(
                "the shared log `{}` cannot append conditionally (it does not declare \
                 `log:conditional`), so kvs cannot make atomic operations (conditions, \
                 counters, expiry) over it; use plain puts and deletes",
                features.logger
            ))));
        }
        let now = crate::map::now_ms();
        if let Expiry::After(ms) = update.expiry {
            // Deadlines are stored as wall-clock times, so they mean the same after a
            // restart and on every node.
            update.expiry = Expiry::At(now.saturating_add(ms));
        }
        if let Expiry::At(at) = update.expiry
            && at > i64::MAX as u64
        {
            // Redis's bound too: a deadline must fit a signed 64-bit count of ms.
            return done.complete(Err(PluginError::invalid_input(
                "invalid expire time: the deadline is past the end of time (2^63 ms)",
            )));
        }
        // A deadline already past only removes the key: any logger can log that.
        let stores_a_deadline = matches!(update.expiry, Expiry::At(at) if at > now);
        if stores_a_deadline && !features.expiry {
            return done.complete(Err(PluginError::invalid_input(format!(
                "the logger `{}` cannot store expiry deadlines (it does not declare \
                 `log:expiry`: built against plugin-api 1.3 or older, or it has no place \
                 for them), so a write with a TTL is refused rather than made permanent; \
                 use a logger that does (file, postgres)",
                features.logger
            ))));
        }
        self.submit(caller, WriteOp::Update(Box::new(update)), done)
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
