//! Migrate: move a running store to another logger while it serves (`kvs migrate --to
//! NAME`, `POST /migrate`).
//!
//! 1. Check: the config file (read again) names the new logger, so the next start uses
//!    it; the plug-in is in the plugins directory, local (not a shared log), can store
//!    deadlines if keys have them; it opens, and holds nothing.
//! 2. Cut: between two batches the writer begins a cut of the map at point P, skips the
//!    numbers P+1..=P+K (K keys in the cut), and from then on copies every batch it logs
//!    to the migration (the tee).
//! 3. Copy the cut into the new logger, numbered P+1..=P+K, then the copied batches with
//!    their own numbers (all above P+K), while writes go on to the old logger.
//! 4. Switch: between two batches the writer appends the batches copied since, closes
//!    the old logger and writes to the new one. Writes wait only for that.
//!
//! Anything that fails before the switch leaves the old logger serving; the new one is
//! closed, possibly holding part of the copy (the report says so). Since the config
//! already names the new logger, a marker file ([`MigrateOptions::marker`]) says from
//! before the copy until the switch that a migration is under way: a start that finds
//! it refuses to open the logger it names as the target (`bin/kvs/serve.rs`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kvs_plugin_api::PluginKind;
use kvs_plugin_api::capability::{LOG_ATOMIC_BATCH, LOG_EXPIRY, LOG_SHARED};

use super::Running;
use super::reload::{ReloadReport, short};
use crate::backup::{Batch, CutGuard};
use crate::config::Config;
use crate::plugins::{Catalog, Format, Plugin};
use crate::ports::Log;
use crate::store::WriteFeatures;
use crate::write_request::{LoggedEvent, Msg, Switch, Tee};

/// Past this many bytes of writes copied and not yet appended to the new logger, the
/// migration gives up rather than hold more memory (the new logger is slower than the
/// writes arriving).
const MAX_PENDING_BYTES: u64 = 256 << 20;

/// Pending bytes below which the copy asks for the switch: what is left is appended
/// during the pause.
const SWITCH_BELOW_BYTES: u64 = 1 << 20;

/// What a migration needs beyond the config and the plug-ins.
pub struct MigrateOptions<'a> {
    /// Written (synced) before the copy and removed after the switch: two lines, the
    /// logger moved from and the one moved to. `None`: none is kept.
    pub marker: Option<&'a Path>,
    /// Asked between steps; true gives up (kvs is stopping).
    pub stop_asked: &'a dyn Fn() -> bool,
}

impl Running {
    /// Moves the store to the logger named `to`, configured as `next` (the config read
    /// again) says, found in `catalog`. See the module documentation.
    pub fn migrate(
        &mut self,
        next: &Config,
        catalog: &Catalog,
        to: &str,
        options: &MigrateOptions<'_>,
    ) -> ReloadReport {
        let started = Instant::now();
        let (plugin, table) = match self.check_migration(next, catalog, to) {
            Ok(found) => found,
            Err(why) => return ReloadReport::refusing(format!("migrate to {to}: {why}")),
        };
        let (in_use, _) = self.live.logger.clone().expect("checked");
        let meter = (plugin.format == Format::Wasm).then(|| self.live.metrics.wasm(&plugin.name));
        let mut target = match super::open::open_logger_metered(&plugin, &table, meter) {
            Ok(log) => log,
            Err(e) => {
                return ReloadReport::refusing(format!("migrate to {to}: {e:#}; nothing changed"));
            }
        };
        if let Err(why) = empty(&mut *target) {
            let _ = target.close();
            return ReloadReport::refusing(format!("migrate to {to}: {why}; nothing changed"));
        }
        if let Some(marker) = options.marker
            && let Err(e) = write_marker(marker, &in_use.name, to)
        {
            let _ = target.close();
            return ReloadReport::refusing(format!(
                "migrate to {to}: cannot record that a migration is under way in {}: {e}; \
                 nothing changed",
                marker.display()
            ));
        }
        let stores_expiry = declares(&plugin, LOG_EXPIRY);
        let swaps = self.live.metrics.swaps.clone();
        let atomic_batch = declares(&plugin, LOG_ATOMIC_BATCH);
        match self.copy_and_switch(target, stores_expiry, atomic_batch, options.stop_asked) {
            Ok(done) => {
                self.store.set_logger_health(done.health);
                self.store.set_write_features(WriteFeatures {
                    expiry: stores_expiry,
                    atomic: true,
                    atomic_batch,
                    shared: false,
                    logger: plugin.name.clone(),
                });
                swaps.with_label_values(&["logger", "ok"]).inc();
                let mut report = ReloadReport::default();
                report.changed.push(format!(
                    "logger: migrated from {} ({}) to {} ({}): {} key(s) as of position {}, then \
                     {} later event(s) ({} during the pause); writes paused {} ms; {:.1} s in all",
                    in_use.name,
                    short(&in_use.hash),
                    plugin.name,
                    short(&plugin.hash),
                    done.keys,
                    done.point,
                    done.teed,
                    done.caught_up,
                    done.paused.as_millis(),
                    started.elapsed().as_secs_f64(),
                ));
                if let Some(marker) = options.marker
                    && let Err(e) = remove_marker(marker)
                {
                    report.kept.push(format!(
                        "cannot remove {} ({e}): remove it, or kvs will not start",
                        marker.display()
                    ));
                }
                if let Some(e) = done.old_close {
                    report.kept.push(format!(
                        "logger {}: it did not close cleanly after the switch ({e}); {} holds \
                         everything",
                        in_use.name, plugin.name
                    ));
                }
                tracing::info!(
                    from = in_use.name,
                    to = plugin.name,
                    keys = done.keys,
                    paused_ms = done.paused.as_millis() as u64,
                    "migration done"
                );
                self.live.logger = Some((plugin, table));
                if let Some(config) = &mut self.live.config {
                    config.logger = to.to_string();
                    match next.plugin_tables.get(to) {
                        Some(table) => config.plugin_tables.insert(to.to_string(), table.clone()),
                        None => config.plugin_tables.remove(to),
                    };
                }
                self.refresh_plugin_list();
                report
            }
            Err(why) => {
                swaps.with_label_values(&["logger", "failed"]).inc();
                tracing::warn!(to, "migration failed: {why}");
                let marker = options.marker.map_or(String::new(), |m| {
                    format!(
                        " ({} records this: until it is removed, kvs will not start on {to})",
                        m.display()
                    )
                });
                ReloadReport::refusing(format!(
                    "migrate to {to}: {why}; {from} keeps serving, and {to} may hold part of \
                     the copy: set logger = \"{from}\" in the config again, or empty {to}'s \
                     storage and migrate again{marker}",
                    from = in_use.name
                ))
            }
        }
    }

    fn check_migration(
        &self,
        next: &Config,
        catalog: &Catalog,
        to: &str,
    ) -> Result<(Plugin, String), String> {
        let Some((in_use, in_use_table)) = &self.live.logger else {
            return Err("this kvs was not started with a logger plug-in".into());
        };
        if self.live.shared {
            return Err(
                "the logger in use is a shared log, which is not migrated live: take a \
                 backup (kvs backup), then restore it into the other logger (kvs restore)"
                    .into(),
            );
        }
        if next.logger != to {
            return Err(format!(
                "the config (with its flags and KVS_LOGGER) names logger \"{}\": set logger = \
                 \"{to}\" and its [plugins.{to}] table in the config file first, so that the \
                 next start uses the log the store moves to; nothing changed",
                next.logger
            ));
        }
        let plugin = catalog
            .find(PluginKind::LOGGER, to)
            .map_err(|e| format!("{e:#}; nothing changed"))?
            .clone();
        if declares(&plugin, LOG_SHARED) {
            return Err(
                "it is a shared log: start the node on it empty and let it catch up, or \
                 restore a backup into it; nothing changed"
                    .into(),
            );
        }
        let table = next.plugin_config(to);
        if plugin.name == in_use.name && table == *in_use_table {
            return Err(format!(
                "the store is on {to} with that table already; nothing changed"
            ));
        }
        if !declares(&plugin, LOG_EXPIRY) && self.store.has_deadlines() {
            return Err(format!(
                "keys have a TTL and {to} cannot store deadlines (it does not declare \
                 log:expiry); nothing changed"
            ));
        }
        Ok((plugin, table))
    }

    /// Steps 2 to 4 of the module documentation.
    fn copy_and_switch(
        &self,
        mut target: Box<dyn Log>,
        stores_expiry: bool,
        atomic_batch: bool,
        stop_asked: &dyn Fn() -> bool,
    ) -> Result<Migrated, String> {
        let (batches, rest) = crossbeam_channel::unbounded::<Vec<LoggedEvent>>();
        let pending = Arc::new(AtomicU64::new(0));
        let tee = Tee {
            batches,
            pending_bytes: pending.clone(),
            max_pending_bytes: MAX_PENDING_BYTES,
        };
        let fail = |mut target: Box<dyn Log>, why: String| {
            let _ = target.close();
            Err(why)
        };
        let cut = match self.store.begin_cut(Some(tee)) {
            Ok(cut) => cut,
            Err(why) => return fail(target, why),
        };
        let (point, keys) = (cut.point(), cut.keys());
        // The cut's keys, numbered after its point, one shard at a time.
        let copied = {
            let guard = CutGuard {
                store: &self.store,
                cut,
            };
            copy_cut(&guard, &mut *target, stores_expiry, stop_asked)
        };
        if let Err(why) = copied {
            return fail(target, why);
        }
        // Then what the writer logged since, until little is left.
        let mut teed = 0u64;
        loop {
            if stop_asked() {
                return fail(target, STOPPING.into());
            }
            match rest.try_recv() {
                Ok(batch) => {
                    pending.fetch_sub(
                        batch.iter().map(LoggedEvent::weight).sum(),
                        Ordering::AcqRel,
                    );
                    if !stores_expiry
                        && batch
                            .iter()
                            .any(|e| e.kind == kvs_plugin_api::EventKind::PUT_UNTIL)
                    {
                        return fail(
                            target,
                            "a write with a TTL arrived, which the new logger cannot store".into(),
                        );
                    }
                    let events: Vec<_> = batch.iter().map(LoggedEvent::as_event).collect();
                    if let Err(e) = target.append(&events) {
                        return fail(target, format!("the new logger refused a batch: {e}"));
                    }
                    teed += events.len() as u64;
                }
                Err(crossbeam_channel::TryRecvError::Empty)
                    if pending.load(Ordering::Acquire) < SWITCH_BELOW_BYTES =>
                {
                    break;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return fail(
                        target,
                        "the new logger fell behind the writes (more than 256 MiB waited for \
                         it)"
                        .into(),
                    );
                }
            }
        }
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        let switch = Switch {
            to: target,
            stores_expiry,
            atomic_batch,
            rest,
            done,
        };
        if !self.store.send_to_writer(Msg::Switch(switch)) {
            return Err("the writer has stopped".into());
        }
        // No timeout: until the writer answers, which logger serves is not known.
        let switched = answer
            .recv()
            .map_err(|_| "the writer stopped during the switch".to_string())??;
        Ok(Migrated {
            point,
            keys,
            teed: teed + switched.caught_up,
            caught_up: switched.caught_up,
            paused: switched.paused,
            old_close: switched.old_close,
            health: switched.health,
        })
    }
}

/// What a migration did.
struct Migrated {
    point: u64,
    keys: u64,
    teed: u64,
    caught_up: u64,
    paused: std::time::Duration,
    old_close: Option<kvs_plugin_api::PluginError>,
    health: Option<crate::ports::HealthCheck>,
}

/// Appends the cut's keys to `target`, numbered from its point + 1.
fn copy_cut(
    guard: &CutGuard<'_>,
    target: &mut dyn Log,
    stores_expiry: bool,
    stop_asked: &dyn Fn() -> bool,
) -> Result<(), String> {
    let cut = &guard.cut;
    let mut next = cut.point() + 1;
    let mut batch = Batch::default();
    let mut with_ttl = false;
    for shard in 0..cut.shards() {
        if stop_asked() {
            return Err(STOPPING.into());
        }
        guard.store.read_cut(cut, shard, |r| {
            with_ttl |= r.deadline.is_some();
            batch.push(next, r.key, r.value, r.deadline);
            next += 1;
        });
        if cut.abandoned() {
            return Err(crate::backup::ABANDONED.into());
        }
        if with_ttl && !stores_expiry {
            return Err("a key has a TTL, which the new logger cannot store".into());
        }
        if batch.full() || shard + 1 == cut.shards() {
            batch.append_to(target)?;
        }
    }
    // The numbers the writer skipped for the cut's keys are exactly the ones used.
    if next - cut.point() - 1 != cut.keys() || batch.len() != 0 {
        return Err(format!(
            "the cut held {} keys but {} were copied; this is a bug",
            cut.keys(),
            next - cut.point() - 1
        ));
    }
    Ok(())
}

/// Why a migration gives up when kvs is asked to stop.
const STOPPING: &str = "kvs is stopping";

/// Writes `marker`: the logger moved from, then the one moved to, synced.
fn write_marker(marker: &Path, from: &str, to: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(marker)?;
    file.write_all(format!("{from}\n{to}\n").as_bytes())?;
    file.sync_all()?;
    sync_dir_of(marker)
}

fn remove_marker(marker: &Path) -> std::io::Result<()> {
    std::fs::remove_file(marker)?;
    sync_dir_of(marker)
}

fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

/// Whether `log` holds nothing.
fn empty(log: &mut dyn Log) -> Result<(), String> {
    let mut held = 0u64;
    log.replay(&mut |events| {
        held += events.len() as u64;
        Ok(())
    })
    .map_err(|e| format!("cannot read it back to check that it is empty: {e}"))?;
    if held > 0 {
        return Err(format!(
            "it already holds {held} event(s); a migration needs an empty logger (move its \
             storage aside, or point its table at new storage)"
        ));
    }
    Ok(())
}

fn declares(plugin: &Plugin, capability: &str) -> bool {
    plugin.capabilities.iter().any(|c| c == capability)
}
