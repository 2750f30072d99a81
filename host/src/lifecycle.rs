//! Start and stop: the order that keeps every acknowledged write and serves nothing early.
//!
//! Start: find every named plug-in (fail before opening anything) -> open the logger ->
//! start the frontends (listening, but the store answers `unavailable`) -> replay the log
//! into the map -> start the writer -> ready.
//! Stop: not ready -> stop the frontends (they drain; their writes still land) -> refuse
//! new writes -> the writer logs what is queued and closes the logger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use kvs_plugin_api::{Limits, PluginKind};

use crate::access::AccessControl;
use crate::admin::{Admin, AdminConfig, PluginList};
use crate::caller::RequestHook;
use crate::config::{ClusterConfig, Config, Reads};
use crate::metrics::Metrics;
use crate::plugins::{Catalog, Format, Plugin};
use crate::ports::Log;
use crate::shared;
use crate::store::{Map, Phase, Store, WriteFeatures};
use crate::writer::{self, Acknowledge, ReplayStats, Writer, WriterStats};

mod frontends;
mod migrate;
mod open;
mod reload;

use frontends::{Started, address_clash, start_frontend, status, stop_frontends};
pub use migrate::MigrateOptions;
pub use open::open_logger;
use open::{Opened, open_any};
pub use reload::{Ask, ReloadFn, ReloadReport, ReloadSlot};

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
    frontends: Vec<Started>,
    shutdown_timeout: Duration,
    admin: Option<Admin>,
    /// What a reload compares with and changes.
    live: reload::Live,
}

/// Where the logger of a [`Builder`] comes from.
enum LoggerSource<'a> {
    /// A plug-in, opened with its table when the builder starts.
    Plugin(&'a Plugin, String),
    /// An already open logger (tools that need none: `kvs plugins check`).
    Open(Box<dyn Log>, String),
}

/// The one way kvs is wired: logger, store, frontends, replay, writer. `kvs` itself
/// ([`start`]), `kvs plugins check` and the benchmarks all start through it.
pub struct Builder<'a> {
    logger: LoggerSource<'a>,
    frontends: Vec<(&'a Plugin, String)>,
    limits: Limits,
    queue_capacity: usize,
    queue_max_bytes: u64,
    shed_delay_ms: u64,
    max_batch: usize,
    frontend_commits: bool,
    shutdown_timeout: Duration,
    options: StartOptions,
    admin: Option<AdminConfig>,
    cluster: ClusterConfig,
    /// The configuration it was built from, if any: what a reload compares with.
    config: Option<Config>,
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
            queue_max_bytes: config.queue_max_bytes,
            shed_delay_ms: config.shed_delay_ms,
            max_batch: config.max_batch,
            frontend_commits: config.frontend_commits,
            shutdown_timeout: config.shutdown_timeout,
            options: StartOptions {
                request_hook: AccessControl::from_config(&config.auth)?
                    .map(|a| Arc::new(a) as Arc<dyn RequestHook>),
            },
            admin: config.admin.clone(),
            cluster: config.cluster.clone(),
            config: Some(config.clone()),
        })
    }

    /// A host around an already open logger, with no frontends yet and the default
    /// writer settings; `name` is used in messages.
    pub fn with_open_logger(logger: Box<dyn Log>, name: &str, limits: Limits) -> Builder<'a> {
        Builder {
            logger: LoggerSource::Open(logger, name.to_string()),
            frontends: Vec::new(),
            limits,
            queue_capacity: 1024,
            queue_max_bytes: crate::overload::DEFAULT_QUEUE_MAX_BYTES,
            shed_delay_ms: crate::overload::DEFAULT_SHED_DELAY_MS,
            max_batch: 64,
            frontend_commits: true,
            shutdown_timeout: Duration::from_secs(5),
            options: StartOptions::default(),
            admin: None,
            cluster: ClusterConfig::default(),
            config: None,
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
    /// half-replayed map. If any step fails, what had started is stopped again (in
    /// [`Partial::abort`]) and the logger closed.
    pub fn start(self) -> Result<Running> {
        // Per-request series only when an admin listener can show them.
        let metrics = Metrics::new(self.admin.is_some());
        let plugins: PluginList = Default::default();
        let reload_slot = ReloadSlot::default();
        let mut logger_plugin = None;
        // The logger opens first: a bad logger config fails before any port is bound.
        let (logger, logger_name, stores_expiry, conditional, atomic_batch) = match self.logger {
            LoggerSource::Plugin(plugin, table) => {
                logger_plugin = Some((plugin.clone(), table.clone()));
                let declares =
                    |capability: &str| plugin.capabilities.iter().any(|c| c == capability);
                let stores_expiry = declares(kvs_plugin_api::capability::LOG_EXPIRY);
                let conditional = declares(kvs_plugin_api::capability::LOG_CONDITIONAL);
                let atomic_batch = declares(kvs_plugin_api::capability::LOG_ATOMIC_BATCH);
                let meter = (plugin.format == Format::Wasm).then(|| metrics.wasm(&plugin.name));
                let logger = open_any(plugin, &table, meter)?;
                let shown = status("logger", plugin, Vec::new());
                plugins.write().unwrap().push(shown);
                (
                    logger,
                    plugin.name.clone(),
                    stores_expiry,
                    conditional,
                    atomic_batch,
                )
            }
            // The host's own loggers (tools, tests) take every event kind.
            // Not `atomic_batch`: what they are is not known here.
            LoggerSource::Open(logger, name) => (Opened::Local(logger), name, true, false, false),
        };
        let shared = matches!(logger, Opened::Shared(_));
        let map = Arc::new(Map::default());
        let queue = writer::WriteQueue::new(self.queue_capacity);
        queue.allow_frontend_commits(self.frontend_commits);
        let overload = Arc::new(crate::overload::Overload::new(
            self.shed_delay_ms,
            self.queue_max_bytes,
            metrics.refusal_counters(),
            metrics.queue_delay.clone(),
        ));
        let store = Arc::new(Store::new(
            map.clone(),
            queue.clone(),
            self.limits,
            logger.health(),
            self.options.request_hook,
            metrics.clone(),
            overload.clone(),
        ));
        if let Some(config) = &self.config {
            store.set_rate_limit(&config.rate_limit);
        }
        let mut partial = Partial {
            store: store.clone(),
            logger: Some(logger),
            admin: None,
            frontends: Vec::new(),
            shutdown_timeout: self.shutdown_timeout,
        };
        let steps_plugins = plugins.clone();
        let steps = Steps {
            admin: self.admin.as_ref(),
            frontends: self.frontends,
            cluster: &self.cluster,
            plugins,
            metrics: metrics.clone(),
            map: map.clone(),
            logger_name: &logger_name,
            conditional,
            reload: reload_slot.clone(),
        };
        let caught_up = match steps.run(&mut partial) {
            Ok(caught_up) => caught_up,
            Err(e) => {
                partial.abort();
                return Err(e);
            }
        };
        let Some(Opened::Local(logger)) = partial.logger.take() else {
            unreachable!("Steps::run leaves the writer's log in place")
        };
        let settings = writer::WriterSettings {
            next_sequence: caught_up.replayed.last_sequence + 1,
            max_batch: self.max_batch,
            acknowledge: caught_up.acknowledge,
            stores_expiry,
            atomic_batch,
            max_value_bytes: self.limits.max_value_bytes,
            overload,
        };
        store.set_write_features(WriteFeatures {
            // A shared log that stores deadlines (etcd: as leases) serves TTLs too.
            expiry: stores_expiry,
            atomic: !shared || conditional,
            atomic_batch,
            shared,
            logger: logger_name.clone(),
        });
        let writer = match Writer::spawn(logger, map, queue, settings, metrics.clone()) {
            Ok(writer) => writer,
            Err((e, logger)) => {
                partial.logger = Some(Opened::Local(logger));
                partial.abort();
                return Err(anyhow!("cannot start the writer thread: {e}"));
            }
        };
        store.set_phase(Phase::Serving);
        Ok(Running {
            store,
            replayed: caught_up.replayed,
            writer,
            frontends: partial.frontends,
            shutdown_timeout: self.shutdown_timeout,
            admin: partial.admin,
            live: reload::Live {
                config: self.config,
                logger: logger_plugin,
                shared,
                plugins: steps_plugins,
                metrics,
                slot: reload_slot,
            },
        })
    }
}

/// What has started so far, to be stopped again if a later step fails.
struct Partial {
    store: Arc<Store>,
    logger: Option<Opened>,
    admin: Option<Admin>,
    frontends: Vec<Started>,
    shutdown_timeout: Duration,
}

impl Partial {
    /// Stops what started, in reverse order: frontends, logger, admin listener.
    fn abort(mut self) {
        self.store.set_phase(Phase::Stopped);
        let _ = stop_frontends(std::mem::take(&mut self.frontends), self.shutdown_timeout);
        if let Some(mut logger) = self.logger.take() {
            logger.close();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
    }
}

/// The start-up steps between opening the logger and starting the writer.
struct Steps<'b, 'a> {
    admin: Option<&'b AdminConfig>,
    frontends: Vec<(&'a Plugin, String)>,
    cluster: &'b ClusterConfig,
    plugins: PluginList,
    metrics: Arc<Metrics>,
    map: Arc<Map>,
    logger_name: &'b str,
    /// The shared log appends conditionally (`log:conditional`): atomic operations.
    conditional: bool,
    /// Where the admin listener's `POST /reload` finds the reload.
    reload: ReloadSlot,
}

/// A log replayed (or a shared log caught up): where the writer goes on from.
struct CaughtUp {
    replayed: ReplayStats,
    acknowledge: Acknowledge,
}

impl Steps<'_, '_> {
    /// Admin listener, frontends, then replay; leaves in `partial.logger` the log the
    /// writer appends to.
    fn run(self, partial: &mut Partial) -> Result<CaughtUp> {
        // The admin listener comes up first, so it shows "not ready" during replay.
        if let Some(config) = self.admin {
            let admin = Admin::start(
                config,
                partial.store.clone(),
                self.plugins.clone(),
                self.reload.clone(),
            )?;
            tracing::info!("admin listener serving on {}", admin.url());
            partial.admin = Some(admin);
        }
        for (plugin, table) in &self.frontends {
            let admin = partial
                .admin
                .as_ref()
                .map(|a| ("the admin listener", vec![a.url()]));
            let others = partial
                .frontends
                .iter()
                .map(|f| (f.name.as_str(), f.endpoints.clone()));
            // A `listen` the table names is checked before the frontend starts: a
            // listener of this process on that address would otherwise be shared with it.
            let planned = frontends::planned_listen(table);
            if let Some(clash) =
                address_clash(&plugin.name, &planned, others.clone().chain(admin.clone()))
            {
                return Err(anyhow!(clash));
            }
            let started = start_frontend(plugin, &partial.store, table)?;
            if let Some(clash) =
                address_clash(&started.name, &started.endpoints, others.chain(admin))
            {
                let mut started = started;
                let _ = started.handle.stop(Duration::ZERO);
                return Err(anyhow!(clash));
            }
            let shown = status("frontend", plugin, started.endpoints.clone());
            self.plugins.write().unwrap().push(shown);
            partial.frontends.push(started);
        }
        let started = Instant::now();
        let caught_up = match partial.logger.as_mut() {
            Some(Opened::Local(log)) => CaughtUp {
                replayed: writer::replay(log.as_mut(), &self.map)
                    .map_err(|e| anyhow!("replay of the {} log failed: {e}", self.logger_name))?,
                acknowledge: Acknowledge::Apply,
            },
            Some(Opened::Shared(log)) => {
                let (caught_up, writer_log) = self.catch_up(log.clone(), &partial.store)?;
                partial.logger = Some(Opened::Local(writer_log));
                caught_up
            }
            None => unreachable!("the logger is opened before the steps run"),
        };
        tracing::info!(
            events = caught_up.replayed.events,
            keys = self.map.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the {} log",
            self.logger_name
        );
        self.metrics
            .replay_seconds
            .set(started.elapsed().as_secs_f64());
        self.metrics
            .replay_events
            .set(caught_up.replayed.events as i64);
        self.metrics.bytes.set(caught_up.replayed.data_bytes);
        Ok(caught_up)
    }

    /// Follows a shared log until this node has caught up, and gives reads their
    /// barrier; returns the log the writer appends through.
    fn catch_up(
        &self,
        log: Arc<dyn crate::ports::SharedLog>,
        store: &Store,
    ) -> Result<(CaughtUp, Box<dyn Log>)> {
        let timeout = Duration::from_millis(self.cluster.timeout_ms);
        let following = shared::follow(
            log,
            self.map.clone(),
            self.metrics.clone(),
            timeout,
            self.conditional,
        )
        .and_then(|following| {
            let barrier =
                shared::read_barrier(following.log.clone(), following.delivered.clone(), timeout)?;
            store.set_read_barrier(barrier, self.cluster.reads == Reads::Linearizable);
            Ok(following)
        })
        .map_err(|e| anyhow!("cannot catch up with the {} log: {e}", self.logger_name))?;
        let replayed = writer::ReplayStats {
            events: following.events,
            last_sequence: following.delivered.through(),
            data_bytes: self.metrics.bytes.get(),
        };
        let caught_up = CaughtUp {
            replayed,
            acknowledge: following.acknowledge,
        };
        Ok((caught_up, following.writer_log))
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
