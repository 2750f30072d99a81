#![allow(non_local_definitions)] // abi_stable 0.11's #[sabi_trait] expands to impls inside a const.
//! The native interface of plugin-api 1.4.
//!
//! **Released** (its packaged crate and layout snapshot are committed; see
//! [`versioning`](crate::versioning)): nothing here changes, and a minor that needs
//! new native types adds a module beside this one. 1.5 and 1.6 added none: their
//! plug-ins export this generation's [`Module`].
//!
//! From 1.4 on a plug-in exports only its own generation: its handshake and the static
//! `KVS_PLUGIN_ENTRIES` ([`ENTRIES_SYMBOL`](super::ENTRIES_SYMBOL)), an
//! [`Entries`](super::Entries) of this [`Module`]. No 1.0 root module and no older entry
//! points: a host older than 1.4 refuses the plug-in by its handshake before it would
//! look for them. The objects passed are those of earlier minors ([`LoggerBox`] of 1.0,
//! [`HostBox`] of 1.1, [`SharedLoggerBox`] of 1.3), except a frontend's: it returns
//! 1.4's own [`FrontendApi`] (1.0's methods and `reconfigure`, for a live config change)
//! and gets 1.4's own [`StoreApi`]: 1.3's methods, `check` (may this caller do this
//! to this key?), and the atomic operations: `update` (a condition, a
//! read-modify-write, a deadline; see [`update`](crate::update)) and `get_entry` (a
//! value with its revision and deadline). Those two pass their arguments and results in
//! the [`update`](crate::update) module's byte encodings — the same bytes a WASM
//! frontend passes to `kvs_update` — so a later minor can add a kind of condition or
//! change, or a field, without a new method.

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};

use crate::error::PluginError;
use crate::native::v1_1::{HostBox, RequestContextRef};
use crate::native::v1_3::{SharedLoggerBox, StoreStats};
use crate::native::{Limits, LoggerBox, WriteCallbackBox};

/// The host's store as a 1.4 frontend sees it.
#[sabi_trait]
pub trait StoreApi: Send + Sync {
    /// The value stored under `key`, if any, for the caller `ctx` describes.
    fn get(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
    ) -> RResult<ROption<RVec<u8>>, PluginError>;
    /// [`StoreApi::get`] with the read consistency the client asked for (a
    /// [`Consistency`](crate::Consistency) value).
    fn get_consistent(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: u8,
    ) -> RResult<ROption<RVec<u8>>, PluginError>;
    /// Stores `value` under `key`; `done` is called once the write is durable or failed.
    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    );
    /// Removes `key` (a missing key is not an error); `done` as for `put`.
    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox);
    /// Whether the host is serving: false while starting up or shutting down.
    fn is_ready(&self) -> bool;
    /// The host's key and value size limits.
    fn limits(&self) -> Limits;
    /// How many keys, and how many bytes of keys and values, the store holds.
    fn stats(&self) -> StoreStats;
    /// Whether the caller `ctx` may do `action` (an [`Action`](crate::Action) value) on
    /// `key`: the host's answer to the call itself — the key's limits, credentials,
    /// permissions — without making it. A frontend asks it for every key of a
    /// multi-key write before queueing any, so the write is all or nothing.
    fn check(
        &self,
        ctx: &RequestContextRef<'_>,
        action: u8,
        key: RSlice<'_, u8>,
    ) -> RResult<(), PluginError>;
    /// The value under `key` with its revision and deadline, as an encoded
    /// [`Entry`](crate::update::Entry); `None` if absent or expired.
    fn get_entry(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: u8,
    ) -> RResult<ROption<RVec<u8>>, PluginError>;
    /// Queues an atomic update, an encoded [`Update`](crate::Update); `done` gets the
    /// encoded [`Outcome`](crate::Outcome) once what it wrote is durable (or at once,
    /// if it writes nothing), or the error.
    #[sabi(last_prefix_field)]
    fn update(&self, ctx: &RequestContextRef<'_>, update: RVec<u8>, done: UpdateCallbackBox);
}

/// Completes one [`StoreApi::update`]. The host calls [`UpdateCallback::complete`]
/// exactly once, from its writer thread or the calling one.
#[sabi_trait]
pub trait UpdateCallback: Send {
    /// Delivers the encoded [`Outcome`](crate::Outcome), or why the update failed.
    /// Must return quickly: it may run on the host's writer thread.
    #[sabi(last_prefix_field)]
    fn complete(&mut self, result: RResult<RVec<u8>, PluginError>);
}

/// An owned [`UpdateCallback`] trait object.
pub type UpdateCallbackBox = UpdateCallback_TO<'static, RBox<()>>;

/// An owned 1.4 [`StoreApi`] trait object, as handed to a 1.4 `start_frontend`.
pub type StoreBox = StoreApi_TO<'static, RBox<()>>;

/// A running 1.4 frontend: 1.0's methods and `reconfigure`.
#[sabi_trait]
pub trait FrontendApi: Send {
    /// Where clients reach it, e.g. `http://127.0.0.1:8080`.
    fn endpoints(&self) -> RVec<RString>;
    /// Stops gracefully, waiting at most `deadline_ms` for in-flight requests.
    fn stop(&mut self, deadline_ms: u64) -> RResult<(), PluginError>;
    /// Applies a changed TOML config table while serving, keeping its listener and
    /// connections (`kvs reload`). `None`: it cannot, and the host replaces it with a
    /// new instance started with the new table; `Some(Err)`: the table is refused and
    /// the old one stays in effect.
    #[sabi(last_prefix_field)]
    fn reconfigure(&mut self, config: RStr<'_>) -> ROption<RResult<(), PluginError>>;
}

/// An owned 1.4 [`FrontendApi`] trait object, as a 1.4 `start_frontend` returns it.
pub type FrontendBox = FrontendApi_TO<'static, RBox<()>>;

/// The 1.4 entry points. A library fills the ones of its kind and the
/// [`export`](super::export) refusals in the others.
#[repr(C)]
#[derive(StableAbi)]
pub struct Module {
    /// Opens the logger with its TOML config table and the host's services. Loggers
    /// only; others return an `invalid input` error.
    pub open_logger:
        extern "C" fn(config: RStr<'_>, host: HostBox) -> RResult<LoggerBox, PluginError>,
    /// Opens a shared logger ([`SharedLog`](crate::SharedLog)) with its TOML config table
    /// and the host's services. Shared loggers only (capability `log:shared`); others
    /// return an `invalid input` error.
    pub open_shared_logger:
        extern "C" fn(config: RStr<'_>, host: HostBox) -> RResult<SharedLoggerBox, PluginError>,
    /// Starts the frontend, serving `store`, with its TOML config table and the host's
    /// services. Frontends only; others return an `invalid input` error.
    pub start_frontend: extern "C" fn(
        store: StoreBox,
        config: RStr<'_>,
        host: HostBox,
    ) -> RResult<FrontendBox, PluginError>,
}
