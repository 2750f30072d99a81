//! kvs's configuration: the TOML file, `KVS_*` environment and flags, resolved into one
//! value — the types and the checks that need nothing else, so the `config` fuzz target
//! (fuzz/) can parse and resolve configs without the host around them.
//!
//! Precedence: flags > `KVS_*` environment > config file > defaults. clap applies the
//! first two (each flag has an `env`), [`RawConfig`] is the file, and [`Config::resolve`]
//! merges them. Relative paths are relative to the working directory.
//!
//! The host re-exports each type where it is used (`kvs_host::config`, `access`,
//! `admin`, `rate_limit`, `telemetry`) and `kvs-serve` the listener's ([`listener`]).
//! Plug-ins' own tables are not parsed here: each plug-in gets its table verbatim.

pub mod admin;
pub mod auth;
pub mod listener;
pub mod rate_limit;
pub mod telemetry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kvs_plugin_api::Limits;
use serde::Deserialize;

pub use admin::AdminConfig;
pub use auth::{AuthConfig, JwtConfig, RoleConfig};
pub use listener::{
    DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_HEADER_BYTES, TlsConfig,
};
pub use rate_limit::RateLimitConfig;
pub use telemetry::TelemetryConfig;

/// Default `writer.shed_delay_ms`: a write that would wait half a second is overload
/// for any logger (one batch takes a few ms on a local disk, tens over etcd), and a
/// burst of pipelined writes well short of that is served, as Redis serves it.
pub const DEFAULT_SHED_DELAY_MS: u64 = 500;
/// Default `writer.queue_max_bytes`.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The config file as written. Unknown keys are errors (`deny_unknown_fields`), so a typo
/// is reported rather than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where plug-in files are found.
    pub plugins_dir: Option<PathBuf>,
    /// Load native plug-ins that others could have changed (loose file or directory
    /// modes, another owner) with a warning instead of refusing them. For development
    /// setups only: such a file runs as kvs.
    #[serde(default)]
    pub plugins_insecure_modes: bool,
    /// Reload when the config file or the plugins directory changes.
    #[serde(default)]
    pub watch: bool,
    /// The logger's declared name.
    pub logger: Option<String>,
    /// The frontends' declared names.
    pub frontends: Option<Vec<String>>,
    /// Size limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Write path tuning.
    #[serde(default)]
    pub writer: RawWriter,
    /// Per-client rate limits (off by default).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// How long frontends get to drain on shutdown.
    pub shutdown_timeout_ms: Option<u64>,
    /// Access control (off by default).
    #[serde(default)]
    pub auth: AuthConfig,
    /// The admin listener (off unless set).
    pub admin: Option<AdminConfig>,
    /// Trace export (off unless `otlp_endpoint` is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Running on a shared log (several kvs nodes, e.g. the `etcd` logger).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Each plug-in's own table, keyed by its declared name, passed to it verbatim.
    #[serde(default)]
    pub plugins: BTreeMap<String, toml::Table>,
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Longest key in bytes (default 4096).
    pub max_key_bytes: Option<u64>,
    /// Longest value in bytes (default 1 MiB).
    pub max_value_bytes: Option<u64>,
}

/// `[cluster]`: settings that matter only with a shared logger (capability
/// `log:shared`, e.g. `etcd`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `"local"` (default): reads answer from this node's map — sequentially consistent,
    /// and a node reads its own writes. `"linearizable"`: every read first asks the log
    /// for its quorum position and waits until this node has applied it.
    #[serde(default = "default_reads")]
    pub reads: Reads,
    /// Longest a write waits to come back from the shared log and a linearizable read
    /// for its barrier, in ms (default 10000); past it the request is answered
    /// `unavailable`. Start-up catching up waits as long as the log keeps delivering,
    /// and gives up after this long with nothing delivered.
    #[serde(default = "default_cluster_timeout")]
    pub timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            reads: default_reads(),
            timeout_ms: default_cluster_timeout(),
        }
    }
}

/// How reads are answered over a shared log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reads {
    /// From the local map.
    Local,
    /// After a quorum barrier.
    Linearizable,
}

fn default_reads() -> Reads {
    Reads::Local
}
fn default_cluster_timeout() -> u64 {
    10_000
}

/// `[writer]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWriter {
    /// Most writes gathered into one logger call (default 4096).
    pub max_batch: Option<usize>,
    /// Writes that may wait for the writer before new ones get `unavailable` (default 65536).
    pub queue_capacity: Option<usize>,
    /// Bytes of keys and values that may wait for the writer (default 256 MiB).
    pub queue_max_bytes: Option<u64>,
    /// While a write queued now would wait longer than this, a connection holding more
    /// than its share of the writes in flight has further writes refused (default 500;
    /// 0: never). See `crate::overload`.
    pub shed_delay_ms: Option<u64>,
    /// Whether a frontend that commits its own writes (`frontend:commits`, and every
    /// WASM frontend) does so on its own thread (default true); false: the writer
    /// thread commits every write.
    pub frontend_commits: Option<bool>,
}

impl RawConfig {
    /// Reads and parses a config file; errors name the file and, from toml, the line.
    pub fn load(path: &Path) -> Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<RawConfig> {
        Ok(toml::from_str(text)?)
    }
}

/// What the command line and environment say (already merged by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--plugins-dir` / `KVS_PLUGINS_DIR`.
    pub plugins_dir: Option<PathBuf>,
    /// `--logger` / `KVS_LOGGER`.
    pub logger: Option<String>,
    /// `--frontend` (repeatable) / `KVS_FRONTENDS` (comma-separated).
    pub frontends: Vec<String>,
    /// `--repair-log`: sets `repair = true` in the chosen logger's table.
    pub repair_log: bool,
}

/// The resolved configuration the host runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory scanned for `.so` / `.wasm` plug-ins.
    pub plugins_dir: PathBuf,
    /// `plugins_insecure_modes`: loose modes on a native plug-in warn instead of refuse.
    pub plugins_insecure_modes: bool,
    /// `watch`: reload when the config file or the plugins directory changes.
    pub watch: bool,
    /// Name of the logger to open.
    pub logger: String,
    /// Names of the frontends to start, in order.
    pub frontends: Vec<String>,
    /// Key and value size limits.
    pub limits: Limits,
    /// Most writes per logger call.
    pub max_batch: usize,
    /// Capacity of the writer's queue.
    pub queue_capacity: usize,
    /// Bytes of keys and values the writer's queue may hold.
    pub queue_max_bytes: u64,
    /// Queueing delay past which writes are shed, in ms (0: never).
    pub shed_delay_ms: u64,
    /// Frontends that commit their own writes may (`[writer] frontend_commits`).
    pub frontend_commits: bool,
    /// Frontend drain deadline on shutdown.
    pub shutdown_timeout: std::time::Duration,
    /// Plug-in tables by plug-in name.
    pub plugin_tables: BTreeMap<String, toml::Table>,
    /// `[auth]`: who may do what.
    pub auth: AuthConfig,
    /// `[admin]`: the admin listener, if any.
    pub admin: Option<AdminConfig>,
    /// `[telemetry]`: where traces go.
    pub telemetry: TelemetryConfig,
    /// `[cluster]`: reads and timeouts over a shared log.
    pub cluster: ClusterConfig,
    /// `[rate_limit]`: per-client rate limits.
    pub rate_limit: RateLimitConfig,
}

/// The default plug-ins directory: `plugins/` beside the `kvs` executable, where
/// `cargo xtask build` stages them.
pub fn default_plugins_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("plugins")))
        .unwrap_or_else(|| PathBuf::from("plugins"))
}

impl Config {
    /// Merges overrides over the file over defaults, and checks the result.
    pub fn resolve(file: RawConfig, over: Overrides) -> Result<Config> {
        let frontends = if !over.frontends.is_empty() {
            over.frontends
        } else {
            file.frontends.unwrap_or_else(|| vec!["rest".to_string()])
        };
        let mut seen = std::collections::BTreeSet::new();
        for name in &frontends {
            if !seen.insert(name) {
                bail!("frontend {name:?} is named twice; name each frontend once");
            }
        }
        let limits = Limits {
            max_key_bytes: file.limits.max_key_bytes.unwrap_or(4096),
            max_value_bytes: file.limits.max_value_bytes.unwrap_or(1 << 20),
        };
        if limits.max_key_bytes == 0 {
            bail!("limits.max_key_bytes must be at least 1");
        }
        let max_batch = file.writer.max_batch.unwrap_or(4096);
        let queue_capacity = file.writer.queue_capacity.unwrap_or(65536);
        if max_batch == 0 || queue_capacity == 0 {
            bail!("writer.max_batch and writer.queue_capacity must be at least 1");
        }
        if let Err(why) = file.rate_limit.validate() {
            bail!(why);
        }
        let logger = over
            .logger
            .or(file.logger)
            .unwrap_or_else(|| "file".to_string());
        let mut plugin_tables = file.plugins;
        if over.repair_log {
            plugin_tables
                .entry(logger.clone())
                .or_default()
                .insert("repair".into(), toml::Value::Boolean(true));
        }
        Ok(Config {
            plugins_dir: over
                .plugins_dir
                .or(file.plugins_dir)
                .unwrap_or_else(default_plugins_dir),
            plugins_insecure_modes: file.plugins_insecure_modes,
            watch: file.watch,
            logger,
            frontends,
            limits,
            max_batch,
            queue_capacity,
            queue_max_bytes: file
                .writer
                .queue_max_bytes
                .unwrap_or(DEFAULT_QUEUE_MAX_BYTES),
            shed_delay_ms: file.writer.shed_delay_ms.unwrap_or(DEFAULT_SHED_DELAY_MS),
            frontend_commits: file.writer.frontend_commits.unwrap_or(true),
            shutdown_timeout: std::time::Duration::from_millis(
                file.shutdown_timeout_ms.unwrap_or(10_000),
            ),
            plugin_tables,
            auth: file.auth,
            admin: file.admin,
            telemetry: file.telemetry,
            cluster: file.cluster,
            rate_limit: file.rate_limit,
        })
    }

    /// The plug-in's own table serialized as TOML (empty if it has none).
    pub fn plugin_config(&self, name: &str) -> String {
        self.plugin_tables
            .get(name)
            .map(|t| toml::to_string(t).expect("a parsed TOML table serializes"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = RawConfig::parse("loggr = \"file\"").unwrap_err();
        assert!(format!("{err:#}").contains("loggr"), "{err:#}");
        let err = RawConfig::parse("[limits]\nmax_keys = 3").unwrap_err();
        assert!(format!("{err:#}").contains("max_keys"), "{err:#}");
    }

    #[test]
    fn precedence() {
        let file =
            RawConfig::parse("logger = \"a\"\nfrontends = [\"x\"]\n[plugins.a]\nk = 1").unwrap();
        let c = Config::resolve(
            file,
            Overrides {
                logger: Some("b".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.logger, "b");
        assert_eq!(c.frontends, ["x"]);
        assert_eq!(c.plugin_config("a").trim(), "k = 1");
        assert_eq!(c.plugin_config("b"), "");
        let d = Config::resolve(RawConfig::default(), Overrides::default()).unwrap();
        assert_eq!(
            (d.logger.as_str(), d.frontends.as_slice()),
            ("file", &["rest".to_string()][..])
        );
        assert_eq!(d.limits.max_key_bytes, 4096);
    }

    /// The shipped `config.toml`, and the `config` fuzz target's seed that sets every
    /// table and key kvs reads (so the fuzzer starts from configs that resolve).
    #[test]
    fn shipped_and_seed_configs_resolve() {
        for (name, text) in [
            ("config.toml", include_str!("../../../config.toml")),
            (
                "seed-every-table",
                include_str!("../../../fuzz/corpus/config/seed-every-table"),
            ),
        ] {
            let raw = RawConfig::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let config = Config::resolve(raw, Overrides::default())
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            for table in config.plugin_tables.keys() {
                assert!(!config.plugin_config(table).is_empty(), "{name}: {table}");
            }
        }
    }
}
