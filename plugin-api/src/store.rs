//! [`Store`]: the host's key-value store, as a frontend uses it.

use std::sync::Arc;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RVec},
};
use tokio::sync::oneshot;

use crate::context::RequestContext;
use crate::error::PluginError;
use crate::native::current::{StoreBox, UpdateCallback, UpdateCallback_TO};
use crate::native::v1_1::{self, RequestContextRef};
use crate::native::v1_3::{self, StoreStats};
use crate::native::v1_4;
use crate::native::{self as v1_0, Limits, WriteCallback, WriteCallback_TO};
use crate::update::{Entry, Outcome, Transaction, Update, decode_outcomes};

mod older;

/// A cheap-to-clone handle on the host's store, handed to a frontend when it starts.
///
/// Reads answer from memory. Writes resolve once the host's logger has made them durable;
/// they never block the calling thread, so they suit an async frontend. Dropping a write's
/// future does not cancel the write: it is already queued and will still be logged.
///
/// Every call describes its caller with a [`RequestContext`] (the `*_with` methods), or
/// is anonymous (the others). The host decides what a caller may do; a frontend only
/// passes on what the client presented.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreBox>,
    /// False when the store object came from a host before 1.3 (through a deprecated
    /// constructor), which cannot say how much it holds.
    has_stats: bool,
}

struct OneshotCallback(Option<oneshot::Sender<Result<(), PluginError>>>);

impl WriteCallback for OneshotCallback {
    fn complete(&mut self, result: RResult<(), PluginError>) {
        if let Some(tx) = self.0.take() {
            // The receiver may be gone (client hung up); the write happened regardless.
            let _ = tx.send(result.into());
        }
    }
}

struct OutcomeCallback(Option<oneshot::Sender<Result<RVec<u8>, PluginError>>>);

impl UpdateCallback for OutcomeCallback {
    fn complete(&mut self, result: RResult<RVec<u8>, PluginError>) {
        if let Some(tx) = self.0.take() {
            // The receiver may be gone (client hung up); the update happened regardless.
            let _ = tx.send(result.into());
        }
    }
}

fn callback() -> (
    WriteCallback_TO<'static, abi_stable::std_types::RBox<()>>,
    oneshot::Receiver<Result<(), PluginError>>,
) {
    let (tx, rx) = oneshot::channel();
    (
        WriteCallback_TO::from_value(OneshotCallback(Some(tx)), TD_Opaque),
        rx,
    )
}

async fn outcome(rx: oneshot::Receiver<Result<(), PluginError>>) -> Result<(), PluginError> {
    rx.await.unwrap_or_else(|_| {
        Err(PluginError::internal(
            "the host dropped a write without completing it",
        ))
    })
}

impl Store {
    /// Wraps the store object a host passes to a frontend of this crate's generation
    /// (1.7). [`export_plugin!`](crate::export_plugin) calls this; a frontend's tests
    /// may too, with a store of their own behind
    /// [`StoreApi`](crate::native::current::StoreApi).
    pub fn from_v1_7(store: StoreBox) -> Self {
        Store {
            inner: Arc::new(store),
            has_stats: true,
        }
    }

    /// Wraps a 1.4 store object (what a 1.4-1.6 frontend's tests built): everything
    /// but [`Store::commit`], which does nothing through it.
    pub fn from_v1_4(store: v1_4::StoreBox) -> Self {
        Store {
            inner: Arc::new(older::from_v1_4(store)),
            has_stats: true,
        }
    }

    /// Wraps a 1.0 store object. Calls made through it cannot carry a context: the host
    /// sees an anonymous caller.
    #[deprecated(
        since = "1.4.0",
        note = "plug-ins get a 1.4 store; use `Store::from_v1_4`"
    )]
    pub fn new(store: v1_0::StoreBox) -> Self {
        Store {
            inner: Arc::new(older::from_v1_0(store)),
            has_stats: false,
        }
    }

    /// Wraps a 1.1 store object.
    #[deprecated(
        since = "1.4.0",
        note = "plug-ins get a 1.4 store; use `Store::from_v1_4`"
    )]
    pub fn from_v1_1(store: v1_1::StoreBox) -> Self {
        Store {
            inner: Arc::new(older::from_v1_1(store)),
            has_stats: false,
        }
    }

    /// Wraps a 1.3 store object.
    #[deprecated(
        since = "1.4.0",
        note = "plug-ins get a 1.4 store; use `Store::from_v1_4`"
    )]
    pub fn from_v1_3(store: v1_3::StoreBox) -> Self {
        Store {
            inner: Arc::new(older::from_v1_3(store)),
            has_stats: true,
        }
    }

    fn get_ref(
        &self,
        ctx: &RequestContextRef<'_>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let value: Result<_, _> = self.inner.get(ctx, key.into()).into();
        Ok(value?.into_option().map(RVec::into_vec))
    }

    fn put_ref(
        &self,
        ctx: &RequestContextRef<'_>,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> oneshot::Receiver<Result<(), PluginError>> {
        let (done, rx) = callback();
        self.inner.put(ctx, key.into(), value.into(), done);
        rx
    }

    fn delete_ref(
        &self,
        ctx: &RequestContextRef<'_>,
        key: Vec<u8>,
    ) -> oneshot::Receiver<Result<(), PluginError>> {
        let (done, rx) = callback();
        self.inner.delete(ctx, key.into(), done);
        rx
    }

    /// The value under `key`, or `None`, for an anonymous caller.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        self.get_ref(&RequestContextRef::default(), key)
    }

    /// The value under `key`, or `None`, for the caller `ctx` describes (1.1).
    pub fn get_with(
        &self,
        ctx: &RequestContext,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, PluginError> {
        self.get_ref(&ctx.into(), key)
    }

    /// [`Store::get_with`] at the read consistency the client asked for (1.3; see
    /// [`Consistency`](crate::Consistency)). A host before 1.3 has no shared logs, so
    /// there every read is already linearizable and this is `get_with`.
    pub fn get_consistent(
        &self,
        ctx: &RequestContext,
        key: &[u8],
        consistency: crate::Consistency,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let value: Result<_, _> = self
            .inner
            .get_consistent(&ctx.into(), key.into(), consistency.0)
            .into();
        Ok(value?.into_option().map(RVec::into_vec))
    }

    /// Whether the caller `ctx` describes may do `action` on `key`, as the host would
    /// answer the call itself (the key's limits, credentials, permissions), without
    /// making it (1.4). Ask it for every key of a multi-key write before making any, so
    /// that a refusal leaves nothing half-written. Through a deprecated constructor's
    /// older store object only the key's limits are checked.
    pub fn check_with(
        &self,
        ctx: &RequestContext,
        action: crate::Action,
        key: &[u8],
    ) -> Result<(), PluginError> {
        self.inner.check(&ctx.into(), action.0, key.into()).into()
    }

    /// The value under `key` with its revision (an `ETag`) and deadline, for the caller
    /// `ctx` describes, at the read consistency it asked for (1.4). `None` if the key is
    /// absent or past its deadline.
    pub fn get_entry_with(
        &self,
        ctx: &RequestContext,
        key: &[u8],
        consistency: crate::Consistency,
    ) -> Result<Option<Entry>, PluginError> {
        let got: Result<_, _> = self
            .inner
            .get_entry(&ctx.into(), key.into(), consistency.0)
            .into();
        match got?.into_option() {
            None => Ok(None),
            Some(bytes) => Entry::decode_owned(bytes.into_vec())
                .map(Some)
                .map_err(|e| PluginError::internal(format!("the host's entry: {e}"))),
        }
    }

    /// Makes an atomic update for the caller `ctx` describes — a condition, a
    /// read-modify-write, a deadline; see [`update`](crate::update) — resolving to its
    /// [`Outcome`] once what it wrote is durable (1.4). A failed condition is an outcome
    /// (`applied: false`), not an error. The context is read when this is called, not
    /// when it is awaited.
    pub fn update_with(
        &self,
        ctx: &RequestContext,
        update: &Update,
    ) -> impl Future<Output = Result<Outcome, PluginError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let done = UpdateCallback_TO::from_value(OutcomeCallback(Some(tx)), TD_Opaque);
        self.inner.update(&ctx.into(), update.encode().into(), done);
        async move {
            let bytes = rx.await.unwrap_or_else(|_| {
                Err(PluginError::internal(
                    "the host dropped an update without completing it",
                ))
            })?;
            Outcome::decode(&bytes)
                .map_err(|e| PluginError::internal(format!("the host's outcome: {e}")))
        }
    }

    /// [`Store::update_with`] for threads that may block (not async worker threads).
    pub fn update_blocking_with(
        &self,
        ctx: &RequestContext,
        update: &Update,
    ) -> Result<Outcome, PluginError> {
        let (tx, rx) = oneshot::channel();
        let done = UpdateCallback_TO::from_value(OutcomeCallback(Some(tx)), TD_Opaque);
        self.inner.update(&ctx.into(), update.encode().into(), done);
        self.inner.commit();
        let bytes = rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(PluginError::internal("update dropped by the host")))?;
        Outcome::decode(&bytes)
            .map_err(|e| PluginError::internal(format!("the host's outcome: {e}")))
    }

    /// Makes a [`Transaction`] for the caller `ctx` describes — several updates all or
    /// none, conditions on deadlines; see [`Transaction`] — resolving to one [`Outcome`]
    /// per step once what it wrote is durable (1.6). Conditions that do not hold are
    /// outcomes (`applied: false` for every step), not an error.
    pub fn transact_with(
        &self,
        ctx: &RequestContext,
        transaction: &Transaction,
    ) -> impl Future<Output = Result<Vec<Outcome>, PluginError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let done = UpdateCallback_TO::from_value(OutcomeCallback(Some(tx)), TD_Opaque);
        self.inner
            .update(&ctx.into(), transaction.encode().into(), done);
        async move {
            let bytes = rx.await.unwrap_or_else(|_| {
                Err(PluginError::internal(
                    "the host dropped a transaction without completing it",
                ))
            })?;
            decode_outcomes(&bytes)
                .map_err(|e| PluginError::internal(format!("the host's outcomes: {e}")))
        }
    }

    /// [`Store::transact_with`] for threads that may block (not async worker threads).
    pub fn transact_blocking_with(
        &self,
        ctx: &RequestContext,
        transaction: &Transaction,
    ) -> Result<Vec<Outcome>, PluginError> {
        let (tx, rx) = oneshot::channel();
        let done = UpdateCallback_TO::from_value(OutcomeCallback(Some(tx)), TD_Opaque);
        self.inner
            .update(&ctx.into(), transaction.encode().into(), done);
        self.inner.commit();
        let bytes = rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(PluginError::internal("transaction dropped by the host")))?;
        decode_outcomes(&bytes)
            .map_err(|e| PluginError::internal(format!("the host's outcomes: {e}")))
    }

    /// Stores `value` under `key` for an anonymous caller, resolving once durable.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), PluginError> {
        outcome(self.put_ref(&RequestContextRef::default(), key, value)).await
    }

    /// Stores `value` under `key` for the caller `ctx` describes, resolving once durable
    /// (1.1). The context is read when this is called, not when it is awaited.
    pub fn put_with(
        &self,
        ctx: &RequestContext,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), PluginError>> + Send + 'static {
        outcome(self.put_ref(&ctx.into(), key, value))
    }

    /// Removes `key` for an anonymous caller, resolving once durable. A missing key is
    /// not an error.
    pub async fn delete(&self, key: Vec<u8>) -> Result<(), PluginError> {
        outcome(self.delete_ref(&RequestContextRef::default(), key)).await
    }

    /// Removes `key` for the caller `ctx` describes, resolving once durable (1.1). The
    /// context is read when this is called, not when it is awaited.
    pub fn delete_with(
        &self,
        ctx: &RequestContext,
        key: Vec<u8>,
    ) -> impl Future<Output = Result<(), PluginError>> + Send + 'static {
        outcome(self.delete_ref(&ctx.into(), key))
    }

    /// [`Store::put`] for threads that may block (not async worker threads).
    pub fn put_blocking(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), PluginError> {
        self.blocking(self.put_ref(&RequestContextRef::default(), key, value))
    }

    /// [`Store::delete`] for threads that may block (not async worker threads).
    pub fn delete_blocking(&self, key: Vec<u8>) -> Result<(), PluginError> {
        self.blocking(self.delete_ref(&RequestContextRef::default(), key))
    }

    /// [`Store::put_with`] for threads that may block (1.1).
    pub fn put_blocking_with(
        &self,
        ctx: &RequestContext,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), PluginError> {
        self.blocking(self.put_ref(&ctx.into(), key, value))
    }

    /// [`Store::delete_with`] for threads that may block (1.1).
    pub fn delete_blocking_with(
        &self,
        ctx: &RequestContext,
        key: Vec<u8>,
    ) -> Result<(), PluginError> {
        self.blocking(self.delete_ref(&ctx.into(), key))
    }

    /// False while the host is starting or stopping: answer readiness probes with this.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// The host's key and value size limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits()
    }

    /// How many keys and bytes the store holds (1.3). `None` only for a store made
    /// with a deprecated constructor from a pre-1.3 store object, which cannot say.
    pub fn stats(&self) -> Option<StoreStats> {
        self.has_stats.then(|| self.inner.stats())
    }

    /// Commits the writes queued so far (1.7), for a frontend that declares
    /// [`FRONTEND_COMMITS`](crate::capability::FRONTEND_COMMITS); for any other it does
    /// nothing (its writes wake the host's writer thread as they are queued).
    ///
    /// Such a frontend's writes wait, without waking another thread, until it calls
    /// this: typically once its connections have run what they had read. In tokio,
    /// call it from the runtime's `on_thread_park` hook, when the thread has nothing
    /// left to run, so that every connection served in that turn shares the commit:
    /// what Redis does before its event loop sleeps (a thread that never goes idle
    /// should also call it after a bounded amount of work). Every write queued by
    /// then, by any connection, goes in one append made on the calling thread, which
    /// blocks for it (an fsync, with the `file` logger at `sync = always`); their
    /// futures are ready when this returns. When this thread cannot make the append —
    /// another thread holds the host's writer (its own commit, a logger swap, a
    /// backup's cut), or the log is a cluster's shared log — the host's writer thread
    /// makes it instead: `commit` wakes it and returns at once.
    ///
    /// A deferred write nobody commits is committed by the host's writer thread within
    /// a few milliseconds, so a forgotten call costs latency, never the write. The
    /// `*_blocking` methods commit before they wait.
    pub fn commit(&self) {
        self.inner.commit()
    }

    /// Waits for a write on a thread that may block, committing it first.
    fn blocking(&self, rx: oneshot::Receiver<Result<(), PluginError>>) -> Result<(), PluginError> {
        self.inner.commit();
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(PluginError::internal("write dropped by the host")))
    }
}
