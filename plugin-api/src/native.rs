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
//! ([`v1_1`], [`v1_3`]); see [`versioning`](crate::versioning) for why, and how the host picks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use abi_stable::{
    StableAbi,
    library::RootModule,
    sabi_trait,
    sabi_types::{RMut, VersionStrings},
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};

use crate::error::PluginError;
use crate::event::Event;
use crate::ports::{Frontend, Health, TransactionLogger};
use crate::store::Store;

pub mod v1_1;
pub mod v1_3;

/// The host's size limits, so a frontend can refuse oversized input before reading it all.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted key, in bytes.
    pub max_key_bytes: u64,
    /// Longest accepted value, in bytes.
    pub max_value_bytes: u64,
}

/// Completes one write. The host calls [`WriteCallback::complete`] exactly once, from its
/// writer thread, after the write is durable (or has failed).
#[sabi_trait]
pub trait WriteCallback: Send {
    /// Delivers the write's outcome. Must return quickly: it runs on the host's writer thread.
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

pub(crate) struct HealthAdapter(pub(crate) Health);

impl HealthProbe for HealthAdapter {
    fn is_healthy(&self) -> bool {
        self.0.get()
    }
}

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

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning a panic into an `internal` error so it never unwinds across FFI.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(PluginError::internal(format!(
            "plug-in panicked in {what}: {}",
            panic_message(&*payload)
        ))),
    }
}

/// Wraps an author's [`TransactionLogger`] as a [`LoggerApi`], catching panics.
/// After a panic the logger is considered broken and refuses further calls.
pub struct LoggerAdapter<L> {
    logger: Option<L>,
}

impl<L: TransactionLogger> LoggerAdapter<L> {
    fn with<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut L) -> Result<T, PluginError>,
    ) -> RResult<T, PluginError> {
        let Some(logger) = self.logger.as_mut() else {
            return RResult::RErr(PluginError::internal(format!(
                "logger unusable after an earlier panic; refusing {what}"
            )));
        };
        let result = guard(what, || f(logger));
        if matches!(&result, Err(e) if e.message().starts_with("plug-in panicked")) {
            // The logger's state is unknown after a panic: never use it again.
            std::mem::forget(self.logger.take());
        }
        result.into()
    }
}

impl<L: TransactionLogger> LoggerApi for LoggerAdapter<L> {
    fn health_probe(&self) -> ROption<HealthProbeBox> {
        let health = self
            .logger
            .as_ref()
            .and_then(|l| guard("health", || Ok(l.health())).ok().flatten());
        health
            .map(|h| {
                HealthProbe_TO::from_value(HealthAdapter(h), abi_stable::sabi_trait::TD_Opaque)
            })
            .into()
    }

    fn append(&mut self, batch: RSlice<'_, Event<'_>>) -> RResult<(), PluginError> {
        self.with("append", |l| l.append(batch.as_slice()))
    }

    fn replay(&mut self, mut sink: ReplaySinkMut<'_>) -> RResult<(), PluginError> {
        self.with("replay", |l| {
            l.replay(&mut |events: &[Event<'_>]| sink.accept(events.into()).into())
        })
    }

    fn close(&mut self) -> RResult<(), PluginError> {
        self.with("close", |l| l.close())
    }
}

/// Wraps an author's [`Frontend`] as a [`FrontendApi`], catching panics.
pub struct FrontendAdapter<F> {
    frontend: F,
}

impl<F: Frontend> FrontendApi for FrontendAdapter<F> {
    fn endpoints(&self) -> RVec<RString> {
        guard("endpoints", || Ok(self.frontend.endpoints()))
            .unwrap_or_default()
            .into_iter()
            .map(RString::from)
            .collect()
    }

    fn stop(&mut self, deadline_ms: u64) -> RResult<(), PluginError> {
        guard("stop", || {
            self.frontend.stop(Duration::from_millis(deadline_ms))
        })
        .into()
    }
}

/// Implementation of a logger library's `open_logger`; used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn open_logger_with<L: TransactionLogger>(
    config: RStr<'_>,
    open: fn(&str) -> Result<L, PluginError>,
) -> RResult<LoggerBox, PluginError> {
    guard("open_logger", || open(config.as_str()))
        .map(|logger| {
            LoggerApi_TO::from_value(
                LoggerAdapter {
                    logger: Some(logger),
                },
                abi_stable::sabi_trait::TD_Opaque,
            )
        })
        .into()
}

/// Implementation of a frontend library's `start_frontend`; used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn start_frontend_with<F: Frontend>(
    store: StoreBox,
    config: RStr<'_>,
    start: fn(Store, &str) -> Result<F, PluginError>,
) -> RResult<FrontendBox, PluginError> {
    start_and_wrap(Store::new(store), config, start)
}

/// Runs the author's `start` (catching a panic) and wraps the frontend as a
/// [`FrontendBox`]; shared by the entry points of every minor version.
pub(crate) fn start_and_wrap<F: Frontend>(
    store: Store,
    config: RStr<'_>,
    start: fn(Store, &str) -> Result<F, PluginError>,
) -> RResult<FrontendBox, PluginError> {
    guard("start_frontend", || start(store, config.as_str()))
        .map(|frontend| {
            FrontendApi_TO::from_value(
                FrontendAdapter { frontend },
                abi_stable::sabi_trait::TD_Opaque,
            )
        })
        .into()
}

/// The `open_logger` of a frontend library.
#[doc(hidden)]
pub extern "C" fn not_a_logger(_config: RStr<'_>) -> RResult<LoggerBox, PluginError> {
    RResult::RErr(PluginError::invalid_input(
        "this plug-in is a frontend, not a logger",
    ))
}

/// The `start_frontend` of a logger library.
#[doc(hidden)]
pub extern "C" fn not_a_frontend(
    _store: StoreBox,
    _config: RStr<'_>,
) -> RResult<FrontendBox, PluginError> {
    RResult::RErr(PluginError::invalid_input(
        "this plug-in is a logger, not a frontend",
    ))
}
