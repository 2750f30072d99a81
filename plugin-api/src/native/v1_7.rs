#![allow(non_local_definitions)] // abi_stable 0.11's #[sabi_trait] expands to impls inside a const.
//! The native interface of plugin-api 1.7: a frontend may commit its own writes.
//!
//! 1.7's [`StoreApi`] is 1.4's plus [`StoreApi::commit`], and its [`Module`] is 1.4's
//! with `start_frontend` handing that store; everything else a plug-in exchanges with
//! the host is 1.4's (re-exported here, so [`current`](super::current) names all of
//! it). A frontend that declares
//! [`FRONTEND_COMMITS`](crate::capability::FRONTEND_COMMITS) has its writes queued
//! without waking the host's writer thread, and calls `commit` once its connections
//! have run what they had: every write queued meanwhile shares one append, made on the
//! calling thread. See [`Store::commit`](crate::Store::commit).

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RVec},
};

use crate::error::PluginError;
use crate::native::v1_1::{HostBox, RequestContextRef};
use crate::native::v1_3::{SharedLoggerBox, StoreStats};
use crate::native::{Limits, LoggerBox, WriteCallbackBox};

pub use super::v1_4::{
    FrontendApi, FrontendApi_TO, FrontendBox, UpdateCallback, UpdateCallback_TO, UpdateCallbackBox,
};

/// The host's store as a 1.7 frontend sees it: 1.4's, and `commit`.
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
    /// `key`, without doing it (1.4's `check`).
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
    /// Queues an atomic update or a transaction, encoded (1.4's `update`).
    fn update(&self, ctx: &RequestContextRef<'_>, update: RVec<u8>, done: UpdateCallbackBox);
    /// Commits the writes queued so far, on the calling thread (1.7): see
    /// [`Store::commit`](crate::Store::commit). Does nothing for a frontend that does
    /// not declare [`FRONTEND_COMMITS`](crate::capability::FRONTEND_COMMITS).
    #[sabi(last_prefix_field)]
    fn commit(&self);
}

/// An owned 1.7 [`StoreApi`] trait object, as handed to a 1.7 `start_frontend`.
pub type StoreBox = StoreApi_TO<'static, RBox<()>>;

/// The 1.7 entry points: 1.4's, with `start_frontend` handing a 1.7 store. A library
/// fills the ones of its kind and the [`export`](super::export) refusals in the others.
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
