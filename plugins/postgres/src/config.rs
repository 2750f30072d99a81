//! The `[plugins.postgres]` table.

use std::time::Duration;

use kvs_plugin_api::PluginError;
use serde::Deserialize;

/// Environment variables the password may come from, in order.
pub const PASSWORD_ENV: [&str; 2] = ["KVS_POSTGRES_PASSWORD", "PGPASSWORD"];

/// The plug-in's settings. Durations are in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connection URL *without* a password, e.g. `postgres://kvs@127.0.0.1:5432/kvs`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Table holding the events. Created if missing. Default `transactions`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Connections in the pool. Default 4.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Server-side statement timeout. Default 5000.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// Connection timeout. Default 3000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// First retry delay; doubles per attempt, with jitter. Default 50.
    #[serde(default = "default_retry_base")]
    pub retry_base_ms: u64,
    /// Longest retry delay. Default 1000.
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    /// How long one append keeps retrying before failing `unavailable`. Default 2000.
    #[serde(default = "default_retry_budget")]
    pub retry_budget_ms: u64,
    /// Consecutive failed appends that open the circuit breaker. Default 1.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How often an open breaker probes the database. Default 500.
    #[serde(default = "default_breaker_probe")]
    pub breaker_probe_ms: u64,
    /// How often superseded rows are deleted; 0 disables. Default 30000.
    #[serde(default = "default_compact_interval")]
    pub compact_interval_ms: u64,
    /// Rows deleted per compaction statement, so no statement runs long. Default 10000.
    #[serde(default = "default_compact_batch")]
    pub compact_batch: i64,
    /// Set by `kvs --repair-log`, which every logger must accept. Rows are written
    /// whole in transactions, so there is no torn tail to cut: it changes nothing here.
    #[serde(default)]
    pub repair: bool,
    /// Never accepted: present only to refuse it with a useful message.
    #[serde(default)]
    password: Option<toml::Value>,
}

fn default_url() -> String {
    "postgres://kvs@127.0.0.1:5432/kvs".into()
}
fn default_table() -> String {
    "transactions".into()
}
fn default_pool() -> usize {
    4
}
fn default_statement_timeout() -> u64 {
    5000
}
fn default_connect_timeout() -> u64 {
    3000
}
fn default_retry_base() -> u64 {
    50
}
fn default_retry_max() -> u64 {
    1000
}
fn default_retry_budget() -> u64 {
    2000
}
fn default_breaker_failures() -> u32 {
    1
}
fn default_breaker_probe() -> u64 {
    500
}
fn default_compact_interval() -> u64 {
    30_000
}
fn default_compact_batch() -> i64 {
    10_000
}

const NO_PASSWORD_IN_FILE: &str = "[plugins.postgres]: a password in the config file is refused; \
     leave it out of `url` and set KVS_POSTGRES_PASSWORD (or PGPASSWORD) in the environment";

impl Config {
    /// Parses and checks the table; errors name the bad key.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let c: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("[plugins.postgres]: {e}")))?;
        if c.password.is_some() {
            return Err(PluginError::invalid_input(NO_PASSWORD_IN_FILE));
        }
        let valid_table = !c.table.is_empty()
            && c.table.len() <= 63
            && c.table
                .starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '_')
            && c.table
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !valid_table {
            return Err(PluginError::invalid_input(format!(
                "[plugins.postgres]: table {:?} must be 1-63 of a-z, 0-9, _ (starting with a letter or _)",
                c.table
            )));
        }
        if c.pool_size == 0 || c.breaker_failures == 0 || c.compact_batch <= 0 {
            return Err(PluginError::invalid_input(
                "[plugins.postgres]: pool_size, breaker_failures and compact_batch must be at least 1",
            ));
        }
        Ok(c)
    }

    /// The driver's connection settings: the URL, the password from the environment,
    /// timeouts. A password inside the URL is refused.
    pub fn connection(&self) -> Result<tokio_postgres::Config, PluginError> {
        let mut pg: tokio_postgres::Config = self.url.parse().map_err(|e| {
            PluginError::invalid_input(format!("[plugins.postgres] url {:?}: {e}", self.url))
        })?;
        if pg.get_password().is_some() {
            return Err(PluginError::invalid_input(NO_PASSWORD_IN_FILE));
        }
        if let Some(password) = PASSWORD_ENV.iter().find_map(|v| std::env::var(v).ok()) {
            pg.password(password);
        }
        pg.connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        pg.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout_ms
        ));
        pg.application_name("kvs");
        Ok(pg)
    }

    /// `user@host:port/dbname`, for messages (never the password).
    pub fn describe(pg: &tokio_postgres::Config) -> String {
        let host = pg
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            pg.get_user().unwrap_or("?"),
            pg.get_dbname().unwrap_or("?")
        )
    }
}
