//! The `[plugins.file]` table.

use std::path::PathBuf;

use kvs_plugin_api::PluginError;
use serde::Deserialize;

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// `fdatasync` before acknowledging each batch.
    Always,
    /// `fdatasync` every `sync_interval_ms` in the background.
    Interval,
    /// Never sync explicitly (the OS writes back eventually; `close` syncs).
    Never,
}

/// The `[plugins.file]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The log file. Its directory is created if missing. Default `data/kvs.log`.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Sync policy. Default `always`.
    #[serde(default = "default_sync")]
    pub sync: SyncPolicy,
    /// Period of `interval` syncs. Default 1000.
    #[serde(default = "default_interval")]
    pub sync_interval_ms: u64,
    /// Truncate at the first corrupt record instead of refusing to start.
    #[serde(default)]
    pub repair: bool,
    /// Compact only once the log is at least this big. Default 64 MiB.
    #[serde(default = "default_compact_min")]
    pub compact_min_bytes: u64,
    /// Compact when the log has grown by this percentage since the last compaction (or
    /// start-up); 0 disables compaction. Default 100 (doubled), like Redis's
    /// `auto-aof-rewrite-percentage`.
    #[serde(default = "default_compact_growth")]
    pub compact_growth_percent: u64,
}

fn default_path() -> PathBuf {
    PathBuf::from("data/kvs.log")
}
fn default_sync() -> SyncPolicy {
    SyncPolicy::Always
}
fn default_interval() -> u64 {
    1000
}
fn default_compact_min() -> u64 {
    64 << 20
}
fn default_compact_growth() -> u64 {
    100
}

impl Config {
    /// Parses the plug-in's TOML table; errors name the bad key.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("[plugins.file]: {e}")))?;
        if config.sync == SyncPolicy::Interval && config.sync_interval_ms == 0 {
            return Err(PluginError::invalid_input(
                "[plugins.file]: sync_interval_ms must be at least 1",
            ));
        }
        Ok(config)
    }
}
