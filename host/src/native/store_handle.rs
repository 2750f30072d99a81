//! The host's store as one native frontend reaches it, whatever its generation: each
//! generation's `StoreApi` is a thin layer over [`StoreHandle`]. Every error it hands
//! back is one the frontend's minor knows ([`caller::for_minor`]).

use std::sync::Arc;

use abi_stable::std_types::{ROption, RResult, RSlice, RVec};
use kvs_plugin_api::native::WriteCallbackBox;
use kvs_plugin_api::native::v1_1::RequestContextRef;
use kvs_plugin_api::native::v1_4::UpdateCallbackBox;
use kvs_plugin_api::{Consistency, PluginError, Transaction};

use crate::caller::{self, Caller};
use crate::metrics::FrontendMeter;
use crate::store::{Store, held};
use crate::telemetry;
use crate::write_request::Completion;

/// The store, the frontend's name (every call is a [`Caller`] of it), its contract
/// minor, its meter, and whether it commits its own writes.
pub(super) struct StoreHandle {
    pub(super) store: Arc<Store>,
    frontend: Arc<str>,
    minor: u16,
    meter: Arc<FrontendMeter>,
    /// It declared `frontend:commits` (1.7): its writes wait for its `commit`.
    commits: bool,
}

pub(super) type GetReply = RResult<ROption<RVec<u8>>, PluginError>;

impl StoreHandle {
    pub(super) fn new(store: &Arc<Store>, frontend: &crate::plugins::Plugin) -> StoreHandle {
        StoreHandle {
            store: store.clone(),
            frontend: frontend.name.as_str().into(),
            minor: frontend.api.1,
            meter: store.metrics().frontend(&frontend.name),
            // A capability of 1.7: an older plug-in cannot call `commit`.
            commits: frontend.api.1 >= 7
                && frontend
                    .capabilities
                    .iter()
                    .any(|c| c == kvs_plugin_api::capability::FRONTEND_COMMITS),
        }
    }

    /// plugin-api 1.7's `commit`: the frontend's writes queued so far, committed on the
    /// calling thread (`crate::writer::WriteQueue`).
    pub(super) fn commit(&self) {
        if self.commits {
            self.store.commit_queued();
        }
    }

    /// `e` as this frontend's minor can read it.
    fn fit(&self, e: PluginError) -> PluginError {
        caller::for_minor(e, self.minor)
    }

    /// A write's completion that hands the frontend an error its minor knows.
    fn completion(&self, mut done: WriteCallbackBox) -> Completion {
        let minor = self.minor;
        Completion::new(move |r| done.complete(r.map_err(|e| caller::for_minor(e, minor)).into()))
    }

    fn caller<'a>(&'a self, ctx: &'a RequestContextRef<'a>) -> Caller<'a> {
        Caller {
            meter: Some(&self.meter),
            defers_commit: self.commits,
            ..super::v1_1::caller(&self.frontend, ctx)
        }
    }

    pub(super) fn get(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: Consistency,
    ) -> GetReply {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "get");
        let _in_span = span.enter();
        self.store
            .get_as_consistent(&caller, key.as_slice(), consistency)
            .map(|v| v.map(RVec::from).into())
            .map_err(|e| self.fit(e))
            .into()
    }

    pub(super) fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "put");
        let _in_span = span.enter();
        let done = held(span.clone(), self.completion(done));
        self.store
            .put_as(&caller, key.into_vec(), value.into_vec(), done);
    }

    pub(super) fn delete(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "delete");
        let _in_span = span.enter();
        let done = held(span.clone(), self.completion(done));
        self.store.delete_as(&caller, key.into_vec(), done);
    }
}

impl StoreHandle {
    /// plugin-api 1.4's `get_entry`: the encoded entry under `key`.
    pub(super) fn get_entry(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: Consistency,
    ) -> GetReply {
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "get");
        let _in_span = span.enter();
        self.store
            .get_entry_as(&caller, key.as_slice(), consistency)
            .map(|e| e.map(|e| RVec::from(e.encode())).into())
            .map_err(|e| self.fit(e))
            .into()
    }

    /// plugin-api 1.4's `update`: an encoded update, or (1.6) a transaction; `done` gets
    /// the encoded outcome, or outcomes.
    pub(super) fn update(
        &self,
        ctx: &RequestContextRef<'_>,
        update: RVec<u8>,
        mut done: UpdateCallbackBox,
    ) {
        let transaction = match Transaction::decode(&update) {
            Ok(transaction) => transaction,
            Err(e) => {
                return done.complete(RResult::RErr(PluginError::invalid_input(format!(
                    "the update: {e}"
                ))));
            }
        };
        let caller = self.caller(ctx);
        let span = telemetry::frontend_span(&caller, "update");
        let _in_span = span.enter();
        let minor = self.minor;
        let completion = Completion::with_reply(move |r| {
            done.complete(
                r.map(|reply| RVec::from(reply.encode()))
                    .map_err(|e| caller::for_minor(e, minor))
                    .into(),
            )
        });
        self.store
            .transact_as(&caller, transaction, held(span.clone(), completion));
    }

    /// plugin-api 1.4's `check`: may this caller do `action` (an `Action` value) to `key`?
    pub(super) fn check(
        &self,
        ctx: &RequestContextRef<'_>,
        action: u8,
        key: RSlice<'_, u8>,
    ) -> Result<(), PluginError> {
        let action = caller::Action::from_contract(kvs_plugin_api::Action(action))?;
        self.store
            .check_as(&self.caller(ctx), action, key.as_slice())
            .map_err(|e| self.fit(e))
    }
}
