//! `kvs`: the command line around the host library (see `lib.rs` for the layout).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kvs_host::config::{Config, Overrides, RawConfig};
use kvs_host::plugins::Catalog;
use kvs_host::telemetry;
use kvs_plugin_api::{API_MAJOR, API_MINOR};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// A durable key-value store whose frontends and transaction loggers are plug-ins.
///
/// kvs loads the logger and frontends you name from its plugins directory, replays the
/// logger's transaction log into memory, then serves clients through the frontends until
/// SIGTERM or SIGINT, when it drains them, flushes the log and exits 0.
#[derive(Parser, Debug)]
#[command(name = "kvs", version, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// Config file (TOML). Without it, ./config.toml is used if present, else built-in
    /// defaults (logger "file", frontend "rest"). Give it before a subcommand:
    /// `kvs --config FILE plugins list`.
    #[arg(long, short = 'c', env = "KVS_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Directory holding plug-in files (.so, .wasm). Default: `plugins/` beside the kvs
    /// executable, where `cargo xtask build` puts them.
    #[arg(long, env = "KVS_PLUGINS_DIR", value_name = "DIR", global = true)]
    plugins_dir: Option<PathBuf>,

    /// Transaction logger to use, by the name it declares (see `kvs plugins list`).
    #[arg(long, env = "KVS_LOGGER", value_name = "NAME")]
    logger: Option<String>,

    /// Frontend to start, by the name it declares. Repeat for several; replaces the
    /// config file's `frontends`. KVS_FRONTENDS takes a comma-separated list.
    #[arg(
        long = "frontend",
        env = "KVS_FRONTENDS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    frontends: Vec<String>,

    /// Let the logger repair a damaged log: passes `repair = true` to its config table.
    /// The file logger then truncates at the first corrupt record (reporting what it
    /// dropped) instead of refusing to start. Back the log up first.
    #[arg(long)]
    repair_log: bool,

    /// How log lines look: `text` for people, `json` for one JSON object per line (for
    /// log shippers). Plug-ins' messages come through kvs in the same format.
    #[arg(
        long,
        env = "KVS_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch a running kvs: requests per second, errors and latency percentiles per
    /// frontend and operation, the writer, the logger and WASM plug-ins, refreshed every
    /// interval. Reads the admin listener's /metrics (`[admin] listen`); with `[auth]`
    /// on, set KVS_TOKEN to a token of a principal with a role.
    Top {
        /// The admin listener's URL.
        #[arg(long, default_value = "http://127.0.0.1:9090", value_name = "URL")]
        admin: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        /// Stop after this many screens (default: until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Inspect the plug-ins kvs can load.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Print a shell completion script, e.g. `kvs completions bash >
    /// /etc/bash_completion.d/kvs` (zsh: a `_kvs` file on `$fpath`; fish:
    /// `~/.config/fish/completions/kvs.fish`).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `kvs man | man -l -`.
    Man,
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// List the plug-ins found in the plugins directory, and the files refused and why.
    List,
    /// Load one .so or .wasm on its own and run the contract's behavioural checks on it,
    /// printing PASS or FAIL per check. Exits 1 if any check fails.
    Check {
        /// The plug-in file.
        file: PathBuf,
        /// Its config table as TOML, e.g. 'path = "{tmp}/log"'; `{tmp}` becomes a fresh
        /// temporary directory.
        #[arg(
            long = "config",
            id = "table",
            value_name = "TABLE",
            default_value = ""
        )]
        table: String,
    },
}

const AFTER_HELP: &str = "\
Precedence: flags > KVS_* environment > config file > defaults.
Logs go to stderr; filter them with RUST_LOG (e.g. RUST_LOG=debug).

Examples:
  kvs --logger file --frontend rest
  kvs --config /etc/kvs/config.toml
  kvs plugins list
  kvs top --admin http://127.0.0.1:9090
  kvs completions bash > /etc/bash_completion.d/kvs
  kvs --log-format json
  kvs plugins check target/debug/plugins/libkvs_plugin_file.so --config 'path = \"{tmp}/log\"'";

/// With the `mimalloc` feature, the host's allocator. Plug-ins keep their own: what
/// crosses the boundary (abi_stable's `RVec`, boxes) is freed by whoever allocated it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Backtrace capture makes every WASM call ~2.5x slower (RUST_BACKTRACE=1 is common on
    // developer machines); kvs reports errors, not library backtraces.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kvs: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let raw = match &cli.config {
        Some(path) => RawConfig::load(path)?,
        None if Path::new("config.toml").is_file() => RawConfig::load(Path::new("config.toml"))?,
        None => RawConfig::default(),
    };
    Config::resolve(
        raw,
        Overrides {
            plugins_dir: cli.plugins_dir.clone(),
            logger: cli.logger.clone(),
            frontends: cli.frontends.clone(),
            repair_log: cli.repair_log,
        },
    )
}

fn run(cli: Cli) -> Result<()> {
    let format = match cli.log_format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    };
    // Generated from the CLI definition; they need neither config nor logging.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "kvs", &mut script);
            return print_all(&script);
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("cannot render the manual page")?;
            return print_all(&page);
        }
        _ => {}
    }
    let serving = cli.command.is_none();
    // The config is read before logging starts, since it says where traces go; its
    // errors are printed by `main` all the same.
    let config = if serving {
        Some(load_config(&cli)?)
    } else {
        None
    };
    let telemetry_config = config.as_ref().map(|c| c.telemetry.clone());
    let _telemetry = telemetry::init(format, &telemetry_config.unwrap_or_default())?;
    if let Some(config) = config {
        return serve(&config);
    }
    if let Some(Command::Plugins {
        command: PluginsCommand::Check { file, table },
    }) = &cli.command
    {
        return check_plugin(file, table);
    }
    if let Some(Command::Top {
        admin,
        interval,
        count,
    }) = &cli.command
    {
        let interval = std::time::Duration::try_from_secs_f64(*interval)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--interval must be a positive number of seconds")?;
        return kvs_host::top::run(admin, interval, *count);
    }
    let config = load_config(&cli)?;
    match cli.command {
        Some(Command::Plugins {
            command: PluginsCommand::List,
        }) => list_plugins(&config),
        Some(Command::Plugins {
            command: PluginsCommand::Check { .. },
        })
        | Some(Command::Top { .. })
        | Some(Command::Completions { .. })
        | Some(Command::Man)
        | None => unreachable!("handled above"),
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn check_plugin(file: &Path, table: &str) -> Result<()> {
    // "checking" first, on its own: the checks take a while.
    print_all(format!("checking {}\n", file.display()).as_bytes())?;
    let outcomes = kvs_host::check::run(file, table);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let mut out = String::new();
    for o in &outcomes {
        out += &match &o.result {
            Ok(()) if o.skipped => format!("  SKIP  {}\n", o.name),
            Ok(()) => format!("  PASS  {}\n", o.name),
            Err(why) => format!("  FAIL  {}: {why}\n", o.name),
        };
    }
    if failed == 0 {
        out += &format!("all {} checks passed\n", outcomes.len());
    }
    print_all(out.as_bytes())?;
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", outcomes.len());
    }
    Ok(())
}

/// Raises the open-file soft limit to the hard limit: every connection holds a
/// descriptor, and the usual soft limit (1024) would let a few hundred idle clients
/// stop every listener from accepting. Logged; a failure is only a warning.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        tracing::info!(open_files = limit.rlim_cur, "open-file limit");
        return;
    }
    let was = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!(
            open_files = limit.rlim_cur,
            "open-file limit raised from {was} to the hard limit"
        );
    } else {
        tracing::warn!(
            "cannot raise the open-file limit from {was}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn serve(config: &Config) -> Result<()> {
    // Register before starting so a signal during replay is not lost; it is acted on
    // once start-up completes.
    // SIGHUP is taken too, so it never kills kvs: each TLS listener reloads its
    // certificate on it (kvs-serve registers its own handler, chained after this one).
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let stop_asked = watch_signals(signals, config.shutdown_timeout)?;
    raise_descriptor_limit();
    let catalog = Catalog::scan_with(&config.plugins_dir, config.plugins_insecure_modes)?;
    for refused in &catalog.refused {
        tracing::warn!("refused {}: {}", refused.path.display(), refused.reason);
    }
    let running = kvs_host::lifecycle::start(config, &catalog)?;
    tracing::info!(
        keys = running.store.len(),
        "kvs ready (logger {}, frontends {})",
        config.logger,
        config.frontends.join(", ")
    );
    warn_if_open(config, &running);
    notify_ready(&running.store);
    let _ = stop_asked.recv();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    running.stop()?;
    Ok(())
}

/// systemd's notify protocol (`Type=notify`; a no-op unless `NOTIFY_SOCKET` is set):
/// READY=1 now that replay is done and the frontends serve, and, when the unit sets
/// `WatchdogSec`, WATCHDOG=1 at half that interval for as long as the store answers (a
/// deadlocked map stops the petting, and systemd restarts kvs).
fn notify_ready(store: &std::sync::Arc<kvs_host::store::Store>) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd kvs is ready (NOTIFY_SOCKET): {e}");
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let store = std::sync::Arc::downgrade(store);
    let spawned = std::thread::Builder::new()
        .name("kvs-watchdog".into())
        .spawn(move || {
            while let Some(store) = store.upgrade() {
                // Touches every shard of the map: a lock held forever stops the pets.
                let _ = store.len();
                drop(store);
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                // At least 50 ms: a tiny WatchdogSec must not turn this into a spin.
                std::thread::sleep((interval / 2).max(std::time::Duration::from_millis(50)));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the systemd watchdog thread: {e}");
    }
}

/// Handles signals on a thread of their own: SIGHUP is logged (each TLS listener
/// reloads on it), the first SIGTERM or SIGINT is passed on through the returned
/// channel, and from then on kvs has `shutdown_timeout` to exit — whatever start-up,
/// replay, a frontend's drain or a plug-in's call is doing — or it exits with status 1
/// (acknowledged writes are durable by then, as after kill -9). A second signal exits
/// at once.
fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    shutdown_timeout: std::time::Duration,
) -> Result<std::sync::mpsc::Receiver<()>> {
    let (stop, stop_asked) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("kvs-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    tracing::info!("received SIGHUP: TLS listeners re-read their certificates");
                    continue;
                }
                if stopping {
                    exit_now(format!("received signal {signal} again: exiting now"));
                }
                stopping = true;
                tracing::info!("received signal {signal}; shutting down");
                let _ = stop.try_send(());
                std::thread::spawn(move || {
                    // A little over the deadline: a stop that uses its whole drain
                    // deadline still gets to close the logger.
                    std::thread::sleep(shutdown_timeout + std::time::Duration::from_millis(500));
                    exit_now(format!(
                        "kvs did not stop within shutdown_timeout_ms ({} ms): exiting now; \
                         writes not yet acknowledged are lost, acknowledged ones are durable",
                        shutdown_timeout.as_millis()
                    ));
                });
            }
        })
        .context("cannot start the signal thread")?;
    Ok(stop_asked)
}

/// Says why and exits with status 1. The message is written from another thread and
/// given 100 ms: a stuck stderr (a full pipe nobody reads) must not keep kvs alive.
fn exit_now(why: String) -> ! {
    std::thread::spawn(move || tracing::error!("{why}"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::process::exit(1);
}

/// Warns when a frontend listens beyond loopback while access control is off: anyone
/// who can reach it may read and overwrite every key.
fn warn_if_open(config: &Config, running: &kvs_host::lifecycle::Running) {
    if config.auth.enabled {
        return;
    }
    for (name, endpoints) in running.endpoints() {
        for endpoint in endpoints {
            if kvs_host::access::reachable_beyond_loopback(&endpoint) {
                tracing::warn!(
                    "frontend {name} listens on {endpoint} with access control off: anyone who \
                     can reach it may read and write every key; set [auth] enabled = true \
                     (see README, \"Securing kvs\")"
                );
            }
        }
    }
}

fn list_plugins(config: &Config) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let catalog = Catalog::scan_with(&config.plugins_dir, config.plugins_insecure_modes)?;
    writeln!(
        out,
        "plugins in {} (this kvs speaks plugin-api {API_MAJOR}.{API_MINOR})",
        catalog.dir.display()
    )?;
    if catalog.plugins.is_empty() {
        writeln!(out, "  (no usable plug-ins)")?;
    } else {
        let rows: Vec<[String; 6]> = catalog
            .plugins
            .iter()
            .map(|p| {
                [
                    p.kind.to_string(),
                    p.name.clone(),
                    p.format.to_string(),
                    p.version.clone(),
                    format!("{}.{}", p.api.0, p.api.1),
                    p.path.display().to_string(),
                ]
            })
            .collect();
        let header = ["KIND", "NAME", "FORMAT", "VERSION", "API", "PATH"].map(String::from);
        let mut widths = [0usize; 6];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(out, "  {}", cells.join("  ").trim_end())?;
        }
        for p in &catalog.plugins {
            writeln!(out, "  {} {}: {}", p.kind, p.name, p.description)?;
        }
    }
    for ((kind, name), paths) in catalog.duplicates() {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        writeln!(
            out,
            "duplicate: {} files declare the {kind} plug-in {name:?}: {}",
            paths.len(),
            paths.join(" and ")
        )?;
    }
    if !catalog.refused.is_empty() {
        writeln!(out, "refused:")?;
        for r in &catalog.refused {
            writeln!(out, "  {}: {}", r.path.display(), r.reason)?;
        }
    }
    print_all(out.as_bytes())
}
