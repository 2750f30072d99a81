//! `kvs-bench memory`: resident memory per key, kvs next to Redis, for the same keys and
//! values: `key:N` and an 8-byte value (Redis's `DEBUG POPULATE N key 8`).
//!
//! kvs: a log of N puts is written with the file logger as a library, then a release
//! `kvs` replays it; the figure is the growth of its resident set over an empty kvs.
//! Redis: `used_memory` (its allocator's count) and `used_memory_rss` before and after
//! `DEBUG POPULATE`, in a throwaway server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs_plugin_api::{Event, TransactionLogger};

use crate::rest::start_kvs_with;
use crate::{KillOnDrop, free_port, wait_for_port, which};

const KEYS: u64 = 1_000_000;
const VALUE: usize = 8;

/// The value Redis's DEBUG POPULATE stores for key number `i`: `value:i`, cut or
/// zero-padded to `VALUE` bytes.
fn value_of(i: u64) -> Vec<u8> {
    let mut v = format!("value:{i}").into_bytes();
    v.resize(VALUE, 0);
    v
}

fn key_of(i: u64) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

/// Resident set of a process, bytes.
fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// Starts kvs on `log` and waits until replay is done; returns the guard and its RSS.
fn kvs_rss(plugins: &Path, log: &Path) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let extra = format!("[plugins.file]\npath = {log:?}\nsync = \"never\"\n");
    let (kvs, port, _dir) = start_kvs_with(plugins, "rest", "", &extra)?;
    // Replay runs after the frontend listens: wait until it says ready.
    let http = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &http])
            .status()?
            .success();
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("kvs did not get ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    // Let the allocator settle after replay.
    std::thread::sleep(Duration::from_millis(500));
    Ok((rss(kvs.0.id())?, took))
}

pub(crate) fn memory(plugins: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let empty_log = dir.path().join("empty.log");
    let full_log = dir.path().join("full.log");
    {
        let mut logger = kvs_plugin_file::FileLogger::open(kvs_plugin_file::Config::parse(
            &format!("path = {full_log:?}\nsync = \"never\""),
        )?)?;
        logger.replay(&mut |_| Ok(()))?;
        let mut batch_keys = Vec::new();
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(10_000) {
            batch_keys.clear();
            batch_keys.extend(chunk.iter().map(|&i| (i, key_of(i), value_of(i))));
            let events: Vec<Event<'_>> = batch_keys
                .iter()
                .map(|(i, k, v)| Event::put(i + 1, k, v))
                .collect();
            logger.append(&events)?;
        }
        logger.close()?;
    }
    let data_bytes: u64 = (0..KEYS)
        .map(|i| key_of(i).len() as u64 + VALUE as u64)
        .sum();
    let per_key_data = data_bytes as f64 / KEYS as f64;
    let (empty, _) = kvs_rss(plugins, &empty_log)?;
    let (full, replay) = kvs_rss(plugins, &full_log)?;
    let kvs_per_key = (full.saturating_sub(empty)) as f64 / KEYS as f64;
    println!(
        "== memory: {KEYS} keys `key:N` with {VALUE}-byte values ({per_key_data:.1} bytes of \
         data per key)"
    );
    println!(
        "{:>24}  {:>14}  {:>20}",
        "", "bytes per key", "beyond key + value"
    );
    println!(
        "{:>24}  {:>14.1}  {:>20.1}   (replay took {} ms)",
        "kvs (RSS growth)",
        kvs_per_key,
        kvs_per_key - per_key_data,
        replay.as_millis()
    );
    match redis_memory() {
        Ok((used, rss)) => {
            for (what, bytes) in [("Redis used_memory", used), ("Redis RSS growth", rss)] {
                let per_key = bytes as f64 / KEYS as f64;
                println!(
                    "{what:>24}  {per_key:>14.1}  {:>20.1}",
                    per_key - per_key_data
                );
            }
        }
        Err(e) => println!("   no Redis side by side: {e:#}"),
    }
    Ok(())
}

/// Growth of Redis's `used_memory` and `used_memory_rss` from `DEBUG POPULATE`.
fn redis_memory() -> Result<(u64, u64)> {
    which("redis-server")?;
    which("redis-cli")?;
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let mut server = KillOnDrop(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_for_port(port, &mut server.0, std::time::Duration::from_secs(30))?;
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let memory = |info: &str, field: &str| -> Result<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {field} in INFO memory"))
    };
    let before = cli(&["INFO", "memory"])?;
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
    std::thread::sleep(Duration::from_millis(500));
    let after = cli(&["INFO", "memory"])?;
    let used = memory(&after, "used_memory")? - memory(&before, "used_memory")?;
    let rss = memory(&after, "used_memory_rss")? - memory(&before, "used_memory_rss")?;
    Ok((used, rss))
}
