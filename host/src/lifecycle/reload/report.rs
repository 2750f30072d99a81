//! What a reload answers: the report, line by line, and how the admin listener reaches
//! the reload.

use std::sync::{Arc, OnceLock};

use serde::Serialize;

/// What a reload did, line by line: applied, left as it was (and why), refused (and why).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadReport {
    /// What changed.
    pub changed: Vec<String>,
    /// What stayed as it was, and why (unchanged, or needs a restart).
    pub kept: Vec<String>,
    /// What was asked for but not done, and why; what it would have replaced serves on.
    pub refused: Vec<String>,
}

impl ReloadReport {
    /// A report of one refusal that changed nothing.
    pub fn refusing(why: impl Into<String>) -> ReloadReport {
        ReloadReport {
            refused: vec![why.into()],
            ..ReloadReport::default()
        }
    }

    /// `applied`, `partial` or `refused`: the metric's outcome label.
    pub fn outcome(&self) -> &'static str {
        match (self.refused.is_empty(), self.changed.is_empty()) {
            (true, _) => "applied",
            (false, false) => "partial",
            (false, true) => "refused",
        }
    }

    /// Makes every item one line (a plug-in's error may span several: TOML's do), so
    /// `kvs reload` prints one line per item.
    pub fn one_line_each(mut self) -> ReloadReport {
        for lines in [&mut self.changed, &mut self.kept, &mut self.refused] {
            for line in lines.iter_mut() {
                if line.contains('\n') {
                    *line = line.split_whitespace().collect::<Vec<_>>().join(" ");
                }
            }
        }
        self
    }

    /// Logs every line: changes and refusals at info and warn, the rest at debug.
    pub fn log(&self) {
        for line in &self.changed {
            tracing::info!("reload: changed: {line}");
        }
        for line in &self.kept {
            tracing::debug!("reload: kept: {line}");
        }
        for line in &self.refused {
            tracing::warn!("reload: refused: {line}");
        }
    }
}

/// What the admin listener asks of the control loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A whole reload (config file and plugins directory read again).
    Reload,
    /// A migration of the store to the logger named `to` (`Running::migrate`).
    Migrate {
        /// The logger's name.
        to: String,
    },
}

/// Runs what was asked (config file and plugins directory read again) and reports.
pub type ReloadFn = Arc<dyn Fn(Ask) -> ReloadReport + Send + Sync>;

/// Where the admin listener finds the reload once kvs has started.
pub type ReloadSlot = Arc<OnceLock<ReloadFn>>;
