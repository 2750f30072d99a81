//! `kvs` serving: signals on their own thread, the open-file limit, start, systemd//! notifications, and the stop.

use anyhow::{Context, Result};
use kvs_host::config::Config;
use kvs_host::plugins::Catalog;
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

pub(crate) fn serve(config: &Config) -> Result<()> {
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
