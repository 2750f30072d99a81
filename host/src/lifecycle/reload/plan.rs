//! What a reload checks before it changes anything, and the settings it leaves to a
//! restart.

use std::sync::Arc;

use kvs_plugin_api::PluginKind;

use super::ReloadReport;
use crate::access::AccessControl;
use crate::caller::RequestHook;
use crate::config::Config;
use crate::plugins::{Catalog, Plugin};

/// What a reload will use, found and checked before anything changes.
pub(super) struct Plan {
    pub(super) hook: Option<Arc<dyn RequestHook>>,
    pub(super) frontends: Vec<(Plugin, String)>,
    pub(super) logger: Option<Plugin>,
}

impl Plan {
    pub(super) fn check(next: &Config, catalog: &Catalog) -> Result<Plan, String> {
        let hook = AccessControl::from_config(&next.auth)
            .map_err(|e| format!("config: {e:#}"))?
            .map(|a| Arc::new(a) as Arc<dyn RequestHook>);
        let frontends = next
            .frontends
            .iter()
            .map(|name| {
                let plugin = catalog.find(PluginKind::FRONTEND, name);
                let plugin = plugin.map_err(|e| format!("frontends: {e:#}"))?;
                Ok((plugin.clone(), next.plugin_config(name)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let logger = catalog
            .find(PluginKind::LOGGER, &next.logger)
            .map_err(|e| format!("logger: {e:#}"))?;
        Ok(Plan {
            hook,
            frontends,
            logger: Some(logger.clone()),
        })
    }
}

/// Reports the settings a reload cannot apply that differ.
pub(super) fn restart_only(current: &Config, next: &Config, report: &mut ReloadReport) {
    let sections = [
        ("[admin]", differs(&current.admin, &next.admin)),
        ("[cluster]", differs(&current.cluster, &next.cluster)),
        (
            "[telemetry] (beyond log)",
            differs(
                &crate::telemetry::TelemetryConfig {
                    log: None,
                    ..current.telemetry.clone()
                },
                &crate::telemetry::TelemetryConfig {
                    log: None,
                    ..next.telemetry.clone()
                },
            ),
        ),
        (
            "[writer]",
            (
                current.max_batch,
                current.queue_capacity,
                current.queue_max_bytes,
                current.shed_delay_ms,
                current.frontend_commits,
            ) != (
                next.max_batch,
                next.queue_capacity,
                next.queue_max_bytes,
                next.shed_delay_ms,
                next.frontend_commits,
            ),
        ),
    ];
    for (section, changed) in sections {
        if changed {
            report.kept.push(format!(
                "{section}: changed, but it takes effect on restart"
            ));
        }
    }
}

/// Whether two settings differ (compared as they print: every config type has `Debug`).
pub(super) fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}
