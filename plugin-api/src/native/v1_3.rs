#![allow(non_local_definitions)] // abi_stable 0.11's #[sabi_trait] expands to impls inside a const.
//! The native interface added in plugin-api 1.3: a store that also answers how much it
//! holds.
//!
//! **Frozen for 1.3.** Everything here is exactly what a 1.3 plug-in and a 1.3 host
//! agreed on; a later minor adds a module beside it (see [`versioning`](crate::versioning)).
//! 1.2 added no native types, so 1.3 is the next module after [`v1_1`](super::v1_1).
//!
//! A 1.3 library exports, besides the 1.0 root module and the 1.1 entry points, the
//! static [`SYMBOL`] (`KVS_PLUGIN_V1_3`) of type [`Exports`]. The host reads it only when
//! the plug-in's handshake says `api_minor >= 3`, checks its layout with abi_stable, and
//! then calls these entry points instead of the older ones. They add to 1.1's:
//!
//! * the store a frontend gets: [`StoreApi`] adds [`StoreApi::stats`] (what a Redis
//!   client's `DBSIZE` and `INFO keyspace` ask) and [`StoreApi::get_consistent`] (a read
//!   at the consistency the client asked for);
//! * shared loggers ([`SharedLogApi`], opened by [`Module::open_shared_logger`]): a log
//!   other kvs nodes append to as well, delivered back to the host through a
//!   [`FollowSink`] (see [`crate::SharedLog`]).

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RVec},
    type_layout::TypeLayout,
};

use crate::error::PluginError;
use crate::event::Event;
use crate::native::v1_1::{HostBox, RequestContextRef};
use crate::native::{FrontendBox, HealthProbeBox, Limits, LoggerBox, WriteCallbackBox};

/// The exported symbol holding a 1.3 plug-in's [`Exports`], NUL-terminated for `dlsym`.
pub const SYMBOL: &[u8] = b"KVS_PLUGIN_V1_3\0";

/// How much the store holds, as of the call. Both figures cover writes the logger has
/// made durable (the map), not writes still queued.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Number of keys.
    pub keys: u64,
    /// Bytes of keys and values together.
    pub data_bytes: u64,
}

/// The host's store as a 1.3 frontend sees it: 1.1's
/// [`StoreApi`](crate::native::v1_1::StoreApi) plus [`StoreApi::stats`].
#[sabi_trait]
pub trait StoreApi: Send + Sync {
    /// The value stored under `key`, if any, for the caller `ctx` describes.
    fn get(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
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
    /// [`StoreApi::get`] with the read consistency the client asked for (a
    /// [`Consistency`](crate::Consistency) value).
    #[sabi(last_prefix_field)]
    fn get_consistent(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RSlice<'_, u8>,
        consistency: u8,
    ) -> RResult<ROption<RVec<u8>>, PluginError>;
}

/// An owned 1.3 [`StoreApi`] trait object, as handed to a 1.3 `start_frontend`.
pub type StoreBox = StoreApi_TO<'static, RBox<()>>;

/// The host's side of a shared log's delivery (see [`Follower`](crate::Follower)).
#[sabi_trait]
pub trait FollowSink: Send + Sync {
    /// A snapshot starts.
    fn begin_snapshot(&self);
    /// The snapshot is complete as of `position`; keys it did not mention are gone.
    fn end_snapshot(&self, position: u64);
    /// The next events in log order, then the position delivered through.
    #[sabi(last_prefix_field)]
    fn deliver(&self, events: RSlice<'_, Event<'_>>, through: u64);
}

/// An owned [`FollowSink`] trait object.
pub type FollowSinkBox = FollowSink_TO<'static, RBox<()>>;

/// A shared logger as the host sees it. See [`SharedLog`](crate::SharedLog).
#[sabi_trait]
pub trait SharedLogApi: Send + Sync {
    /// The logger's health flag, if it keeps one.
    fn health_probe(&self) -> ROption<HealthProbeBox>;
    /// Appends a batch; the position of its last event. See [`SharedLog::append`](crate::SharedLog::append).
    fn append(&self, batch: RSlice<'_, Event<'_>>) -> RResult<u64, PluginError>;
    /// Starts delivery to `sink`. See [`SharedLog::follow`](crate::SharedLog::follow).
    fn follow(&self, sink: FollowSinkBox) -> RResult<(), PluginError>;
    /// A quorum position. See [`SharedLog::barrier`](crate::SharedLog::barrier).
    fn barrier(&self) -> RResult<u64, PluginError>;
    /// Stops and releases. See [`SharedLog::close`](crate::SharedLog::close).
    #[sabi(last_prefix_field)]
    fn close(&self) -> RResult<(), PluginError>;
}

/// An owned [`SharedLogApi`] trait object.
pub type SharedLoggerBox = SharedLogApi_TO<'static, RBox<()>>;

/// The 1.3 entry points.
#[repr(C)]
#[derive(StableAbi)]
pub struct Module {
    /// Opens the logger with its TOML config table and the host's services (as in 1.1).
    /// Loggers only; a frontend library returns an `invalid input` error.
    pub open_logger:
        extern "C" fn(config: RStr<'_>, host: HostBox) -> RResult<LoggerBox, PluginError>,
    /// Starts the frontend, serving `store`, with its TOML config table and the host's
    /// services. Frontends only; a logger library returns an `invalid input` error.
    pub start_frontend: extern "C" fn(
        store: StoreBox,
        config: RStr<'_>,
        host: HostBox,
    ) -> RResult<FrontendBox, PluginError>,
    /// Opens a shared logger ([`SharedLog`](crate::SharedLog)) with its TOML config table and the host's
    /// services. Shared loggers only (capability `log:shared`); others return an
    /// `invalid input` error.
    pub open_shared_logger:
        extern "C" fn(config: RStr<'_>, host: HostBox) -> RResult<SharedLoggerBox, PluginError>,
}

/// What the [`SYMBOL`] static holds: the layout [`Module`] had when the plug-in was
/// built (checked by the host before it touches `module`), then the module.
///
/// `layout` is the first field and stays so: the host reads it before anything else.
#[repr(C)]
pub struct Exports {
    /// `<Module as StableAbi>::LAYOUT` in the plug-in.
    pub layout: &'static TypeLayout,
    /// The entry points.
    pub module: Module,
}

impl Exports {
    /// Wraps `module` with its layout. Used by [`export_plugin!`](crate::export_plugin).
    pub const fn new(module: Module) -> Self {
        Exports {
            layout: <Module as StableAbi>::LAYOUT,
            module,
        }
    }
}
