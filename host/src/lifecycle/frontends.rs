//! The frontends of a running kvs: starting one (and refusing it if it listens where
//! another listener of this kvs does), stopping them within one deadline, and how
//! `/plugins` shows a plug-in.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::admin::PluginStatus;
use crate::plugins::Plugin;
use crate::ports::RunningFrontend;
use crate::store::Store;

/// A frontend that started, with what it reported.
pub(super) struct Started {
    pub(super) name: String,
    pub(super) endpoints: Vec<String>,
    pub(super) handle: Box<dyn RunningFrontend>,
    /// The plug-in it runs and the table it was given: what a reload compares.
    pub(super) plugin: Plugin,
    pub(super) table: String,
}

/// A plug-in as `/plugins` lists it (health is filled in when asked).
pub(super) fn status(role: &'static str, plugin: &Plugin, endpoints: Vec<String>) -> PluginStatus {
    PluginStatus {
        sha256: plugin.hash.clone(),
        waiting: None,
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

pub(super) fn start_frontend(plugin: &Plugin, store: &Arc<Store>, table: &str) -> Result<Started> {
    let handle = plugin
        .entry
        .start_frontend(plugin, store, table)
        .map_err(|e| {
            anyhow!(
                "cannot start the {} frontend ({}): {e}",
                plugin.name,
                plugin.path.display()
            )
        })?;
    let endpoints = handle.endpoints();
    tracing::info!(
        "frontend {} serving on {}",
        plugin.name,
        if endpoints.is_empty() {
            "-".to_string()
        } else {
            endpoints.join(", ")
        }
    );
    Ok(Started {
        name: plugin.name.clone(),
        endpoints,
        handle,
        plugin: plugin.clone(),
        table: table.to_string(),
    })
}

/// Whether a frontend `name` listening on `ours` would share an address with one of
/// `others` — which the listeners' `SO_REUSEPORT` would let happen within one process,
/// splitting connections between two protocols — and what to say if so.
pub(super) fn address_clash<'n>(
    name: &str,
    ours: &[String],
    others: impl IntoIterator<Item = (&'n str, Vec<String>)>,
) -> Option<String> {
    let address = |endpoint: &str| {
        let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
        rest.trim_end_matches('/').to_string()
    };
    for (other, endpoints) in others {
        for theirs in &endpoints {
            if let Some(ours) = ours.iter().find(|e| address(e) == address(theirs)) {
                return Some(format!(
                    "frontend {name} would listen on {}, where {other} does: give each its \
                     own listen address",
                    address(ours)
                ));
            }
        }
    }
    None
}

/// The address a frontend's table asks for (`listen`, the key every kvs listener
/// uses), when it names a port: checked against the others before the frontend starts,
/// so it never takes a connection meant for them.
pub(super) fn planned_listen(table: &str) -> Vec<String> {
    let listen = toml::from_str::<toml::Table>(table)
        .ok()
        .and_then(|t| t.get("listen")?.as_str().map(String::from));
    listen
        .filter(|l| !l.ends_with(":0"))
        .map(|l| vec![l])
        .unwrap_or_default()
}

/// Stops frontends in reverse start order, within one `deadline` shared by all of them
/// (each gets what is left of it), so the logger still closes within the shutdown
/// timeout; returns what went wrong.
pub(super) fn stop_frontends(frontends: Vec<Started>, deadline: Duration) -> Vec<String> {
    let until = std::time::Instant::now() + deadline;
    let mut problems = Vec::new();
    for mut f in frontends.into_iter().rev() {
        tracing::info!("stopping frontend {}", f.name);
        let left = until.saturating_duration_since(std::time::Instant::now());
        if let Err(e) = f.handle.stop(left) {
            problems.push(format!("frontend {} did not stop cleanly: {e}", f.name));
        }
    }
    problems
}
