//! A reload's logger step: a new file of the logger in use swapped in by the writer
//! between two batches; anything else about the logger reported, not applied.

use std::time::Instant;

use kvs_plugin_api::capability::{LOG_ATOMIC_BATCH, LOG_EXPIRY, LOG_SHARED};

use super::{ReloadReport, opener, short};
use crate::config::Config;
use crate::lifecycle::Running;
use crate::plugins::Plugin;
use crate::store::WriteFeatures;
use crate::write_request::{LogSwap, Msg};

impl Running {
    pub(super) fn apply_logger(
        &mut self,
        current: &Config,
        next: &Config,
        candidate: Option<Plugin>,
        report: &mut ReloadReport,
    ) {
        let Some((in_use, in_use_table)) = self.live.logger.clone() else {
            return;
        };
        if next.logger != current.logger {
            report.kept.push(format!(
                "logger: still {}; to move the store to {}, run `kvs migrate --to {1}` (a \
                 restart would start on {1} without the data)",
                current.logger, next.logger
            ));
            return;
        }
        let Some(plugin) = candidate else {
            return;
        };
        let table = next.plugin_config(&next.logger);
        if table != in_use_table {
            // A new table may name other storage (another path, database, data_dir): a
            // live swap would go on from there empty, and the next start would miss
            // what was written here.
            report.kept.push(format!(
                "logger {}: its table changed; that takes effect on restart (it may name \
                 other storage, which a live swap would start empty)",
                plugin.name
            ));
            return;
        }
        if plugin.hash == in_use.hash {
            report.kept.push(format!(
                "logger {}: unchanged ({})",
                plugin.name,
                short(&plugin.hash)
            ));
            return;
        }
        let declares = |p: &Plugin, c: &str| p.capabilities.iter().any(|x| x == c);
        let refuse = if self.live.shared || declares(&plugin, LOG_SHARED) {
            Some("a shared log is not swapped live: restart one node at a time".to_string())
        } else if declares(&in_use, LOG_EXPIRY) && !declares(&plugin, LOG_EXPIRY) {
            Some(
                "the new file does not declare log:expiry, so it could not read back the \
                 deadlines already logged"
                    .to_string(),
            )
        } else {
            None
        };
        if let Some(why) = refuse {
            report
                .refused
                .push(format!("logger {}: not swapped: {why}", plugin.name));
            return;
        }
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        let swap = LogSwap {
            open: opener(&plugin, &table, &self.live.metrics),
            reopen: opener(&in_use, &in_use_table, &self.live.metrics),
            stores_expiry: declares(&plugin, LOG_EXPIRY),
            atomic_batch: declares(&plugin, LOG_ATOMIC_BATCH),
            done,
        };
        let swaps = &self.live.metrics.swaps;
        let started = Instant::now();
        if !self.store.send_to_writer(Msg::SwapLog(swap)) {
            report.refused.push(format!(
                "logger {}: not swapped: the writer has stopped",
                plugin.name
            ));
            return;
        }
        // No timeout: until the writer answers, what serves is not known.
        match answer.recv() {
            Ok(Ok(health)) => {
                self.store.set_logger_health(health);
                self.store.set_write_features(WriteFeatures {
                    expiry: declares(&plugin, LOG_EXPIRY),
                    atomic: true,
                    atomic_batch: declares(&plugin, LOG_ATOMIC_BATCH),
                    shared: false,
                    logger: plugin.name.clone(),
                });
                report.changed.push(format!(
                    "logger {}: swapped ({} -> {}) between two batches; writes paused {} ms",
                    plugin.name,
                    short(&in_use.hash),
                    short(&plugin.hash),
                    started.elapsed().as_millis()
                ));
                swaps.with_label_values(&["logger", "ok"]).inc();
                self.live.logger = Some((plugin, table));
            }
            Ok(Err((why, health))) => {
                // Unhealthy after a failed swap: no logger serves (or the old one is in
                // trouble); the next reload swaps whatever file is there.
                if health.as_ref().is_some_and(|healthy| !healthy())
                    && let Some((in_use, _)) = &mut self.live.logger
                {
                    in_use.hash.clear();
                    // Not "nothing changed": no logger serves now.
                    report.changed.push(format!(
                        "logger {}: none serves now (writes fail); the next reload swaps \
                         in whatever file is there, or restart kvs",
                        in_use.name
                    ));
                }
                self.store.set_logger_health(health);
                swaps.with_label_values(&["logger", "failed"]).inc();
                report
                    .refused
                    .push(format!("logger {}: not swapped: {why}", plugin.name));
            }
            Err(_) => {
                swaps.with_label_values(&["logger", "failed"]).inc();
                report.refused.push(format!(
                    "logger {}: the writer stopped during the swap",
                    plugin.name
                ));
            }
        }
    }
}
