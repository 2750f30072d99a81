//! Native (`.so`) plug-ins, adapted to the host's [`ports`](crate::ports) at the edge.
//!
//! [`load`] opens a library and reads its handshake; [`GENERATIONS`] then says which
//! adapter drives it: the newest contract generation whose first minor is at most the
//! plug-in's. One module per generation (`v1_0`, `v1_1`, `v1_3`, `v1_4`, `v1_7`) finds that
//! generation's entry points in the library, checks their layout with abi_stable, and
//! implements [`Entry`] over them, handing the plug-in the host's store as that
//! generation's `StoreApi`. What every generation shares — the 1.0 logger and frontend
//! objects, 1.3's shared log — is adapted once, here. No abi_stable type leaves this
//! module.

use std::sync::Arc;
use std::time::Duration;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr},
};
use kvs_plugin_api::native::v1_1::HostBox;
use kvs_plugin_api::native::v1_3::{FollowSink_TO, SharedLoggerBox};
use kvs_plugin_api::native::{FrontendBox, HealthProbeBox, LoggerBox, ReplaySink, ReplaySink_TO};
use kvs_plugin_api::{Event, PluginError};

use crate::plugins::Plugin;
use crate::ports::{Entry, FollowSink, HealthCheck, Log, RunningFrontend, SharedLog};

mod load;
mod store_handle;
mod v1_0;
mod v1_1;
mod v1_3;
mod v1_4;
mod v1_7;

pub(crate) use load::load;
pub use v1_1::plugin_event;

/// Finds a generation's entry points in a library whose handshake says minor `api.1`,
/// checks their layout, and returns them as an [`Entry`].
type Loader =
    fn(&'static abi_stable::library::RawLibrary, (u16, u16)) -> Result<Arc<dyn Entry>, String>;

/// Every native contract generation this host drives: (first minor, adapter), newest
/// first. A plug-in is driven through the first row whose minor is at most its own
/// (1.2 added no native types, so a 1.2 plug-in is a 1.1 one). Adding a minor with
/// native types adds a row.
pub const GENERATIONS: &[(u16, Loader)] = &[
    (7, v1_7::load),
    (4, v1_4::load),
    (3, v1_3::load),
    (1, v1_1::load),
    (0, v1_0::load),
];

/// A logger plug-in's 1.0 `LoggerApi` object (every generation opens loggers as one).
struct NativeLog(LoggerBox);

impl Log for NativeLog {
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        self.0.append(batch.into()).into()
    }

    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let mut sink = ReplayInto(sink);
        self.0
            .replay(ReplaySink_TO::from_ptr(&mut sink, TD_Opaque))
            .into()
    }

    fn close(&mut self) -> Result<(), PluginError> {
        self.0.close().into()
    }

    fn health(&self) -> Option<HealthCheck> {
        self.0.health_probe().into_option().map(health_check)
    }
}

struct ReplayInto<'s>(&'s mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>);

impl ReplaySink for ReplayInto<'_> {
    fn accept(
        &mut self,
        events: abi_stable::std_types::RSlice<'_, Event<'_>>,
    ) -> RResult<(), PluginError> {
        (self.0)(events.as_slice()).into()
    }
}

fn health_check(probe: HealthProbeBox) -> HealthCheck {
    Arc::new(move || probe.is_healthy())
}

/// A frontend plug-in's 1.0 `FrontendApi` object (every generation returns one).
struct NativeFrontend(FrontendBox);

impl RunningFrontend for NativeFrontend {
    fn endpoints(&self) -> Vec<String> {
        self.0
            .endpoints()
            .into_iter()
            .map(|e| e.into_string())
            .collect()
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        self.0.stop(ms).into()
    }
}

/// A shared logger's 1.3 `SharedLogApi` object (1.3 and 1.4 open shared logs as one).
struct NativeSharedLog(SharedLoggerBox);

impl SharedLog for NativeSharedLog {
    fn append(&self, batch: &[Event<'_>]) -> Result<u64, PluginError> {
        self.0.append(batch.into()).into()
    }

    fn follow(&self, sink: Arc<dyn FollowSink>) -> Result<(), PluginError> {
        self.0
            .follow(FollowSink_TO::from_value(FollowInto(sink), TD_Opaque))
            .into()
    }

    fn barrier(&self) -> Result<u64, PluginError> {
        self.0.barrier().into()
    }

    fn close(&self) -> Result<(), PluginError> {
        self.0.close().into()
    }

    fn health(&self) -> Option<HealthCheck> {
        self.0.health_probe().into_option().map(health_check)
    }
}

struct FollowInto(Arc<dyn FollowSink>);

impl kvs_plugin_api::native::v1_3::FollowSink for FollowInto {
    fn begin_snapshot(&self) {
        self.0.begin_snapshot()
    }

    fn end_snapshot(&self, position: u64) {
        self.0.end_snapshot(position)
    }

    fn deliver(&self, events: abi_stable::std_types::RSlice<'_, Event<'_>>, through: u64) {
        self.0.deliver(events.as_slice(), through)
    }
}

/// An entry point of 1.1 and later that takes a config table and the host's services.
type WithHost<T> = for<'a> extern "C" fn(RStr<'a>, HostBox) -> RResult<T, PluginError>;

/// Opens a logger through an entry point of 1.1 or later.
fn open_logger(
    open: WithHost<LoggerBox>,
    plugin: &Plugin,
    config: &str,
) -> Result<Box<dyn Log>, PluginError> {
    logger(open(RStr::from_str(config), v1_1::host_box(&plugin.name)))
}

/// Opens a shared log through an entry point of 1.3 or later.
fn open_shared_log(
    open: WithHost<SharedLoggerBox>,
    plugin: &Plugin,
    config: &str,
) -> Result<Arc<dyn SharedLog>, PluginError> {
    shared_log(open(RStr::from_str(config), v1_1::host_box(&plugin.name)))
}

/// Starts a frontend through an entry point of 1.1 or later, handing it `store` (its
/// generation's store object).
fn start_frontend<S>(
    start: for<'a> extern "C" fn(S, RStr<'a>, HostBox) -> RResult<FrontendBox, PluginError>,
    store: S,
    plugin: &Plugin,
    config: &str,
) -> Result<Box<dyn RunningFrontend>, PluginError> {
    frontend(start(
        store,
        RStr::from_str(config),
        v1_1::host_box(&plugin.name),
    ))
}

fn logger(opened: RResult<LoggerBox, PluginError>) -> Result<Box<dyn Log>, PluginError> {
    Result::from(opened).map(|l| Box::new(NativeLog(l)) as Box<dyn Log>)
}

fn frontend(
    started: RResult<FrontendBox, PluginError>,
) -> Result<Box<dyn RunningFrontend>, PluginError> {
    Result::from(started).map(|f| Box::new(NativeFrontend(f)) as Box<dyn RunningFrontend>)
}

fn shared_log(
    opened: RResult<SharedLoggerBox, PluginError>,
) -> Result<Arc<dyn SharedLog>, PluginError> {
    Result::from(opened).map(|l| Arc::new(NativeSharedLog(l)) as Arc<dyn SharedLog>)
}
