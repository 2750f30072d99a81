//! `kvs-bench backup`: backing up and restoring 1M keys (`key:N`, 100-byte values: what
//! Redis's `DEBUG POPULATE 1000000 key 100` makes), next to Redis on the same data.
//!
//! kvs: a log of the keys is written with the file logger as a library and replayed by a
//! release `kvs`; then `kvs backup` (the snapshot streamed from the admin listener to a
//! file, synced and checked) and `kvs restore` of that file into an empty file logger
//! (`sync = "always"`, 4096 keys per append). Redis: `redis-cli --rdb` (an RDB snapshot
//! fetched over the network into a file, as `kvs backup` does) and `DEBUG RELOAD` (save
//! the RDB file, then load it: the closest to a restore Redis has).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kvs_plugin_api::{Event, TransactionLogger};

use crate::free_port;
use crate::rest::start_kvs_with;
use crate::variants::CpuTime;

const KEYS: u64 = 1_000_000;
const VALUE: usize = 100;

/// The value Redis's DEBUG POPULATE stores for key number `i`: `value:i`, zero-padded to
/// `VALUE` bytes.
fn value_of(i: u64) -> Vec<u8> {
    let mut v = format!("value:{i}").into_bytes();
    v.resize(VALUE, 0);
    v
}

fn write_log(path: &Path) -> Result<()> {
    let mut logger = kvs_plugin_file::FileLogger::open(kvs_plugin_file::Config::parse(&format!(
        "path = {path:?}\nsync = \"never\""
    ))?)?;
    logger.replay(&mut |_| Ok(()))?;
    let mut start = 0;
    while start < KEYS {
        let owned: Vec<(u64, Vec<u8>, Vec<u8>)> = (start..(start + 10_000).min(KEYS))
            .map(|i| (i + 1, format!("key:{i}").into_bytes(), value_of(i)))
            .collect();
        let events: Vec<Event<'_>> = owned.iter().map(|(s, k, v)| Event::put(*s, k, v)).collect();
        logger.append(&events)?;
        start += 10_000;
    }
    logger.close()?;
    Ok(())
}

/// User + system CPU time of a process so far.
fn cpu(pid: u32) -> Result<Duration> {
    let (total_us, _) = CpuTime::default().per_request_since(pid, 1.0)?;
    Ok(Duration::from_micros(total_us as u64))
}

fn row(what: &str, took: Duration, bytes: u64, server_cpu: Option<Duration>) {
    let secs = took.as_secs_f64();
    println!(
        "{what:>40}  {secs:>8.2}  {:>10.0}  {:>8.1}  {:>8.1}  {}",
        KEYS as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes as f64 / 1e6,
        server_cpu.map_or("-".to_string(), |c| format!("{:.2}", c.as_secs_f64()))
    );
}

pub(crate) fn backup(plugins: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("full.log");
    write_log(&log)?;
    let admin_port = free_port()?;
    let extra = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n");
    let table = format!("[plugins.file]\npath = {log:?}\nsync = \"always\"\n");
    let (kvs, _port, _kvs_dir) = start_kvs_with(plugins, "rest", &extra, &table)?;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &format!("{admin}/readyz")])
        .status()?
        .success()
    {
        if Instant::now() > deadline {
            bail!("kvs did not get ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let kvs_bin = std::env::current_exe()?.parent().unwrap().join("kvs");
    let snap = dir.path().join("kvs.snap");
    println!(
        "== backup and restore: {KEYS} keys `key:N` with {VALUE}-byte values (Redis: DEBUG \
         POPULATE {KEYS} key {VALUE})"
    );
    println!(
        "{:>40}  {:>8}  {:>10}  {:>8}  {:>8}  server CPU s",
        "", "seconds", "keys/s", "MB/s", "file MB"
    );
    let cpu_before = cpu(kvs.0.id())?;
    let started = Instant::now();
    let out = Command::new(&kvs_bin)
        .args(["backup", snap.to_str().unwrap(), "--admin", &admin])
        .stderr(Stdio::inherit())
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "kvs backup failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let server = cpu(kvs.0.id())? - cpu_before;
    let size = std::fs::metadata(&snap)?.len();
    row(
        "kvs backup (to a file, synced, checked)",
        took,
        size,
        Some(server),
    );
    drop(kvs);
    let config = dir.path().join("restore.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"file\"\n[plugins.file]\npath = {:?}\nsync = \"always\"\n",
            dir.path().join("restored.log")
        ),
    )?;
    let started = Instant::now();
    let out = Command::new(&kvs_bin)
        .arg("--config")
        .arg(&config)
        .arg("--plugins-dir")
        .arg(plugins)
        .args(["restore", snap.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "kvs restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    row("kvs restore (file logger, sync=always)", took, size, None);
    match redis(dir.path()) {
        Ok(()) => {}
        Err(e) => println!("   no Redis side by side: {e:#}"),
    }
    Ok(())
}

fn redis(dir: &Path) -> Result<()> {
    let server = crate::redis::Redis::start_in_memory(dir)?;
    let port = server.port();
    let cli = |args: &[&str]| server.cli(args);
    let populated = cli(&[
        "DEBUG",
        "POPULATE",
        &KEYS.to_string(),
        "key",
        &VALUE.to_string(),
    ])?;
    if !populated.contains("OK") {
        bail!("DEBUG POPULATE failed: {populated}");
    }
    let rdb = dir.join("fetched.rdb");
    let started = Instant::now();
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--rdb"])
        .arg(&rdb)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let took = started.elapsed();
    if !out.success() {
        bail!("redis-cli --rdb failed");
    }
    let size = std::fs::metadata(&rdb)?.len();
    row("redis-cli --rdb (to a file)", took, size, None);
    let started = Instant::now();
    let reloaded = cli(&["DEBUG", "RELOAD"])?;
    let took = started.elapsed();
    if !reloaded.contains("OK") {
        bail!("DEBUG RELOAD failed: {reloaded}");
    }
    row("redis DEBUG RELOAD (save + load)", took, size, None);
    println!(
        "   (server CPU: kvs's process during the backup; Redis writes its RDB in a forked \
         child, not counted. kvs restore syncs the log per 4096 keys; Redis's load is from \
         its own memory's RDB, no sync)"
    );
    Ok(())
}
