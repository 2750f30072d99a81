//! `kvs`: the command line around the host library (see `lib.rs` for the layout).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kvs_host::config::{Config, Overrides, RawConfig};
use kvs_host::telemetry;

/// `println!` for the command's output, through `plugins::print_all`: a reader that went
/// away (`kvs reload | head -1`) is not an error, and never a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = crate::plugins::print_all(line.as_bytes());
    }};
}

mod backup;
mod check;
mod new;
mod plugins;
mod reload;
mod serve;
mod top;

use plugins::{check_plugin, list_plugins, print_all};
use serve::serve;

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
        /// The admin listener's URL (default: the config's `[admin] listen`, else
        /// http://127.0.0.1:9090).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        /// Stop after this many screens (default: until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Make a running kvs re-read its config file and plugins directory and apply what
    /// changed while it serves: limits, access rules, the log filter, frontends added,
    /// removed or replaced by a new file, the logger replaced by a new file. Prints what
    /// changed, what was kept and why, and what was refused (exit status 1). The same
    /// as SIGHUP or `POST /reload` on the admin listener; with `[auth]` on, set
    /// KVS_TOKEN to a token of a principal with a role.
    Reload {
        /// The admin listener's URL (default: the config's `[admin] listen`, else
        /// http://127.0.0.1:9090).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
    /// Save a snapshot of a running kvs's whole store to FILE, as of one point in its
    /// write order, while it serves (GET /backup on the admin listener). The file is
    /// checked before it is kept: a cut-off transfer leaves no FILE. With `[auth]` on, set
    /// KVS_TOKEN to a token whose role may read every key.
    Backup {
        /// Where to save it (written as FILE.partial, then renamed).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The admin listener's URL (default: the config's `[admin] listen`, else
        /// http://127.0.0.1:9090).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
    /// Load a snapshot (from `kvs backup`) into a logger, with kvs not running on it: the
    /// logger and its table come from the config, as `kvs` would open it; it must hold
    /// nothing. The whole file is checked first; a damaged or cut one is refused before
    /// anything is written.
    Restore {
        /// The snapshot.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The logger to load it into (default: the config's `logger`).
        #[arg(long = "logger", id = "restore_logger", value_name = "NAME")]
        logger: Option<String>,
        /// Number the restored keys this much higher than the snapshot's point + 1, so
        /// that no revision (ETag) a client saw before the restore can match a restored
        /// key (as etcdutl's --bump-revision).
        #[arg(long, value_name = "N", default_value_t = 0)]
        bump_revision: u64,
    },
    /// Move a running kvs's store to another logger while it serves: set `logger = NAME`
    /// and its table in the config file first (the next start must use it), then run
    /// this. Writes pause only for the final switch; if anything fails, the logger in use
    /// keeps serving. With `[auth]` on, KVS_TOKEN needs a role that may read and write
    /// every key.
    Migrate {
        /// The logger to move to, by the name it declares.
        #[arg(long, value_name = "NAME")]
        to: String,
        /// The admin listener's URL (default: the config's `[admin] listen`, else
        /// http://127.0.0.1:9090).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
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
    /// Start a new plug-in: write a ready crate in ./NAME (a working template with the
    /// name filled in, and the contract crate this kvs speaks, so it builds with no kvs
    /// source), then say how to build and check it.
    New {
        /// The plug-in's name, as operators will name it (`kvs --logger NAME`); also the
        /// crate's name.
        name: String,
        /// A logger or a frontend.
        #[arg(long, value_enum)]
        kind: new::Kind,
        /// A WebAssembly (.wasm) plug-in, sandboxed, instead of a native (.so) one.
        #[arg(long)]
        wasm: bool,
        /// For a WASM frontend: HTTP requests (the default) or a TCP stream.
        #[arg(long, value_enum, requires = "wasm")]
        protocol: Option<new::Protocol>,
        /// Where to create the crate's directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
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
        /// For a frontend: send these bytes to its endpoint, e.g. 'GET k\n' (escapes:
        /// backslash r, n, t, 0, x and two hex digits; two backslashes for one)...
        #[arg(long, value_name = "BYTES", requires = "expect")]
        send: Option<String>,
        /// ...and check that it answers exactly these (same escapes), within 5 s.
        #[arg(long, value_name = "BYTES", requires = "send")]
        expect: Option<String>,
    },
}

const AFTER_HELP: &str = "\
Precedence: flags > KVS_* environment > config file > defaults.
Logs go to stderr; filter them with RUST_LOG (e.g. RUST_LOG=debug).

Examples:
  kvs --logger file --frontend rest
  kvs --config /etc/kvs/config.toml
  kvs plugins list
  kvs plugins new my-log --kind logger [--wasm]
  kvs top --admin http://127.0.0.1:9090
  kvs reload                      (or: kill -HUP <pid>)
  kvs backup kvs.snap
  kvs restore kvs.snap --logger postgres
  kvs migrate --to postgres
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

/// The config file `load_config` reads, if any.
fn config_file(cli: &Cli) -> Option<PathBuf> {
    match &cli.config {
        Some(path) => Some(path.clone()),
        None if Path::new("config.toml").is_file() => Some(PathBuf::from("config.toml")),
        None => None,
    }
}

/// The admin listener to talk to: `--admin` if given, else the config's `[admin]
/// listen` (when a config file is in use), else `http://127.0.0.1:9090`.
fn admin_url(cli: &Cli, given: &Option<String>) -> Result<String> {
    if let Some(url) = given {
        return Ok(url.clone());
    }
    if config_file(cli).is_none() {
        return Ok("http://127.0.0.1:9090".into());
    }
    let config = load_config(cli)?;
    let Some(admin) = config.admin else {
        bail!(
            "the config has no [admin] table, so kvs serves no admin listener: add one \
             (e.g. listen = \"127.0.0.1:9090\") or pass --admin URL"
        );
    };
    let addr: std::net::SocketAddr = admin.listen.parse().with_context(|| {
        format!(
            "[admin] listen = {:?} is not an address; pass --admin URL",
            admin.listen
        )
    })?;
    if addr.port() == 0 {
        bail!("[admin] listen uses port 0 (a free port chosen at start): pass --admin URL");
    }
    // A listener on every address is reached on loopback.
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if admin.tls.is_some() { "https" } else { "http" };
    Ok(format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(ip, addr.port())
    ))
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
    let telemetry = telemetry::init(format, &telemetry_config.unwrap_or_default())?;
    if let Some(config) = config {
        // A reload reads the same file with the same flags and environment.
        let again = Cli {
            command: None,
            ..cli
        };
        let config_file = config_file(&again);
        return serve(
            &config,
            config_file.as_deref(),
            move || load_config(&again),
            &telemetry,
        );
    }
    if let Some(Command::Reload { admin }) = &cli.command {
        return reload::run(&admin_url(&cli, admin)?);
    }
    if let Some(Command::Backup { file, admin }) = &cli.command {
        return backup::backup(&admin_url(&cli, admin)?, file);
    }
    if let Some(Command::Migrate { to, admin }) = &cli.command {
        return backup::migrate(&admin_url(&cli, admin)?, to);
    }
    if let Some(Command::Restore {
        file,
        logger,
        bump_revision,
    }) = &cli.command
    {
        let mut config = load_config(&cli)?;
        if let Some(logger) = logger {
            config.logger = logger.clone();
        }
        return backup::restore(&config, file, *bump_revision);
    }
    if let Some(Command::Plugins {
        command:
            PluginsCommand::Check {
                file,
                table,
                send,
                expect,
            },
    }) = &cli.command
    {
        let exchange = match (send, expect) {
            (Some(send), Some(expect)) => Some(check::Exchange {
                send: check::unescape(send).map_err(|e| anyhow::anyhow!("--send {e}"))?,
                expect: check::unescape(expect).map_err(|e| anyhow::anyhow!("--expect {e}"))?,
            }),
            _ => None,
        };
        return check_plugin(file, table, exchange.as_ref());
    }
    if let Some(Command::Plugins {
        command:
            PluginsCommand::New {
                name,
                kind,
                wasm,
                protocol,
                dir,
            },
    }) = &cli.command
    {
        return new::run(name, *kind, *wasm, *protocol, dir);
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
        return top::run(&admin_url(&cli, admin)?, interval, *count);
    }
    let config = load_config(&cli)?;
    match cli.command {
        Some(Command::Plugins {
            command: PluginsCommand::List,
        }) => list_plugins(&config),
        Some(Command::Plugins {
            command: PluginsCommand::Check { .. } | PluginsCommand::New { .. },
        })
        | Some(Command::Top { .. })
        | Some(Command::Reload { .. })
        | Some(Command::Backup { .. })
        | Some(Command::Restore { .. })
        | Some(Command::Migrate { .. })
        | Some(Command::Completions { .. })
        | Some(Command::Man)
        | None => unreachable!("handled above"),
    }
}
