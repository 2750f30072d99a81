#![allow(non_local_definitions)] // abi_stable 0.11's #[sabi_trait] expands to impls inside a const.
//! The native binding: the abi_stable types that cross a `.so` boundary.
//!
//! Plug-in authors rarely touch this module: they implement [`TransactionLogger`] or
//! [`Frontend`] and call [`export_plugin!`](crate::export_plugin). The host uses it to
//! call into a loaded library.
//!
//! Everything here is `#[repr(C)]` and checked by abi_stable when a library is loaded.
//! This module is the 1.0 interface: its root module and trait objects are frozen for
//! all of major 1. What a minor version adds lives in a module of its own beside it
//! ([`v1_1`], [`v1_3`], [`v1_4`], [`v1_7`]); see [`versioning`](crate::versioning) for why, and
//! how the host picks. [`export`] is the plug-in side: it wraps an author's logger or
//! frontend as the objects of the [`current`] generation, catching panics.

use abi_stable::{
    StableAbi,
    library::RootModule,
    sabi_trait,
    sabi_types::{RMut, VersionStrings},
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    type_layout::TypeLayout,
};

use crate::error::PluginError;
use crate::event::Event;

pub mod export;
pub mod v1_1;
pub mod v1_3;
pub mod v1_4;
pub mod v1_7;

/// The generation this crate's plug-ins are built as: what
/// [`export_plugin!`](crate::export_plugin) exports and [`Store`](crate::Store) wraps.
pub use v1_7 as current;

pub use export::{FrontendAdapter, LoggerAdapter, guard};

/// The symbol every plug-in of plugin-api 1.4 or later exports its entry points under,
/// NUL-terminated for `dlsym`: an [`Entries`] of its minor's `Module`. The handshake says
/// which minor, and so which `Module` layout the host expects.
pub const ENTRIES_SYMBOL: &[u8] = b"KVS_PLUGIN_ENTRIES\0";

/// What the [`ENTRIES_SYMBOL`] static holds (1.4 and later): the layout `M` had when the
/// plug-in was built (checked by the host against its own before it touches `module`),
/// then the entry points themselves.
///
/// `layout` is the first field and stays so in every minor: the host reads it first.
#[repr(C)]
pub struct Entries<M: 'static> {
    /// `<M as StableAbi>::LAYOUT` in the plug-in.
    pub layout: &'static TypeLayout,
    /// The entry points.
    pub module: M,
}

impl<M: StableAbi> Entries<M> {
    /// Wraps `module` with its layout. Used by [`export_plugin!`](crate::export_plugin).
    pub const fn new(module: M) -> Self {
        Entries {
            layout: <M as StableAbi>::LAYOUT,
            module,
        }
    }
}

/// The host's size limits, so a frontend can refuse oversized input before reading it all.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted key, in bytes.
    pub max_key_bytes: u64,
    /// Longest accepted value, in bytes.
    pub max_value_bytes: u64,
}

/// Completes one write. The host calls [`WriteCallback::complete`] exactly once, from the
/// thread that committed it (its writer thread, or a frontend's committing its own
/// writes), after the write is durable (or has failed).
#[sabi_trait]
pub trait WriteCallback: Send {
    /// Delivers the write's outcome. Must return quickly: it runs on the thread that
    /// committed the write.
    #[sabi(last_prefix_field)]
    fn complete(&mut self, result: RResult<(), PluginError>);
}

/// An owned [`WriteCallback`] trait object.
pub type WriteCallbackBox = WriteCallback_TO<'static, RBox<()>>;

/// The host's store as a frontend sees it (the *driver* port).
///
/// Writes take a callback rather than blocking, so an async frontend never parks one of
/// its worker threads on a write. Frontends use it through [`Store`], which wraps this in
/// futures.
#[sabi_trait]
pub trait StoreApi: Send + Sync {
    /// The value stored under `key`, if any. Served from memory; never waits on the logger.
    fn get(&self, key: RSlice<'_, u8>) -> RResult<ROption<RVec<u8>>, PluginError>;
    /// Stores `value` under `key`; `done` is called once the write is durable or failed.
    fn put(&self, key: RVec<u8>, value: RVec<u8>, done: WriteCallbackBox);
    /// Removes `key` (a missing key is not an error); `done` as for `put`.
    fn delete(&self, key: RVec<u8>, done: WriteCallbackBox);
    /// Whether the host is serving: false while starting up or shutting down.
    fn is_ready(&self) -> bool;
    /// The host's key and value size limits.
    #[sabi(last_prefix_field)]
    fn limits(&self) -> Limits;
}

/// An owned [`StoreApi`] trait object, as handed to `start_frontend`.
pub type StoreBox = StoreApi_TO<'static, RBox<()>>;

/// Receives replayed events, a chunk at a time (the host's side of `replay`).
#[sabi_trait]
pub trait ReplaySink {
    /// Takes the next events in sequence order. An error stops the replay.
    #[sabi(last_prefix_field)]
    fn accept(&mut self, events: RSlice<'_, Event<'_>>) -> RResult<(), PluginError>;
}

/// A borrowed [`ReplaySink`] trait object.
pub type ReplaySinkMut<'a> = ReplaySink_TO<'a, RMut<'a, ()>>;

/// Tells the host, from any thread, whether a logger can currently make writes durable.
#[sabi_trait]
pub trait HealthProbe: Send + Sync {
    /// True while the logger expects appends to succeed.
    #[sabi(last_prefix_field)]
    fn is_healthy(&self) -> bool;
}

/// An owned [`HealthProbe`] trait object.
pub type HealthProbeBox = HealthProbe_TO<'static, RBox<()>>;

/// A transaction logger as the host sees it (the *driven* port). See [`TransactionLogger`].
#[sabi_trait]
pub trait LoggerApi: Send {
    /// The logger's health flag, if it keeps one; see [`TransactionLogger::health`].
    fn health_probe(&self) -> ROption<HealthProbeBox>;
    /// Makes a batch durable; see [`TransactionLogger::append`].
    fn append(&mut self, batch: RSlice<'_, Event<'_>>) -> RResult<(), PluginError>;
    /// Replays every logged event; see [`TransactionLogger::replay`].
    fn replay(&mut self, sink: ReplaySinkMut<'_>) -> RResult<(), PluginError>;
    /// Flushes and releases resources; see [`TransactionLogger::close`].
    #[sabi(last_prefix_field)]
    fn close(&mut self) -> RResult<(), PluginError>;
}

/// An owned [`LoggerApi`] trait object.
pub type LoggerBox = LoggerApi_TO<'static, RBox<()>>;

/// A running frontend as the host sees it. See [`Frontend`].
#[sabi_trait]
pub trait FrontendApi: Send {
    /// Where clients reach it, e.g. `http://127.0.0.1:8080`.
    fn endpoints(&self) -> RVec<RString>;
    /// Stops gracefully, waiting at most `deadline_ms` for in-flight requests.
    #[sabi(last_prefix_field)]
    fn stop(&mut self, deadline_ms: u64) -> RResult<(), PluginError>;
}

/// An owned [`FrontendApi`] trait object.
pub type FrontendBox = FrontendApi_TO<'static, RBox<()>>;

/// The root module every native plug-in library exports (via
/// [`export_plugin!`](crate::export_plugin)).
///
/// **Evolution rule (1.x):** frozen: these are the 1.0 entry points. abi_stable refuses
/// a library whose prefix type has fewer fields than the loader's, so a field appended
/// here would lock out every older plug-in; a minor version adds its own entry points
/// beside this ([`v1_1::Module`], see [`versioning`](crate::versioning)), which the host
/// looks up only after checking the plug-in's `api_minor` says they exist.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Opens the logger with its TOML config table (serialized). Loggers only; a frontend
    /// library returns an `invalid input` error.
    pub open_logger: extern "C" fn(config: RStr<'_>) -> RResult<LoggerBox, PluginError>,
    /// Starts the frontend, serving `store`, with its TOML config table (serialized).
    /// Frontends only; a logger library returns an `invalid input` error.
    #[sabi(last_prefix_field)]
    pub start_frontend:
        extern "C" fn(store: StoreBox, config: RStr<'_>) -> RResult<FrontendBox, PluginError>,
}

impl RootModule for PluginModRef {
    abi_stable::declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "kvs_plugin";
    const NAME: &'static str = "kvs_plugin";
    // Pinned for all of major 1: abi_stable compares these minors only for major 0, and
    // the root module must stay exactly 1.0's. The handshake does the version check
    // (see `versioning`).
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}
