//! `kvs backup`, `kvs restore` and `kvs migrate`: the store copied out of a running kvs,
//! loaded into a logger, or moved to another logger while it serves (README, "Backups
//! and moving between loggers").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kvs_host::config::Config;
use kvs_host::plugins::Catalog;
use kvs_plugin_api::PluginKind;
use kvs_plugin_api::capability::{LOG_EXPIRY, LOG_SHARED};

/// Refuses a backup target that is not a regular file (or absent): the snapshot is
/// renamed over FILE, which would replace a device such as `/dev/null`, a directory's
/// place or a symbolic link rather than write through it.
fn check_target(file: &Path) -> Result<()> {
    match std::fs::symlink_metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", file.display())),
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link: give the path of the file itself (a backup replaces FILE \
             whole, and would replace the link rather than write through it)",
            file.display()
        ),
        Ok(m) if !m.is_file() => bail!(
            "{} exists and is not a regular file: a backup is written to FILE.partial and \
             renamed over FILE; give a new file name",
            file.display()
        ),
        Ok(_) => Ok(()),
    }
}

/// `kvs backup FILE`: saves `GET {admin}/backup` to `file` — first as `FILE.partial`,
/// synced and checked whole, then renamed — so `file` is either a complete snapshot or
/// not there.
pub fn backup(admin: &str, file: &Path) -> Result<()> {
    check_target(file)?;
    let started = Instant::now();
    let url = format!("{}/backup", admin.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(&url);
    // With `[auth]` on, a backup needs a role that may read every key.
    if let Ok(token) = std::env::var("KVS_TOKEN") {
        request = request.header("authorization", format!("Bearer {}", token.trim()));
    }
    let mut response = request
        .call()
        .with_context(|| format!("cannot reach {url}: is kvs running with [admin] listen set?"))?;
    let status = response.status();
    if status != 200 {
        let body = response.body_mut().read_to_string().unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    let partial = partial_path(file);
    let written = (|| -> Result<u64> {
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let bytes = std::io::copy(&mut body, &mut out)
            .with_context(|| format!("the backup stream from {url} broke off"))?;
        out.flush()?;
        out.sync_all()
            .with_context(|| format!("cannot sync {}", partial.display()))?;
        Ok(bytes)
    })();
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let summary = match std::fs::File::open(&partial)
        .map_err(|e| e.to_string())
        .and_then(|f| kvs_snapshot::verify(std::io::BufReader::new(f)).map_err(|e| e.to_string()))
    {
        Ok(summary) => summary,
        Err(why) => {
            let _ = std::fs::remove_file(&partial);
            bail!("the backup kvs sent is incomplete or damaged ({why}); nothing was saved");
        }
    };
    // Checked again: FILE may have become something else while the backup ran.
    if let Err(e) = check_target(file) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    sync_parent(file)?;
    let secs = started.elapsed().as_secs_f64();
    say!(
        "backup: {} key(s) as of position {}, {} bytes, in {secs:.2} s ({:.0} keys/s) -> {}",
        summary.keys,
        summary.header.point,
        bytes,
        summary.keys as f64 / secs.max(1e-9),
        file.display()
    );
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

fn sync_parent(file: &Path) -> Result<()> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", parent.display()))
}

/// `kvs restore FILE --logger NAME`: loads a snapshot into the logger `config.logger`
/// (configured by its table), which must be empty; kvs must not be running on it.
pub fn restore(config: &Config, file: &Path, bump: u64) -> Result<()> {
    let catalog = Catalog::scan_with(&config.plugins_dir, config.plugins_insecure_modes)?;
    let plugin = catalog.find(PluginKind::LOGGER, &config.logger)?;
    let declares = |c: &str| plugin.capabilities.iter().any(|x| x == c);
    if declares(LOG_SHARED) {
        bail!(
            "{} is a shared log: restore into it from one node with a local logger's help is \
             not supported; start the cluster empty and load the keys through a frontend",
            plugin.name
        );
    }
    let table = config.plugin_config(&config.logger);
    let mut logger = kvs_host::lifecycle::open_logger(plugin, &table)?;
    let restored = kvs_host::backup::restore(
        file,
        &mut *logger,
        declares(LOG_EXPIRY),
        bump,
        config.limits,
    );
    let closed = logger.close();
    let restored = restored.map_err(anyhow::Error::msg)?;
    closed.map_err(|e| anyhow::anyhow!("the logger did not close cleanly: {e}"))?;
    let load = restored.load.as_secs_f64();
    let numbered = if restored.keys == 0 {
        "none".to_string()
    } else {
        format!(
            "numbered {}..={}",
            restored.sequences.0, restored.sequences.1
        )
    };
    say!(
        "restore: {} key(s) as of position {} into {} ({numbered}), checked in {:.2} s, \
         loaded in {load:.2} s ({:.0} keys/s){}",
        restored.keys,
        restored.point,
        plugin.name,
        restored.verify.as_secs_f64(),
        restored.keys as f64 / load.max(1e-9),
        if restored.expired > 0 {
            format!(
                "; {} key(s) already expired were left out",
                restored.expired
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `kvs migrate --to NAME`: `POST {admin}/migrate?to=NAME`, and the report as lines.
pub fn migrate(admin: &str, to: &str) -> Result<()> {
    let encoded: String =
        percent_encoding::utf8_percent_encode(to, percent_encoding::NON_ALPHANUMERIC).to_string();
    let url = format!("{}/migrate?to={encoded}", admin.trim_end_matches('/'));
    // A migration copies the whole store: an hour at most.
    crate::reload::post_and_print(&url, std::time::Duration::from_secs(3600))
}
