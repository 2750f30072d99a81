//! Start and stop: the order that keeps every acknowledged write and serves nothing early.
//!
//! Start: find every named plug-in (fail before opening anything) -> open the logger ->
//! start the frontends (listening, but the store answers `unavailable`) -> replay the log
//! into the map -> start the writer -> ready.
//! Stop: not ready -> stop the frontends (they drain; their writes still land) -> refuse
//! new writes -> the writer logs what is queued and closes the logger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RStr};
use anyhow::{Context, Result, anyhow};
use kvs_plugin_api::{PluginError, PluginKind, native::FrontendBox};

use crate::caller::RequestHook;
use crate::config::Config;
use crate::handles::{host_box, store_box, store_box_v1_1};
use crate::plugins::{Catalog, Module, Plugin};
use crate::store::{Map, Phase, Store};
use crate::writer::{self, ReplayStats, Writer, WriterStats};

/// Host-side choices that are not configuration: what embedders and tests may add.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Sees every frontend request first and may refuse it (see [`crate::caller`]).
    pub request_hook: Option<Arc<dyn RequestHook>>,
}

/// A running kvs: the store, its writer, its frontends.
pub struct Running {
    /// The store, shared with every frontend.
    pub store: Arc<Store>,
    /// What replay found at start.
    pub replayed: ReplayStats,
    writer: Writer,
    frontends: Vec<RunningFrontend>,
    shutdown_timeout: Duration,
}

struct RunningFrontend {
    name: String,
    endpoints: Vec<String>,
    handle: FrontendBox,
}

/// Opens the named logger plug-in with its config table.
pub fn open_logger(plugin: &Plugin, config: &str) -> Result<kvs_plugin_api::native::LoggerBox> {
    let result: Result<_, PluginError> = match &plugin.module {
        Module::Native(native) => match native.v1_1 {
            Some(v1_1) => (v1_1.open_logger)(RStr::from_str(config), host_box(&plugin.name)).into(),
            None => native.v1_0.open_logger()(RStr::from_str(config)).into(),
        },
        Module::Wasm => crate::wasm::open_logger(&plugin.path, &plugin.name, config),
    };
    result.map_err(|e| {
        anyhow!(
            "cannot open the {} logger ({}): {e}",
            plugin.name,
            plugin.path.display()
        )
    })
}

/// Starts kvs with the plug-ins `config` names, found in `catalog`.
///
/// Frontends start listening before replay so that probes can see "not ready" while a
/// large log replays; until replay completes the store answers every request, reads
/// included, with `unavailable`, so nothing is served from a half-replayed map.
pub fn start(config: &Config, catalog: &Catalog) -> Result<Running> {
    start_with(config, catalog, StartOptions::default())
}

/// [`start`] with host-side options.
pub fn start_with(config: &Config, catalog: &Catalog, options: StartOptions) -> Result<Running> {
    let logger_plugin = catalog.find(PluginKind::LOGGER, &config.logger)?;
    let frontend_plugins = config
        .frontends
        .iter()
        .map(|name| catalog.find(PluginKind::FRONTEND, name))
        .collect::<Result<Vec<_>>>()?;

    // The logger opens first: a bad logger config fails before any port is bound.
    let mut logger = open_logger(logger_plugin, &config.plugin_config(&config.logger))?;
    let map = Arc::new(Map::default());
    let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
    let health = logger.health_probe().into_option();
    let store = Arc::new(Store::new(
        map.clone(),
        tx.clone(),
        config.limits,
        health,
        options.request_hook,
    ));

    let mut frontends = Vec::new();
    let mut failure = None;
    for plugin in frontend_plugins {
        match start_frontend(plugin, &store, config) {
            Ok(f) => frontends.push(f),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let started = Instant::now();
    let replayed = match failure {
        Some(e) => Err(e),
        None => writer::replay(&mut logger, &map)
            .map_err(|e| anyhow!("replay of the {} log failed: {e}", config.logger)),
    };
    let replayed = match replayed {
        Ok(stats) => stats,
        Err(e) => {
            store.set_phase(Phase::Stopped);
            let _ = stop_frontends(frontends, config.shutdown_timeout);
            let _ = logger.close();
            return Err(e);
        }
    };
    tracing::info!(
        events = replayed.events,
        keys = map.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replayed the {} log",
        config.logger
    );

    let writer = Writer::spawn(
        logger,
        map,
        tx,
        rx,
        replayed.last_sequence + 1,
        config.max_batch,
    )
    .context("cannot start the writer thread")?;
    store.set_phase(Phase::Serving);
    Ok(Running {
        store,
        replayed,
        writer,
        frontends,
        shutdown_timeout: config.shutdown_timeout,
    })
}

fn start_frontend(plugin: &Plugin, store: &Arc<Store>, config: &Config) -> Result<RunningFrontend> {
    let table = config.plugin_config(&plugin.name);
    let handle = launch_frontend(plugin, store, &table).map_err(|e| {
        anyhow!(
            "cannot start the {} frontend ({}): {e}",
            plugin.name,
            plugin.path.display()
        )
    })?;
    let endpoints: Vec<String> = handle
        .endpoints()
        .into_iter()
        .map(|e| e.into_string())
        .collect();
    tracing::info!(
        "frontend {} serving on {}",
        plugin.name,
        if endpoints.is_empty() {
            "-".to_string()
        } else {
            endpoints.join(", ")
        }
    );
    Ok(RunningFrontend {
        name: plugin.name.clone(),
        endpoints,
        handle,
    })
}

/// Starts a frontend plug-in of either format with its config table.
pub fn launch_frontend(
    plugin: &Plugin,
    store: &Arc<Store>,
    table: &str,
) -> Result<FrontendBox, PluginError> {
    let name = &plugin.name;
    match &plugin.module {
        Module::Native(native) => match native.v1_1 {
            Some(v1_1) => (v1_1.start_frontend)(
                store_box_v1_1(store, name),
                RStr::from_str(table),
                host_box(name),
            )
            .into(),
            None => {
                native.v1_0.start_frontend()(store_box(store, name), RStr::from_str(table)).into()
            }
        },
        Module::Wasm => crate::wasm::start_frontend(&plugin.path, name, store, table),
    }
}

/// Stops frontends in reverse start order; returns what went wrong.
fn stop_frontends(frontends: Vec<RunningFrontend>, deadline: Duration) -> Vec<String> {
    let deadline_ms = deadline.as_millis() as u64;
    let mut problems = Vec::new();
    for mut f in frontends.into_iter().rev() {
        tracing::info!("stopping frontend {}", f.name);
        if let RResult::RErr(e) = f.handle.stop(deadline_ms) {
            problems.push(format!("frontend {} did not stop cleanly: {e}", f.name));
        }
    }
    problems
}

impl Running {
    /// Each frontend's name and the endpoints it reported.
    pub fn endpoints(&self) -> Vec<(String, Vec<String>)> {
        self.frontends
            .iter()
            .map(|f| (f.name.clone(), f.endpoints.clone()))
            .collect()
    }

    /// Stops gracefully. Every write acknowledged before this returns is logged.
    ///
    /// A frontend that misses its drain deadline is logged as a warning: its cut-off
    /// requests were never acknowledged, so nothing is lost. A logger that fails to close
    /// is an error: its last writes may not be durable.
    pub fn stop(self) -> Result<WriterStats> {
        self.store.set_phase(Phase::Draining);
        for problem in stop_frontends(self.frontends, self.shutdown_timeout) {
            tracing::warn!("{problem}");
        }
        self.store.set_phase(Phase::Stopped);
        let (stats, closed) = self.writer.stop();
        tracing::info!(
            batches = stats.batches,
            writes = stats.writes,
            failed = stats.failed,
            "stopped"
        );
        closed.map_err(|e| anyhow!("closing the logger failed: {e}"))?;
        Ok(stats)
    }
}
