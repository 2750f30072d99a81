//! `kvs` serving: signals on their own thread, the open-file limit, start, systemd
//! notifications, reloads (SIGHUP, `POST /reload`) and the stop.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

use kvs_host::config::Config;
use kvs_host::lifecycle::{Ask, ReloadReport};
use kvs_host::plugins::Catalog;
use kvs_host::telemetry::Telemetry;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

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

pub(crate) fn serve(
    config: &Config,
    config_file: Option<&Path>,
    reload_config: impl Fn() -> Result<Config> + Send + Sync + 'static,
    telemetry: &Telemetry,
) -> Result<()> {
    // Register before starting so a signal during replay is not lost; it is acted on
    // once start-up completes.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let (control, requests) = std::sync::mpsc::sync_channel(16);
    watch_signals(signals, config.shutdown_timeout, control.clone())?;
    raise_descriptor_limit();
    let marker = migration_marker(config_file);
    check_migration_marker(config, marker.as_deref())?;
    let catalog = Catalog::scan_with(&config.plugins_dir, config.plugins_insecure_modes)?;
    for refused in &catalog.refused {
        tracing::warn!("refused {}: {}", refused.path.display(), refused.reason);
    }
    let mut running = kvs_host::lifecycle::start(config, &catalog)?;
    drop(catalog);
    tracing::info!(
        keys = running.store.len(),
        "kvs ready (logger {}, frontends {})",
        config.logger,
        config.frontends.join(", ")
    );
    warn_if_open(config, &running);
    let control_for_watch = control.clone();
    running.set_reload(std::sync::Arc::new(move |ask| {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let asked = match ask {
            Ask::Reload => Control::Reload {
                reply: Some(reply),
                hangup: false,
            },
            Ask::Migrate { to } => Control::Migrate { to, reply },
        };
        if control.send(asked).is_err() {
            return ReloadReport::refusing("kvs is stopping");
        }
        answer
            .recv()
            .unwrap_or_else(|_| ReloadReport::refusing("kvs stopped during the reload"))
    }));
    notify_ready(&running.store);
    // Kept for as long as kvs serves: dropping it stops the watching.
    let _watching = if config.watch {
        Some(watch(&config.plugins_dir, config_file, control_for_watch)?)
    } else {
        None
    };
    // One thread applies reloads, migrations and the stop, in the order they were asked
    // for.
    loop {
        let (reply, hangup) = match requests.recv() {
            Ok(Control::Reload { reply, hangup }) => (reply, hangup),
            Ok(Control::Migrate { to, reply }) => {
                let report = if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
                    ReloadReport::refusing("kvs is stopping")
                } else {
                    migrate(&mut running, &reload_config, &to, marker.clone())
                };
                report.log();
                let _ = reply.send(report);
                continue;
            }
            Ok(Control::Stop) | Err(_) => break,
        };
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(reply) = reply {
                let _ = reply.send(ReloadReport::refusing("kvs is stopping"));
            }
            break;
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let mut report = reload(&mut running, &reload_config, telemetry).one_line_each();
        // A refused config changes nothing, TLS material included (an operator's SIGHUP
        // has reached the listeners anyway: they say so in the log).
        let refused_whole = report.changed.is_empty()
            && report
                .refused
                .iter()
                .any(|r| r.ends_with("nothing changed"));
        if !refused_whole {
            if !hangup {
                // TLS listeners (kvs-serve's, in every plug-in that links it) re-read
                // their certificates on SIGHUP: send one, which the signal thread skips.
                TLS_HANGUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // SAFETY: raise only sends this process a signal whose handlers are
                // installed.
                unsafe { libc::raise(SIGHUP) };
            }
            report
                .kept
                .push("tls: listeners re-read their certificates and keys".into());
        }
        running.count_reload(&report);
        report.log();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        if let Some(reply) = reply {
            let _ = reply.send(report);
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    running.stop()?;
    Ok(())
}

/// How long the watched files must be quiet before a reload: a `cp` of a large plug-in
/// or an editor's save is several events.
const WATCH_QUIET: Duration = Duration::from_millis(500);

/// `watch = true`: reloads when the plugins directory or the config file changes,
/// once they have been quiet for [`WATCH_QUIET`].
fn watch(
    plugins_dir: &Path,
    config_file: Option<&Path>,
    control: std::sync::mpsc::SyncSender<Control>,
) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let shown = plugins_dir.display().to_string();
    let (events, changes) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = events.send(event.paths);
        }
    })
    .context("cannot watch for changes (watch = true)")?;
    watcher
        .watch(plugins_dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", plugins_dir.display()))?;
    // The config file's directory: editors and config tools replace the file by renaming
    // another over it, which a watch on the file itself would miss.
    let config_file = config_file.map(|f| std::path::absolute(f).unwrap_or(f.to_path_buf()));
    if let Some(file) = &config_file {
        let dir = file.parent().unwrap_or(Path::new("."));
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    let plugins_dir = std::path::absolute(plugins_dir).unwrap_or(plugins_dir.to_path_buf());
    let relevant = move |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .any(|p| p.starts_with(&plugins_dir) || config_file.as_deref().is_some_and(|f| p == f))
    };
    std::thread::Builder::new()
        .name("kvs-watch".into())
        .spawn(move || {
            while let Ok(paths) = changes.recv() {
                if !relevant(&paths) {
                    continue;
                }
                // Wait for quiet: every further relevant event restarts the wait (others
                // in the config file's directory do not).
                let mut quiet_from = std::time::Instant::now();
                loop {
                    let left = WATCH_QUIET.saturating_sub(quiet_from.elapsed());
                    match changes.recv_timeout(left) {
                        Ok(more) if relevant(&more) => quiet_from = std::time::Instant::now(),
                        Ok(_) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                tracing::info!("watch: the config or the plugins directory changed; reloading");
                let asked = Control::Reload {
                    reply: None,
                    hangup: false,
                };
                if control.send(asked).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the watch thread")?;
    tracing::info!("watching {shown} and the config file for changes (watch = true)");
    Ok(watcher)
}

/// SIGHUPs a reload sent itself so that TLS listeners re-read their certificates (as
/// on an operator's SIGHUP), which the signal thread must not take for a new reload.
static TLS_HANGUPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Set by the first SIGTERM or SIGINT: reloads still queued are not started.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the control loop is asked to do.
enum Control {
    /// Reload; answer the report if someone waits for it. `hangup`: asked by SIGHUP,
    /// which the TLS listeners have seen too.
    Reload {
        reply: Option<std::sync::mpsc::SyncSender<ReloadReport>>,
        hangup: bool,
    },
    /// Move the store to the logger `to` (`kvs migrate`); answer the report.
    Migrate {
        to: String,
        reply: std::sync::mpsc::SyncSender<ReloadReport>,
    },
    /// Stop serving.
    Stop,
}

/// The config file and the plugins directory read again, or the report refusing for
/// why not (what reloads and migrations start from).
fn read_again(
    reload_config: &dyn Fn() -> Result<Config>,
) -> std::result::Result<(Config, Catalog), ReloadReport> {
    let next = reload_config()
        .map_err(|e| ReloadReport::refusing(format!("config: {e:#}; nothing changed")))?;
    let catalog = Catalog::scan_with(&next.plugins_dir, next.plugins_insecure_modes)
        .map_err(|e| ReloadReport::refusing(format!("plugins: {e:#}; nothing changed")))?;
    Ok((next, catalog))
}

/// Reads the config file and the plugins directory again and migrates to `to`.
fn migrate(
    running: &mut kvs_host::lifecycle::Running,
    reload_config: &dyn Fn() -> Result<Config>,
    to: &str,
    marker: Option<std::path::PathBuf>,
) -> ReloadReport {
    let (next, catalog) = match read_again(reload_config) {
        Ok(both) => both,
        Err(refused) => return refused,
    };
    let options = kvs_host::lifecycle::MigrateOptions {
        marker: marker.as_deref(),
        stop_asked: &|| STOPPING.load(std::sync::atomic::Ordering::SeqCst),
    };
    running.migrate(&next, &catalog, to, &options)
}

/// Where a migration records that it is under way (`lifecycle::migrate`): systemd's
/// state directory (`$STATE_DIRECTORY`, from `StateDirectory=`) if set, else the config
/// file's directory. `None` without either: kvs was not started from a config file, so
/// no migration can be asked of it (the config must name the new logger).
pub(crate) fn migration_marker(config_file: Option<&Path>) -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("STATE_DIRECTORY") {
        Some(dirs) => std::env::split_paths(&dirs).next()?,
        None => match config_file?.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        },
    };
    Some(dir.join("kvs.migrating"))
}

/// Refuses to start on the logger a migration that did not finish was moving to (its
/// storage may hold part of the copy); with the logger it moved from, starts and
/// removes the marker.
fn check_migration_marker(config: &Config, marker: Option<&Path>) -> Result<()> {
    let Some(marker) = marker else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(marker) else {
        return Ok(());
    };
    let mut lines = text.lines();
    let (from, to) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    if config.logger == to {
        anyhow::bail!(
            "a migration from logger {from:?} to {to:?} did not finish ({} says so), and the \
             config names {to:?}, whose storage may hold only part of the store. Set logger = \
             {from:?} again (its storage has everything up to the migration), or if you know \
             the migration finished, remove {}",
            marker.display(),
            marker.display()
        );
    }
    tracing::warn!(
        "a migration from {from:?} to {to:?} did not finish; starting on {:?} and removing {}",
        config.logger,
        marker.display()
    );
    std::fs::remove_file(marker).with_context(|| format!("cannot remove {}", marker.display()))?;
    Ok(())
}

/// Reads the config file and the plugins directory again and applies them.
fn reload(
    running: &mut kvs_host::lifecycle::Running,
    reload_config: &dyn Fn() -> Result<Config>,
    telemetry: &Telemetry,
) -> ReloadReport {
    let (next, catalog) = match read_again(reload_config) {
        Ok(both) => both,
        Err(refused) => return refused,
    };
    let mut report = running.reload(&next, &catalog);
    // Files the scan refused, and why: a broken new build of a plug-in in use is one,
    // and is why the reload changed nothing.
    for refused in &catalog.refused {
        tracing::warn!("refused {}: {}", refused.path.display(), refused.reason);
        report.kept.push(format!(
            "file {}: not a usable plug-in: {}",
            refused.path.display(),
            refused.reason
        ));
    }
    if report
        .refused
        .first()
        .is_some_and(|r| r.ends_with("nothing changed"))
    {
        return report;
    }
    match telemetry.set_log_filter(next.telemetry.log.as_deref()) {
        Ok((true, line)) => report.changed.push(line),
        Ok((false, line)) => report.kept.push(line),
        Err(why) => report.refused.push(why),
    }
    report
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

/// Handles signals on a thread of their own: SIGHUP asks for a reload (which includes
/// TLS listeners re-reading their certificates: kvs-serve's own handler); the first
/// SIGTERM or SIGINT asks to stop, and from then on kvs has `shutdown_timeout` to exit —
/// whatever start-up, replay, a frontend's drain or a plug-in's call is doing — or it
/// exits with status 1 (acknowledged writes are durable by then, as after kill -9). A
/// second signal exits at once.
fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    shutdown_timeout: std::time::Duration,
    control: std::sync::mpsc::SyncSender<Control>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("kvs-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    // Pending signals merge: one delivery may stand for several sent.
                    let ours = TLS_HANGUPS.swap(0, std::sync::atomic::Ordering::SeqCst) > 0;
                    if ours {
                        continue; // sent by a reload, for the TLS listeners only
                    }
                    tracing::info!("received SIGHUP: reloading");
                    // A full queue already holds a reload that will see the same files.
                    let _ = control.try_send(Control::Reload {
                        reply: None,
                        hangup: true,
                    });
                    continue;
                }
                if stopping {
                    exit_now(format!("received signal {signal} again: exiting now"));
                }
                stopping = true;
                tracing::info!("received signal {signal}; shutting down");
                STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
                // A full queue holds reloads, which the control loop skips once it sees
                // STOPPING; the message wakes it if it is waiting.
                let _ = control.try_send(Control::Stop);
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
    Ok(())
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
