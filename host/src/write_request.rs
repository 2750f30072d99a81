//! A write on its way to the writer: what to do ([`WriteOp`]), whom to tell ([`Completion`]),
//! and the queue message that carries it ([`Msg`]).
//!
//! Its own module so that the store (which queues writes) and the writer (which takes
//! them) both depend on it and not on each other.

use kvs_plugin_api::{Outcome, PluginError, Update};

use crate::ports::HealthCheck;

/// A write waiting for the writer.
pub enum WriteOp {
    /// Set a key.
    Put(Box<[u8]>, Box<[u8]>),
    /// Remove a key.
    Delete(Box<[u8]>),
    /// An atomic update, evaluated by the writer in log order (`crate::update`). Its
    /// expiry is absolute by now ([`Expiry::After`](kvs_plugin_api::Expiry) was
    /// resolved when it was queued).
    Update(Box<Update>),
    /// A transaction (plugin-api 1.6): its steps' conditions checked against the keys
    /// as they are before it, then all its changes or none, in one batch. Expiries are
    /// absolute by now, as for [`WriteOp::Update`].
    Transaction(Box<kvs_plugin_api::Transaction>),
    /// The expiry sweep: remove a key that has passed its deadline, if it is still at
    /// this revision (set again since, it stays).
    Expire(Box<[u8]>, u64),
}

impl WriteOp {
    /// Bytes of key and value it holds while queued.
    pub fn queued_bytes(&self) -> u64 {
        let value = match self {
            WriteOp::Put(_, v) => v.len(),
            WriteOp::Update(u) => match &u.change {
                kvs_plugin_api::Change::Put(v) | kvs_plugin_api::Change::Append(v) => v.len(),
                _ => 0,
            },
            WriteOp::Transaction(t) => {
                return t
                    .steps
                    .iter()
                    .map(|step| {
                        let value = match &step.update.change {
                            kvs_plugin_api::Change::Put(v) | kvs_plugin_api::Change::Append(v) => {
                                v.len()
                            }
                            _ => 0,
                        };
                        (step.update.key.len() + value) as u64
                    })
                    .sum();
            }
            WriteOp::Delete(_) | WriteOp::Expire(..) => 0,
        };
        (self.key().len() + value) as u64
    }

    /// The key written (a transaction's first).
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put(k, _) | WriteOp::Delete(k) | WriteOp::Expire(k, _) => k,
            WriteOp::Update(u) => &u.key,
            WriteOp::Transaction(t) => &t.steps[0].update.key,
        }
    }

    /// Whether the writer evaluates it against the keys' state (not a plain put or
    /// delete).
    pub fn is_evaluated(&self) -> bool {
        matches!(
            self,
            WriteOp::Update(_) | WriteOp::Transaction(_) | WriteOp::Expire(..)
        )
    }
}

/// A write and whom to tell when it is done.
pub struct WriteRequest {
    /// What to write.
    pub op: WriteOp,
    /// Called once with the outcome.
    pub done: Completion,
    /// The request's store span (disabled when tracing is off): the writer's batch
    /// span and it link to each other.
    pub trace: tracing::Span,
    /// When it was queued, its caller's deadline, its bytes (`crate::overload`).
    pub admitted: crate::overload::Admitted,
}

/// What the writer's queue carries.
pub enum Msg {
    /// A write to log and apply.
    Write(WriteRequest),
    /// Log what is queued, close the logger, exit.
    Stop,
    /// From a reload: log what is queued, then swap the logger (see [`LogSwap`]).
    SwapLog(LogSwap),
    /// From a reload: the value limit an `APPEND` may grow a value to.
    MaxValueBytes(u64),
    /// From a backup or a migration: begin a cut of the map between two batches.
    Cut(CutRequest),
    /// From a migration: give the new logger what it lacks, then write to it.
    Switch(Switch),
}

/// Beginning a cut of the map ([`crate::map::Cut`]) between two batches, as of the last
/// write applied.
pub struct CutRequest {
    /// For a migration: the cut's keys get the numbers right after its point (the
    /// writer goes on after them), and every batch logged from then on is copied here.
    pub tee: Option<Tee>,
    /// Told the cut, or why none began.
    pub reply: std::sync::mpsc::SyncSender<Result<std::sync::Arc<crate::map::Cut>, String>>,
}

/// Where the writer copies what it logs during a migration, until the switch.
pub struct Tee {
    /// Each logged batch, in order.
    pub batches: crossbeam_channel::Sender<Vec<LoggedEvent>>,
    /// Bytes sent and not yet taken (the receiver subtracts what it takes).
    pub pending_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Past this many pending bytes the writer stops copying (and drops its sender): the
    /// new logger is falling behind, and the migration fails instead of taking memory.
    pub max_pending_bytes: u64,
}

/// An event the writer logged, owned (what a [`Tee`] carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Its kind (`PUT`, `PUT_UNTIL`, `DELETE`).
    pub kind: kvs_plugin_api::EventKind,
    /// Its sequence number.
    pub sequence: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The value as logged (a `PUT_UNTIL`'s starts with its deadline).
    pub value: Vec<u8>,
}

impl LoggedEvent {
    /// Bytes it takes in a tee (what `Tee::pending_bytes` counts).
    pub fn weight(&self) -> u64 {
        (self.key.len() + self.value.len() + 48) as u64
    }

    /// As an event to append.
    pub fn as_event(&self) -> kvs_plugin_api::Event<'_> {
        kvs_plugin_api::Event {
            kind: self.kind,
            ..kvs_plugin_api::Event::put(self.sequence, &self.key, &self.value)
        }
    }
}

/// The end of a migration: between two batches the writer stops copying what it logs,
/// appends to `to` the batches it copied that the migration has not taken from
/// `rest` yet, closes its logger and writes to `to` from then on. If that append fails
/// it closes `to` instead and keeps its logger.
pub struct Switch {
    /// The new logger, holding the cut and every copied batch taken so far.
    pub to: Box<dyn crate::ports::Log>,
    /// Whether it stores deadlines (`log:expiry`).
    pub stores_expiry: bool,
    /// Whether it appends a batch all or none (`log:atomic_batch`).
    pub atomic_batch: bool,
    /// The tee's receiving end.
    pub rest: crossbeam_channel::Receiver<Vec<LoggedEvent>>,
    /// Told the outcome.
    pub done: std::sync::mpsc::SyncSender<Result<Switched, String>>,
}

/// What a [`Switch`] did.
pub struct Switched {
    /// How long the writer took no writes.
    pub paused: std::time::Duration,
    /// Events appended to the new logger during the pause.
    pub caught_up: u64,
    /// The old logger's `close` error, if it failed (after the switch: the new logger
    /// had everything by then).
    pub old_close: Option<PluginError>,
    /// The new logger's health check, if it keeps one.
    pub health: Option<HealthCheck>,
}

/// What a [`LogSwap`] did: the health check of the logger in use afterwards, as `Ok`
/// if it is the new one, else with why not.
pub type SwapOutcome = Result<Option<HealthCheck>, (String, Option<HealthCheck>)>;

/// Opens a logger, on the writer's thread, between two batches.
pub type OpenLog = Box<dyn FnOnce() -> Result<Box<dyn crate::ports::Log>, String> + Send>;

/// Replacing the writer's logger between two batches: the old one closes, `open` opens
/// the new one over the same storage; if that fails, `reopen` opens the old one again.
pub struct LogSwap {
    /// Opens the new logger.
    pub open: OpenLog,
    /// Opens the old logger again, if the new one cannot open.
    pub reopen: OpenLog,
    /// Whether the new logger stores deadlines (`log:expiry`).
    pub stores_expiry: bool,
    /// Whether the new logger appends a batch all or none (`log:atomic_batch`).
    pub atomic_batch: bool,
    /// Told the outcome: once the new logger takes the writes, its health check; else
    /// why not (and whether the old one serves again), with the health check of the
    /// logger that serves now.
    pub done: std::sync::mpsc::SyncSender<SwapOutcome>,
}

/// What a write's caller is told: an update's [`Outcome`], or a transaction's, one per
/// step.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A write's or an update's.
    One(Outcome),
    /// A transaction's, one per step.
    Many(Vec<Outcome>),
}

impl Reply {
    /// Each outcome changed by `f` (what a caller may learn).
    pub fn map(self, mut f: impl FnMut(Outcome) -> Outcome) -> Reply {
        match self {
            Reply::One(o) => Reply::One(f(o)),
            Reply::Many(v) => Reply::Many(v.into_iter().map(f).collect()),
        }
    }

    /// The encoded reply: an `outcome`, or `outcomes` (plugin-api's `update` module).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::One(o) => o.encode(),
            Reply::Many(v) => kvs_plugin_api::update::encode_outcomes(v),
        }
    }
}

enum Callback {
    /// Wants to know only whether the write succeeded (puts and deletes).
    Done(Box<dyn FnOnce(Result<(), PluginError>) + Send>),
    /// Wants the update's [`Outcome`].
    Outcome(Box<dyn FnOnce(Result<Outcome, PluginError>) + Send>),
    /// Wants the [`Reply`] as it comes (a wrapper passing it on, a transaction's caller).
    Reply(Box<dyn FnOnce(Result<Reply, PluginError>) + Send>),
}

/// Tells a writer's caller the outcome, exactly once. If dropped uncompleted (a write
/// still queued when the writer exited), it completes with `unavailable`, so no caller
/// waits forever and none is told "ok" for a write that was not logged.
pub struct Completion {
    callback: Option<Callback>,
    /// The write's place in overload's in-flight counts, given back just before the
    /// outcome is delivered (held here rather than in a wrapping callback: one
    /// allocation less per write).
    in_flight: Option<crate::overload::InFlight>,
}

impl Completion {
    fn of(callback: Callback) -> Self {
        Completion {
            callback: Some(callback),
            in_flight: None,
        }
    }

    /// Wraps the function to call with whether the write succeeded.
    pub fn new(f: impl FnOnce(Result<(), PluginError>) + Send + 'static) -> Self {
        Completion::of(Callback::Done(Box::new(f)))
    }

    /// Wraps the function to call with the write's [`Outcome`].
    pub fn with_outcome(f: impl FnOnce(Result<Outcome, PluginError>) + Send + 'static) -> Self {
        Completion::of(Callback::Outcome(Box::new(f)))
    }

    /// Wraps the function to call with the [`Reply`]: for completions that pass it on
    /// (metering, tracing) and for transactions.
    pub fn with_reply(f: impl FnOnce(Result<Reply, PluginError>) + Send + 'static) -> Self {
        Completion::of(Callback::Reply(Box::new(f)))
    }

    /// This completion, holding `in_flight` until the outcome is delivered.
    pub(crate) fn holding(mut self, in_flight: crate::overload::InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Delivers success or failure (a success's outcome is the default: applied, no
    /// revision).
    pub fn complete(self, result: Result<(), PluginError>) {
        self.complete_with(result.map(|()| Outcome {
            applied: true,
            ..Outcome::default()
        }))
    }

    /// Delivers the outcome.
    pub fn complete_with(self, result: Result<Outcome, PluginError>) {
        self.reply(result.map(Reply::One))
    }

    /// Delivers a reply: an outcome, or a transaction's outcomes.
    pub fn reply(mut self, result: Result<Reply, PluginError>) {
        drop(self.in_flight.take());
        match self.callback.take() {
            Some(Callback::Done(f)) => f(result.map(|_| ())),
            Some(Callback::Outcome(f)) => f(result.map(|reply| match reply {
                Reply::One(o) => o,
                Reply::Many(v) => v.into_iter().next().unwrap_or_default(),
            })),
            Some(Callback::Reply(f)) => f(result),
            None => {}
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            let this = Completion {
                callback: Some(callback),
                in_flight: self.in_flight.take(),
            };
            this.complete(Err(PluginError::unavailable(
                "kvs shut down before this write was logged; it was not applied",
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_still_queued_when_the_writer_is_gone_completes_with_unavailable() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let request = WriteRequest {
            trace: tracing::Span::none(),
            op: WriteOp::Delete(b"k".to_vec().into()),
            done: Completion::new(move |r| done_tx.send(r).unwrap()),
            admitted: Default::default(),
        };
        assert!(tx.send(Msg::Write(request)).is_ok());
        // The writer exits with this write still in its queue: the queue is dropped.
        drop(rx);
        drop(tx);
        let outcome = done_rx.recv().expect("the caller was never told");
        let err = outcome.unwrap_err();
        assert_eq!(err.code(), kvs_plugin_api::ErrorCode::UNAVAILABLE);
        assert!(err.message().contains("not applied"), "{err}");
    }
}
