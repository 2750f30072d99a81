#![allow(non_local_definitions)] // abi_stable 0.11's #[sabi_trait] expands to impls inside a const.
//! The native interface added in plugin-api 1.1: host services and the request context.
//!
//! **Frozen for 1.1.** Everything here is exactly what a 1.1 plug-in and a 1.1 host
//! agreed on; 1.2 will add a `v1_2` module beside it rather than change this one (see
//! [`versioning`](crate::versioning)).
//!
//! A 1.1 library exports, besides the 1.0 root module, the static [`SYMBOL`]
//! (`KVS_PLUGIN_V1_1`) of type [`Exports`]: the layout of [`Module`] as the plug-in was
//! built, then the module itself. The host reads it only when the plug-in's handshake
//! says `api_minor >= 1`, checks the layout with abi_stable against its own, and then
//! calls the 1.1 entry points instead of the 1.0 ones: they take a [`HostBox`] (host
//! services) and, for frontends, a [`StoreBox`] whose calls carry a
//! [`RequestContextRef`].

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RVec},
    type_layout::TypeLayout,
};

use crate::context::RequestContext;
use crate::error::PluginError;
use crate::log::Level;
use crate::native::{FrontendBox, Limits, LoggerBox, WriteCallbackBox};

/// The exported symbol holding a 1.1 plug-in's [`Exports`], NUL-terminated for `dlsym`.
pub const SYMBOL: &[u8] = b"KVS_PLUGIN_V1_1\0";

/// One key/value pair attached to a log message.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct LogField<'a> {
    /// The field's name.
    pub key: RStr<'a>,
    /// Its value, formatted.
    pub value: RStr<'a>,
}

/// A plug-in's log message, as it crosses to the host.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct LogRecord<'a> {
    /// Importance.
    pub level: Level,
    /// The part of the plug-in it comes from; may be empty.
    pub target: RStr<'a>,
    /// The message.
    pub message: RStr<'a>,
    /// Key/value pairs.
    pub fields: RSlice<'a, LogField<'a>>,
}

/// Services the host offers every plug-in, handed over when the plug-in is opened or
/// started. Plug-in authors use them through [`crate::log`].
#[sabi_trait]
pub trait HostApi: Send + Sync {
    /// Logs a message into the host's `tracing`, tagged with the plug-in's name.
    #[sabi(last_prefix_field)]
    fn log(&self, record: &LogRecord<'_>);
}

/// An owned [`HostApi`] trait object.
pub type HostBox = HostApi_TO<'static, RBox<()>>;

/// A [`RequestContext`] as it crosses the boundary, borrowing its strings.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Default)]
pub struct RequestContextRef<'a> {
    /// See [`RequestContext::bearer_token`].
    pub bearer_token: ROption<RStr<'a>>,
    /// See [`RequestContext::client_identity`].
    pub client_identity: ROption<RStr<'a>>,
    /// See [`RequestContext::traceparent`].
    pub traceparent: ROption<RStr<'a>>,
    /// See [`RequestContext::tracestate`].
    pub tracestate: ROption<RStr<'a>>,
    /// [`RequestContext::deadline`] in milliseconds from the call.
    pub deadline_ms: ROption<u64>,
    /// See [`RequestContext::peer`].
    pub peer: ROption<RStr<'a>>,
}

fn rstr(s: &Option<String>) -> ROption<RStr<'_>> {
    s.as_deref().map(RStr::from_str).into()
}

impl<'a> From<&'a RequestContext> for RequestContextRef<'a> {
    fn from(c: &'a RequestContext) -> Self {
        RequestContextRef {
            bearer_token: rstr(&c.bearer_token),
            client_identity: rstr(&c.client_identity),
            traceparent: rstr(&c.traceparent),
            tracestate: rstr(&c.tracestate),
            deadline_ms: c
                .deadline
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .into(),
            peer: rstr(&c.peer),
        }
    }
}

/// The host's store as a 1.1 frontend sees it: the 1.0 [`StoreApi`](crate::native::StoreApi)
/// with a [`RequestContextRef`] on every read and write.
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
    #[sabi(last_prefix_field)]
    fn limits(&self) -> Limits;
}

/// An owned 1.1 [`StoreApi`] trait object, as handed to a 1.1 `start_frontend`.
pub type StoreBox = StoreApi_TO<'static, RBox<()>>;

/// The 1.1 entry points.
#[repr(C)]
#[derive(StableAbi)]
pub struct Module {
    /// Opens the logger with its TOML config table and the host's services. Loggers
    /// only; a frontend library returns an `invalid input` error.
    pub open_logger:
        extern "C" fn(config: RStr<'_>, host: HostBox) -> RResult<LoggerBox, PluginError>,
    /// Starts the frontend, serving `store`, with its TOML config table and the host's
    /// services. Frontends only; a logger library returns an `invalid input` error.
    pub start_frontend: extern "C" fn(
        store: StoreBox,
        config: RStr<'_>,
        host: HostBox,
    ) -> RResult<FrontendBox, PluginError>,
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
