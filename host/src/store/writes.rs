//! The store's writes: a frontend caller's put and delete (the request hook first), the
//! host's own, their key and value limits, and queueing for the writer behind
//! overload admission (`crate::overload`).

use std::sync::atomic::Ordering;

use crossbeam_channel::TrySendError;
use kvs_plugin_api::PluginError;

use super::{Phase, Store, held, metered};
use crate::caller::{self, Caller};
use crate::telemetry;
use crate::write_request::{Completion, Msg, WriteOp, WriteRequest};

impl Store {
    /// [`Store::put`] on behalf of a frontend's caller: the request hook decides first.
    pub fn put_as(&self, caller: &Caller<'_>, key: Vec<u8>, value: Vec<u8>, done: Completion) {
        let span = telemetry::store_span(caller::Action::Put);
        let _in_span = span.enter();
        let done = metered(caller, caller::Action::Put, held(span.clone(), done));
        match self.admit_op(caller::Action::Put, &key, caller) {
            Ok(()) => self.put_from(Some(caller), key, value, done),
            Err(e) => done.complete(Err(e)),
        }
    }

    /// [`Store::delete`] on behalf of a frontend's caller: the request hook decides first.
    pub fn delete_as(&self, caller: &Caller<'_>, key: Vec<u8>, done: Completion) {
        let span = telemetry::store_span(caller::Action::Delete);
        let _in_span = span.enter();
        let done = metered(caller, caller::Action::Delete, held(span.clone(), done));
        match self.admit_op(caller::Action::Delete, &key, caller) {
            Ok(()) => self.delete_from(Some(caller), key, done),
            Err(e) => done.complete(Err(e)),
        }
    }

    /// Queues a PUT; `done` runs once it is durable and applied, or has failed.
    pub fn put(&self, key: Vec<u8>, value: Vec<u8>, done: Completion) {
        self.put_from(None, key, value, done)
    }

    /// [`Store::put`] for a frontend's `caller` (shed under overload), or the host.
    pub(super) fn put_from(
        &self,
        caller: Option<&Caller<'_>>,
        key: Vec<u8>,
        value: Vec<u8>,
        done: Completion,
    ) {
        let checked = self.check_key(&key).and_then(|()| self.check_value(&value));
        match checked {
            Ok(()) => self.submit(caller, WriteOp::Put(key.into(), value.into()), done),
            Err(e) => done.complete(Err(e)),
        }
    }

    /// Queues a DELETE; `done` as for [`Store::put`]. Deleting a missing key succeeds.
    pub fn delete(&self, key: Vec<u8>, done: Completion) {
        self.delete_from(None, key, done)
    }

    /// [`Store::delete`] for a frontend's `caller` (shed under overload), or the host.
    pub(super) fn delete_from(&self, caller: Option<&Caller<'_>>, key: Vec<u8>, done: Completion) {
        match self.check_key(&key) {
            Ok(()) => self.submit(caller, WriteOp::Delete(key.into()), done),
            Err(e) => done.complete(Err(e)),
        }
    }

    /// Queues `op` for the writer, unless kvs is not serving writes or is overloaded
    /// (`crate::overload`; only a frontend's `caller` is shed). A caller that defers
    /// its commits commits it later ([`Store::commit_queued`]).
    pub(super) fn submit(&self, caller: Option<&Caller<'_>>, op: WriteOp, done: Completion) {
        if !matches!(self.phase(), Phase::Serving | Phase::Draining) {
            return done.complete(Err(PluginError::unavailable(
                "kvs is not serving writes (starting up or shut down); retry later",
            )));
        }
        let queued = self.writes.len();
        let (admitted, done) = match self.overload.admit(caller, queued, op.queued_bytes(), done) {
            Ok(admitted) => admitted,
            Err((e, done)) => return done.complete(Err(e)),
        };
        let trace = tracing::Span::current();
        let request = WriteRequest {
            op,
            done,
            trace,
            admitted,
        };
        let deferred = caller.is_some_and(|caller| caller.defers_commit);
        let refused = match self.writes.try_send(Msg::Write(request), deferred) {
            Ok(()) => return,
            Err(TrySendError::Full(msg)) => {
                self.overload.queue_full();
                (
                    msg,
                    "write queue is full (writer.queue_capacity); retry later",
                )
            }
            Err(TrySendError::Disconnected(msg)) => (msg, "kvs is shutting down; retry later"),
        };
        if let (Msg::Write(req), why) = refused {
            self.overload.not_queued(&req.admitted);
            req.done.complete(Err(PluginError::unavailable(why)));
        }
    }

    pub(super) fn check_key(&self, key: &[u8]) -> Result<(), PluginError> {
        if key.is_empty() {
            return Err(PluginError::invalid_input("key is empty"));
        }
        if key.len() as u64 > self.max_key_bytes.load(Ordering::Relaxed) {
            return Err(PluginError::too_large(format!(
                "key is {} bytes; the limit is {} (limits.max_key_bytes)",
                key.len(),
                self.max_key_bytes.load(Ordering::Relaxed)
            )));
        }
        Ok(())
    }

    pub(super) fn check_value(&self, value: &[u8]) -> Result<(), PluginError> {
        if value.len() as u64 > self.max_value_bytes.load(Ordering::Relaxed) {
            return Err(PluginError::too_large(format!(
                "value is {} bytes; the limit is {} (limits.max_value_bytes)",
                value.len(),
                self.max_value_bytes.load(Ordering::Relaxed)
            )));
        }
        Ok(())
    }
}
