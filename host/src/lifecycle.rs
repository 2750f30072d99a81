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
use kvs_plugin_api::{
    Limits, PluginError, PluginKind,
    native::{FrontendBox, LoggerBox},
};

use crate::access::AccessControl;
use crate::admin::{Admin, AdminConfig, PluginList, PluginStatus};
use crate::caller::RequestHook;
use crate::config::{ClusterConfig, Config, Reads};
use crate::handles::{host_box, store_box, store_box_v1_1, store_box_v1_3};
use crate::metrics::Metrics;
use crate::plugins::{Catalog, Module, Plugin};
use crate::shared;
use crate::store::{Map, Phase, Store};
use crate::writer::{self, ReplayStats, Writer, WriterStats};

mod open;

pub use open::open_logger;
use open::{Opened, open_any};

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
    admin: Option<Admin>,
}

struct RunningFrontend {
    name: String,
    endpoints: Vec<String>,
    handle: FrontendBox,
}

/// Where the logger of a [`Builder`] comes from.
enum LoggerSource<'a> {
    /// A plug-in, opened with its table when the builder starts.
    Plugin(&'a Plugin, String),
    /// An already open logger (tools that need none: `kvs plugins check`).
    Open(LoggerBox, String),
}

/// The one way kvs is wired: logger, store, frontends, replay, writer. `kvs` itself
/// ([`start`]), `kvs plugins check` and the benchmarks all start through it.
pub struct Builder<'a> {
    logger: LoggerSource<'a>,
    frontends: Vec<(&'a Plugin, String)>,
    limits: Limits,
    queue_capacity: usize,
    max_batch: usize,
    shutdown_timeout: Duration,
    options: StartOptions,
    admin: Option<AdminConfig>,
    cluster: ClusterConfig,
}

impl<'a> Builder<'a> {
    /// What `config` names, found in `catalog`: fails (before anything is opened) if a
    /// named plug-in is missing or ambiguous.
    pub fn from_config(config: &Config, catalog: &'a Catalog) -> Result<Builder<'a>> {
        let logger = catalog.find(PluginKind::LOGGER, &config.logger)?;
        let frontends = config
            .frontends
            .iter()
            .map(|name| {
                let plugin = catalog.find(PluginKind::FRONTEND, name)?;
                Ok((plugin, config.plugin_config(name)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Builder {
            logger: LoggerSource::Plugin(logger, config.plugin_config(&config.logger)),
            frontends,
            limits: config.limits,
            queue_capacity: config.queue_capacity,
            max_batch: config.max_batch,
            shutdown_timeout: config.shutdown_timeout,
            options: StartOptions {
                request_hook: AccessControl::from_config(&config.auth)?
                    .map(|a| Arc::new(a) as Arc<dyn RequestHook>),
            },
            admin: config.admin.clone(),
            cluster: config.cluster.clone(),
        })
    }

    /// A host around an already open logger, with no frontends yet and the default
    /// writer settings; `name` is used in messages.
    pub fn with_open_logger(logger: LoggerBox, name: &str, limits: Limits) -> Builder<'a> {
        Builder {
            logger: LoggerSource::Open(logger, name.to_string()),
            frontends: Vec::new(),
            limits,
            queue_capacity: 1024,
            max_batch: 64,
            shutdown_timeout: Duration::from_secs(5),
            options: StartOptions::default(),
            admin: None,
            cluster: ClusterConfig::default(),
        }
    }

    /// Adds a frontend plug-in with its config table.
    pub fn frontend(mut self, plugin: &'a Plugin, table: &str) -> Self {
        self.frontends.push((plugin, table.to_string()));
        self
    }

    /// Host-side options (the request hook).
    pub fn options(mut self, options: StartOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts kvs. Frontends start listening before replay so that probes can see "not
    /// ready" while a large log replays; until replay completes the store answers every
    /// request, reads included, with `unavailable`, so nothing is served from a
    /// half-replayed map.
    pub fn start(self) -> Result<Running> {
        // Per-request series only when an admin listener can show them.
        let metrics = Metrics::new(self.admin.is_some());
        let plugins: PluginList = Default::default();
        // The logger opens first: a bad logger config fails before any port is bound.
        let (mut logger, logger_name) = match self.logger {
            LoggerSource::Plugin(plugin, table) => {
                let meter =
                    matches!(plugin.module, Module::Wasm).then(|| metrics.wasm(&plugin.name));
                let logger = open_any(plugin, &table, meter)?;
                plugins
                    .write()
                    .unwrap()
                    .push(status("logger", plugin, Vec::new()));
                (logger, plugin.name.clone())
            }
            LoggerSource::Open(logger, name) => (Opened::Local(logger), name),
        };
        let map = Arc::new(Map::default());
        let (tx, rx) = crossbeam_channel::bounded(self.queue_capacity);
        let health = logger.health_probe();
        let store = Arc::new(Store::new(
            map.clone(),
            tx.clone(),
            self.limits,
            health,
            self.options.request_hook,
            metrics.clone(),
        ));
        // The admin listener comes up first, so it shows "not ready" during replay.
        let admin = match &self.admin {
            Some(config) => match Admin::start(config, store.clone(), plugins.clone()) {
                Ok(admin) => {
                    tracing::info!("admin listener serving on {}", admin.url());
                    Some(admin)
                }
                Err(e) => {
                    logger.close();
                    return Err(e);
                }
            },
            None => None,
        };

        let mut frontends = Vec::new();
        let mut failure = None;
        for (plugin, table) in self.frontends {
            match start_frontend(plugin, &store, &table) {
                Ok(f) => {
                    let shown = status("frontend", plugin, f.endpoints.clone());
                    plugins.write().unwrap().push(shown);
                    frontends.push(f)
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let started = Instant::now();
        let cluster_timeout = Duration::from_millis(self.cluster.timeout_ms);
        let mut acknowledge = writer::Acknowledge::Apply;
        let replayed = match (failure, &mut logger) {
            (Some(e), _) => Err(e),
            (None, Opened::Local(local)) => writer::replay(local, &map)
                .map_err(|e| anyhow!("replay of the {logger_name} log failed: {e}")),
            (None, Opened::Shared(log)) => {
                shared::follow(log.clone(), map.clone(), metrics.clone(), cluster_timeout)
                    .and_then(|following| {
                        let barrier = shared::read_barrier(
                            following.log.clone(),
                            following.delivered.clone(),
                            cluster_timeout,
                        )?;
                        let stats = writer::ReplayStats {
                            events: following.events,
                            last_sequence: following.delivered.through(),
                            data_bytes: metrics.bytes.get(),
                        };
                        store.set_read_barrier(barrier, self.cluster.reads == Reads::Linearizable);
                        logger = Opened::Local(following.writer_log);
                        acknowledge = following.acknowledge;
                        Ok(stats)
                    })
                    .map_err(|e| anyhow!("cannot catch up with the {logger_name} log: {e}"))
            }
        };
        let replayed = match replayed {
            Ok(stats) => stats,
            Err(e) => {
                store.set_phase(Phase::Stopped);
                let _ = stop_frontends(frontends, self.shutdown_timeout);
                logger.close();
                if let Some(admin) = admin {
                    admin.stop();
                }
                return Err(e);
            }
        };
        let Opened::Local(logger) = logger else {
            unreachable!("a shared log is wrapped for the writer once it has caught up")
        };
        tracing::info!(
            events = replayed.events,
            keys = map.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the {logger_name} log"
        );
        metrics.replay_seconds.set(started.elapsed().as_secs_f64());
        metrics.replay_events.set(replayed.events as i64);
        metrics.bytes.set(replayed.data_bytes);

        let writer = Writer::spawn(
            logger,
            map,
            (tx, rx),
            writer::WriterSettings {
                next_sequence: replayed.last_sequence + 1,
                max_batch: self.max_batch,
                acknowledge,
            },
            metrics,
        )
        .context("cannot start the writer thread")?;
        store.set_phase(Phase::Serving);
        Ok(Running {
            store,
            replayed,
            writer,
            frontends,
            shutdown_timeout: self.shutdown_timeout,
            admin,
        })
    }
}

/// A plug-in as `/plugins` lists it (health is filled in when asked).
fn status(role: &'static str, plugin: &Plugin, endpoints: Vec<String>) -> PluginStatus {
    PluginStatus {
        role,
        name: plugin.name.clone(),
        format: plugin.format.to_string(),
        version: plugin.version.clone(),
        api: format!("{}.{}", plugin.api.0, plugin.api.1),
        file: plugin.path.display().to_string(),
        endpoints,
        health: String::new(),
    }
}

/// Starts kvs with the plug-ins `config` names, found in `catalog`.
pub fn start(config: &Config, catalog: &Catalog) -> Result<Running> {
    Builder::from_config(config, catalog)?.start()
}

/// [`start`] with host-side options.
pub fn start_with(config: &Config, catalog: &Catalog, options: StartOptions) -> Result<Running> {
    Builder::from_config(config, catalog)?
        .options(options)
        .start()
}

fn start_frontend(plugin: &Plugin, store: &Arc<Store>, table: &str) -> Result<RunningFrontend> {
    let handle = launch_frontend(plugin, store, table).map_err(|e| {
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
fn launch_frontend(
    plugin: &Plugin,
    store: &Arc<Store>,
    table: &str,
) -> Result<FrontendBox, PluginError> {
    let name = &plugin.name;
    match &plugin.module {
        Module::Native(native) => match (native.v1_3, native.v1_1) {
            (Some(v1_3), _) => (v1_3.start_frontend)(
                store_box_v1_3(store, name),
                RStr::from_str(table),
                host_box(name),
            )
            .into(),
            (None, Some(v1_1)) => (v1_1.start_frontend)(
                store_box_v1_1(store, name),
                RStr::from_str(table),
                host_box(name),
            )
            .into(),
            (None, None) => {
                native.v1_0.start_frontend()(store_box(store, name), RStr::from_str(table)).into()
            }
        },
        Module::Wasm
            if plugin
                .capabilities
                .iter()
                .any(|c| c == kvs_plugin_api::capability::FRONTEND_STREAM) =>
        {
            crate::wasm::start_stream_frontend(&plugin.path, name, store, table)
        }
        Module::Wasm => crate::wasm::start_frontend(&plugin.path, name, store, table),
    }
}

/// Stops frontends in reverse start order; returns what went wrong.
/// Stops every frontend within one `deadline` shared by all of them (each gets what is
/// left of it), so the logger still closes within the shutdown timeout.
fn stop_frontends(frontends: Vec<RunningFrontend>, deadline: Duration) -> Vec<String> {
    let until = std::time::Instant::now() + deadline;
    let mut problems = Vec::new();
    for mut f in frontends.into_iter().rev() {
        tracing::info!("stopping frontend {}", f.name);
        let left = until.saturating_duration_since(std::time::Instant::now());
        if let RResult::RErr(e) = f.handle.stop(left.as_millis() as u64) {
            problems.push(format!("frontend {} did not stop cleanly: {e}", f.name));
        }
    }
    problems
}

impl Running {
    /// The admin listener's URL, if one is configured.
    pub fn admin_url(&self) -> Option<String> {
        self.admin.as_ref().map(Admin::url)
    }

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
        let (stats, problems) = self.stop_reporting()?;
        for problem in problems {
            tracing::warn!("{problem}");
        }
        Ok(stats)
    }

    /// [`Running::stop`], returning what went wrong stopping each frontend instead of
    /// logging it (for `kvs plugins check`).
    pub fn stop_reporting(self) -> Result<(WriterStats, Vec<String>)> {
        self.store.set_phase(Phase::Draining);
        let problems = stop_frontends(self.frontends, self.shutdown_timeout);
        self.store.set_phase(Phase::Stopped);
        let (stats, closed) = self.writer.stop();
        tracing::info!(
            batches = stats.batches,
            writes = stats.writes,
            failed = stats.failed,
            "stopped"
        );
        if let Some(admin) = self.admin {
            admin.stop();
        }
        closed.map_err(|e| anyhow!("closing the logger failed: {e}"))?;
        Ok((stats, problems))
    }
}
