//! Reload: apply a configuration and a plugins directory read again to a running kvs,
//! while it serves (README, "Changing a running kvs").
//!
//! Everything is checked before anything changes: a config that names a plug-in the
//! directory does not hold, or whose `[auth]` does not load, changes nothing. Then, in
//! order: limits, access rules, frontends (added; replaced when their file or table
//! changed — the new instance starts beside the old one, which then drains —; removed),
//! and the logger (swapped by the writer between two batches). A change that fails
//! leaves what it would have replaced serving, and the report says why.

use std::sync::Arc;
use std::time::Instant;

mod logger;
mod plan;
mod report;

use plan::{Plan, differs, restart_only};
pub use report::{Ask, ReloadFn, ReloadReport, ReloadSlot};

use super::{Running, Started, start_frontend, status};
use crate::admin::PluginList;
use crate::caller::RequestHook;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::{Catalog, Format, Plugin};
use crate::write_request::Msg;

/// What a running kvs keeps for reloads.
pub(super) struct Live {
    /// The configuration in effect (`None`: started without one, by a tool).
    pub(super) config: Option<Config>,
    /// The logger plug-in in use and its table (`None`: a host-made logger).
    pub(super) logger: Option<(Plugin, String)>,
    /// Whether the logger is a shared log (never swapped live).
    pub(super) shared: bool,
    /// What `/plugins` lists.
    pub(super) plugins: PluginList,
    pub(super) metrics: Arc<Metrics>,
    pub(super) slot: ReloadSlot,
}

impl Running {
    /// Makes `POST /reload` on the admin listener call `reload`.
    pub fn set_reload(&self, reload: ReloadFn) {
        let _ = self.live.slot.set(reload);
    }

    /// Applies `next` (the configuration read again), with the plug-ins `catalog` (the
    /// plugins directory scanned again) holds. See the module documentation.
    /// Count the finished report with [`Running::count_reload`].
    pub fn reload(&mut self, next: &Config, catalog: &Catalog) -> ReloadReport {
        self.reload_inner(next, catalog).one_line_each()
    }

    /// Counts a finished reload in `kvs_reloads_total` (by its outcome).
    pub fn count_reload(&self, report: &ReloadReport) {
        self.live
            .metrics
            .reloads
            .with_label_values(&[report.outcome()])
            .inc();
    }

    fn reload_inner(&mut self, next: &Config, catalog: &Catalog) -> ReloadReport {
        let Some(current) = self.live.config.clone() else {
            return ReloadReport::refusing("this kvs was not started from a configuration");
        };
        let plan = match Plan::check(next, catalog) {
            Ok(plan) => plan,
            Err(why) => return ReloadReport::refusing(format!("{why}; nothing changed")),
        };
        let mut report = ReloadReport::default();
        restart_only(&current, next, &mut report);
        self.apply_limits(&current, next, &mut report);
        self.apply_rate_limit(&current, next, &mut report);
        self.apply_access(&current, next, plan.hook, &mut report);
        self.shutdown_timeout = next.shutdown_timeout;
        self.apply_frontends(plan.frontends, &mut report);
        self.apply_logger(&current, next, plan.logger, &mut report);
        self.refresh_plugin_list();
        // What was applied is the base of the next comparison; what needs a restart
        // stays as it runs, so the next reload reports it again.
        let mut applied = next.clone();
        applied.admin = current.admin.clone();
        applied.cluster = current.cluster.clone();
        applied.telemetry = crate::telemetry::TelemetryConfig {
            log: next.telemetry.log.clone(),
            ..current.telemetry.clone()
        };
        applied.max_batch = current.max_batch;
        applied.queue_capacity = current.queue_capacity;
        applied.queue_max_bytes = current.queue_max_bytes;
        applied.shed_delay_ms = current.shed_delay_ms;
        applied.logger = current.logger.clone();
        self.live.config = Some(applied);
        report
    }

    fn apply_limits(&self, current: &Config, next: &Config, report: &mut ReloadReport) {
        let (was, now) = (current.limits, next.limits);
        if (was.max_key_bytes, was.max_value_bytes) == (now.max_key_bytes, now.max_value_bytes) {
            report.kept.push("limits: unchanged".into());
            return;
        }
        self.store.set_limits(now);
        self.store
            .send_to_writer(Msg::MaxValueBytes(now.max_value_bytes));
        let raised = now.max_value_bytes > was.max_value_bytes;
        report.changed.push(format!(
            "limits: max_key_bytes {} -> {}, max_value_bytes {} -> {}{}",
            was.max_key_bytes,
            now.max_key_bytes,
            was.max_value_bytes,
            now.max_value_bytes,
            if raised {
                " (the store takes larger values at once; frontends that size their message \
                 buffers at start, such as grpc and resp, take them once replaced or restarted)"
            } else {
                ""
            }
        ));
    }

    fn apply_rate_limit(&self, current: &Config, next: &Config, report: &mut ReloadReport) {
        if current.rate_limit == next.rate_limit {
            report.kept.push("rate_limit: unchanged".into());
            return;
        }
        self.store.set_rate_limit(&next.rate_limit);
        report.changed.push(format!(
            "rate_limit: {} -> {}",
            current.rate_limit.describe(),
            next.rate_limit.describe()
        ));
    }

    fn apply_access(
        &self,
        current: &Config,
        next: &Config,
        hook: Option<Arc<dyn RequestHook>>,
        report: &mut ReloadReport,
    ) {
        let enabled = next.auth.enabled;
        // Always swapped in: keys and JWKS files are read again even if [auth] is not.
        self.store.set_request_hook(hook);
        if differs(&current.auth, &next.auth) {
            report.changed.push(format!(
                "access: [auth] applied to requests from now on ({})",
                if enabled { "on" } else { "off" }
            ));
        } else if enabled {
            report
                .kept
                .push("access: [auth] unchanged; its key files were read again".into());
        } else {
            report.kept.push("access: off, unchanged".into());
        }
    }

    fn apply_frontends(&mut self, wanted: Vec<(Plugin, String)>, report: &mut ReloadReport) {
        // Removed first, so a frontend taking over another's address can bind it.
        let (gone, mut keep): (Vec<Started>, Vec<Started>) = std::mem::take(&mut self.frontends)
            .into_iter()
            .partition(|f| !wanted.iter().any(|(p, _)| p.name == f.name));
        for f in &gone {
            report.changed.push(format!("frontend {}: stopped", f.name));
        }
        report
            .refused
            .extend(super::stop_frontends(gone, self.shutdown_timeout));
        for (plugin, table) in wanted {
            match keep.iter().position(|f| f.name == plugin.name) {
                None => match self.start_beside(&plugin, &table, &keep, None) {
                    Ok(started) => {
                        report.changed.push(format!(
                            "frontend {}: started ({} {}, on {})",
                            plugin.name,
                            plugin.format,
                            short(&plugin.hash),
                            started.endpoints.join(", ")
                        ));
                        keep.push(started);
                    }
                    Err(e) => report
                        .refused
                        .push(format!("frontend {}: not started: {e:#}", plugin.name)),
                },
                Some(i) => {
                    let running = &keep[i];
                    let file_changed = running.plugin.hash != plugin.hash;
                    let table_changed = running.table != table;
                    if !file_changed && !table_changed {
                        report.kept.push(format!(
                            "frontend {}: unchanged ({})",
                            plugin.name,
                            short(&plugin.hash)
                        ));
                        continue;
                    }
                    let why = match (file_changed, table_changed) {
                        (true, true) => "a new file and a changed table",
                        (true, false) => "a new file",
                        _ => "a changed table",
                    };
                    let started = Instant::now();
                    match keep[i].handle.swap_in_place(&plugin, &table) {
                        Some(Ok(())) => {
                            let running = &mut keep[i];
                            let how = if running.plugin.hash == plugin.hash {
                                "reconfigured in place".to_string()
                            } else {
                                format!(
                                    "swapped in place ({} -> {}; requests in flight finish on \
                                     the old code)",
                                    short(&running.plugin.hash),
                                    short(&plugin.hash)
                                )
                            };
                            report.changed.push(format!(
                                "frontend {}: {how} for {why} in {} ms; its listener and \
                                 connections kept",
                                plugin.name,
                                started.elapsed().as_millis()
                            ));
                            self.live
                                .metrics
                                .swaps
                                .with_label_values(&["frontend", "ok"])
                                .inc();
                            running.plugin = plugin;
                            running.table = table;
                        }
                        Some(Err(e)) => {
                            self.live
                                .metrics
                                .swaps
                                .with_label_values(&["frontend", "failed"])
                                .inc();
                            report.refused.push(format!(
                                "frontend {}: not swapped ({why}): {e}; the one in use keeps \
                                 serving",
                                plugin.name
                            ));
                        }
                        None => {
                            let old = keep.remove(i);
                            if let Some(now) =
                                self.replace_frontend(old, &plugin, &table, why, &keep, report)
                            {
                                keep.insert(i, now);
                            }
                        }
                    }
                }
            }
        }
        self.frontends = keep;
    }

    /// Starts `plugin` beside `old` and drains `old`; if the new one cannot start, `old`
    /// keeps serving. A new instance that cannot bind beside the old one (an older
    /// build that does not share its port) starts once the old one has stopped, and if
    /// it fails then, the old one is started again. `None`: neither serves.
    fn replace_frontend(
        &self,
        old: Started,
        plugin: &Plugin,
        table: &str,
        why: &str,
        others: &[Started],
        report: &mut ReloadReport,
    ) -> Option<Started> {
        let swaps = &self.live.metrics.swaps;
        let started = Instant::now();
        match self.start_beside(plugin, table, others, Some(&old)) {
            Ok(new) => {
                let from = short(&old.plugin.hash);
                let stopped = super::stop_frontends(vec![old], self.shutdown_timeout);
                report.changed.push(format!(
                    "frontend {}: replaced for {why} ({from} -> {}); the old instance drained \
                     in {} ms{}",
                    plugin.name,
                    short(&plugin.hash),
                    started.elapsed().as_millis(),
                    stopped
                        .first()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                ));
                swaps.with_label_values(&["frontend", "ok"]).inc();
                Some(new)
            }
            Err(e) if old.table == table && format!("{e:#}").contains("in use") => {
                // The old instance holds the address alone: stop it, then start anew.
                let (old_plugin, old_table) = (old.plugin.clone(), old.table.clone());
                let _ = super::stop_frontends(vec![old], self.shutdown_timeout);
                match start_frontend(plugin, &self.store, table) {
                    Ok(new) => {
                        report.changed.push(format!(
                            "frontend {}: replaced for {why}, with a pause of {} ms: the old \
                             build does not share its address (built before kvs-serve's \
                             SO_REUSEPORT)",
                            plugin.name,
                            started.elapsed().as_millis()
                        ));
                        swaps.with_label_values(&["frontend", "ok"]).inc();
                        Some(new)
                    }
                    Err(e) => {
                        swaps.with_label_values(&["frontend", "failed"]).inc();
                        let back = start_frontend(&old_plugin, &self.store, &old_table);
                        report.refused.push(format!(
                            "frontend {}: the new file did not start ({e:#}); {}",
                            plugin.name,
                            if back.is_ok() {
                                "the old one was started again"
                            } else {
                                "the old one did not start again either: it is not serving"
                            }
                        ));
                        back.ok()
                    }
                }
            }
            Err(e) => {
                swaps.with_label_values(&["frontend", "failed"]).inc();
                report.refused.push(format!(
                    "frontend {}: not replaced ({why}): {e:#}; the one in use keeps serving",
                    plugin.name
                ));
                Some(old)
            }
        }
    }

    /// Starts `plugin`, and stops it again if it listens where another frontend
    /// (`others`, but not `replacing`, which it takes over from) or the admin listener
    /// does.
    fn start_beside(
        &self,
        plugin: &Plugin,
        table: &str,
        others: &[Started],
        replacing: Option<&Started>,
    ) -> anyhow::Result<Started> {
        let admin = self
            .admin
            .as_ref()
            .map(|a| ("the admin listener", vec![a.url()]));
        let others: Vec<(&str, Vec<String>)> = others
            .iter()
            .filter(|f| replacing.is_none_or(|r| r.name != f.name))
            .map(|f| (f.name.as_str(), f.endpoints.clone()))
            .chain(admin)
            .collect();
        let planned = super::frontends::planned_listen(table);
        if let Some(clash) = super::address_clash(&plugin.name, &planned, others.clone()) {
            anyhow::bail!(clash);
        }
        let mut started = start_frontend(plugin, &self.store, table)?;
        if let Some(clash) = super::address_clash(&started.name, &started.endpoints, others) {
            let _ = started.handle.stop(std::time::Duration::ZERO);
            anyhow::bail!(clash);
        }
        Ok(started)
    }

    /// Rebuilds what `/plugins` lists from what runs now.
    pub(super) fn refresh_plugin_list(&self) {
        let mut list = Vec::new();
        if let Some((logger, _)) = &self.live.logger {
            list.push(status("logger", logger, Vec::new()));
        }
        for f in &self.frontends {
            list.push(status("frontend", &f.plugin, f.endpoints.clone()));
        }
        *self.live.plugins.write().unwrap_or_else(|e| e.into_inner()) = list;
    }
}

/// The first 12 hex digits of a SHA-256, as reports show it.
pub(super) fn short(hash: &str) -> String {
    if hash.is_empty() {
        return "none".into(); // no logger served: a failed swap left none
    }
    format!("sha256:{}", &hash[..hash.len().min(12)])
}

/// Opens `plugin` as the writer's logger, on the writer's thread.
pub(super) fn opener(
    plugin: &Plugin,
    table: &str,
    metrics: &Arc<Metrics>,
) -> crate::write_request::OpenLog {
    let plugin = plugin.clone();
    let table = table.to_string();
    let meter = (plugin.format == Format::Wasm).then(|| metrics.wasm(&plugin.name));
    Box::new(move || {
        super::open::open_logger_metered(&plugin, &table, meter).map_err(|e| format!("{e:#}"))
    })
}
