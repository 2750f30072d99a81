//! The plug-in side of the native binding: an author's [`TransactionLogger`],
//! [`SharedLog`] or [`Frontend`] wrapped as the FFI objects of the
//! [`current`](super::current) generation, with panics caught at the boundary.
//!
//! [`export_plugin!`](crate::export_plugin) calls the functions here; authors do not.
//! A panic is caught where it happens and reported as [`ErrorCode::INTERNAL`]
//! (`crate::ErrorCode::INTERNAL`); a logger or shared log that panicked is never
//! called again, since its state is unknown.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};

use super::current::{self, StoreBox};
use super::v1_1::HostBox;
use super::v1_3::{FollowSinkBox, SharedLogApi, SharedLogApi_TO, SharedLoggerBox};
use super::{
    FrontendApi, HealthProbe, HealthProbe_TO, HealthProbeBox, LoggerApi, LoggerApi_TO, LoggerBox,
    ReplaySinkMut,
};
use crate::error::PluginError;
use crate::event::Event;
use crate::ports::{Follower, Frontend, Health, SharedLog, TransactionLogger};
use crate::store::Store;

/// A panic caught at the boundary: the plug-in's state is unknown from here on.
struct Panicked(String);

impl Panicked {
    fn into_error(self, what: &str) -> PluginError {
        PluginError::internal(format!("plug-in panicked in {what}: {}", self.0))
    }
}

/// Runs `f`, telling a panic apart from an error it returned.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        Panicked(if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        })
    })
}

/// Runs `f`, turning a panic into an `internal` error so it never unwinds across FFI.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    catch(f).unwrap_or_else(|p| Err(p.into_error(what)))
}

fn unusable(what: &str) -> PluginError {
    PluginError::internal(format!(
        "plug-in unusable after an earlier panic; refusing {what}"
    ))
}

struct HealthAdapter(Health);

impl HealthProbe for HealthAdapter {
    fn is_healthy(&self) -> bool {
        self.0.get()
    }
}

fn health_probe(health: Option<Health>) -> ROption<HealthProbeBox> {
    health
        .map(|h| HealthProbe_TO::from_value(HealthAdapter(h), TD_Opaque))
        .into()
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
            return RResult::RErr(unusable(what));
        };
        match catch(|| f(logger)) {
            Ok(result) => result.into(),
            Err(panicked) => {
                // Never dropped either: its destructor could panic again, or worse.
                std::mem::forget(self.logger.take());
                RResult::RErr(panicked.into_error(what))
            }
        }
    }
}

impl<L: TransactionLogger> LoggerApi for LoggerAdapter<L> {
    fn health_probe(&self) -> ROption<HealthProbeBox> {
        let health = self
            .logger
            .as_ref()
            .and_then(|l| guard("health", || Ok(l.health())).ok().flatten());
        health_probe(health)
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

impl<F: Frontend> current::FrontendApi for FrontendAdapter<F> {
    fn endpoints(&self) -> RVec<RString> {
        FrontendApi::endpoints(self)
    }

    fn stop(&mut self, deadline_ms: u64) -> RResult<(), PluginError> {
        FrontendApi::stop(self, deadline_ms)
    }

    fn reconfigure(&mut self, config: RStr<'_>) -> ROption<RResult<(), PluginError>> {
        match guard("reconfigure", || {
            Ok(self.frontend.reconfigure(config.as_str()))
        }) {
            Ok(None) => ROption::RNone,
            Ok(Some(result)) => ROption::RSome(result.into()),
            Err(panicked) => ROption::RSome(RResult::RErr(panicked)),
        }
    }
}

/// Wraps an author's [`SharedLog`] as a [`SharedLogApi`], catching panics. Its calls
/// come from several host threads at once; after one panics, every later call is
/// refused.
struct SharedLogAdapter<L> {
    log: L,
    panicked: AtomicBool,
}

impl<L: SharedLog> SharedLogAdapter<L> {
    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&L) -> Result<T, PluginError>,
    ) -> RResult<T, PluginError> {
        if self.panicked.load(Ordering::Acquire) {
            return RResult::RErr(unusable(what));
        }
        match catch(|| f(&self.log)) {
            Ok(result) => result.into(),
            Err(panicked) => {
                self.panicked.store(true, Ordering::Release);
                RResult::RErr(panicked.into_error(what))
            }
        }
    }
}

impl<L: SharedLog> SharedLogApi for SharedLogAdapter<L> {
    fn health_probe(&self) -> ROption<HealthProbeBox> {
        health_probe(
            self.with("health", |l| Ok(l.health()))
                .into_result()
                .ok()
                .flatten(),
        )
    }

    fn append(&self, batch: RSlice<'_, Event<'_>>) -> RResult<u64, PluginError> {
        self.with("append", |l| l.append(batch.as_slice()))
    }

    fn follow(&self, sink: FollowSinkBox) -> RResult<(), PluginError> {
        self.with("follow", |l| l.follow(Follower(Arc::new(sink))))
    }

    fn barrier(&self) -> RResult<u64, PluginError> {
        self.with("barrier", |l| l.barrier())
    }

    fn close(&self) -> RResult<(), PluginError> {
        self.with("close", |l| l.close())
    }
}

/// A logger library's `open_logger`; used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn open_logger<L: TransactionLogger>(
    config: RStr<'_>,
    host: HostBox,
    open: fn(&str) -> Result<L, PluginError>,
) -> RResult<LoggerBox, PluginError> {
    crate::log::install(host);
    guard("open_logger", || open(config.as_str()))
        .map(|logger| {
            LoggerApi_TO::from_value(
                LoggerAdapter {
                    logger: Some(logger),
                },
                TD_Opaque,
            )
        })
        .into()
}

/// A shared logger library's `open_shared_logger`; used by
/// [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn open_shared_logger<L: SharedLog>(
    config: RStr<'_>,
    host: HostBox,
    open: fn(&str) -> Result<L, PluginError>,
) -> RResult<SharedLoggerBox, PluginError> {
    crate::log::install(host);
    guard("open_shared_logger", || open(config.as_str()))
        .map(|log| {
            SharedLogApi_TO::from_value(
                SharedLogAdapter {
                    log,
                    panicked: AtomicBool::new(false),
                },
                TD_Opaque,
            )
        })
        .into()
}

/// A frontend library's `start_frontend`; used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn start_frontend<F: Frontend>(
    store: StoreBox,
    config: RStr<'_>,
    host: HostBox,
    start: fn(Store, &str) -> Result<F, PluginError>,
) -> RResult<current::FrontendBox, PluginError> {
    crate::log::install(host);
    guard("start_frontend", || {
        start(Store::from_v1_7(store), config.as_str())
    })
    .map(|frontend| current::FrontendApi_TO::from_value(FrontendAdapter { frontend }, TD_Opaque))
    .into()
}

/// The `open_logger` of a frontend library.
#[doc(hidden)]
pub extern "C" fn not_a_logger(
    _config: RStr<'_>,
    _host: HostBox,
) -> RResult<LoggerBox, PluginError> {
    RResult::RErr(PluginError::invalid_input(
        "this plug-in is a frontend, not a logger",
    ))
}

/// The `start_frontend` of a logger library.
#[doc(hidden)]
pub extern "C" fn not_a_frontend(
    _store: current::StoreBox,
    _config: RStr<'_>,
    _host: HostBox,
) -> RResult<current::FrontendBox, PluginError> {
    RResult::RErr(PluginError::invalid_input(
        "this plug-in is a logger, not a frontend",
    ))
}

/// The `open_shared_logger` of a library that is not a shared logger.
#[doc(hidden)]
pub extern "C" fn not_a_shared_logger(
    _config: RStr<'_>,
    _host: HostBox,
) -> RResult<SharedLoggerBox, PluginError> {
    RResult::RErr(PluginError::invalid_input(
        "this plug-in is not a shared logger",
    ))
}

/// The `open_logger` of a shared logger: it cannot serve a host that would apply
/// writes itself.
#[doc(hidden)]
pub extern "C" fn shared_only(
    _config: RStr<'_>,
    _host: HostBox,
) -> RResult<LoggerBox, PluginError> {
    RResult::RErr(PluginError::invalid_input(
        "this logger shares its log with other kvs nodes (log:shared): it is opened as a \
         shared log, never as a plain one",
    ))
}
