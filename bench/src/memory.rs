//! `kvs-bench memory`: resident memory per key, kvs next to Redis, for the same keys and
//! values: `key:N` and an 8-byte value (Redis's `DEBUG POPULATE N key 8`).
//!
//! kvs: a log of N puts is written with the file logger as a library, then a release
//! `kvs` replays it; the figure is the growth of its resident set over an empty kvs.
//! Redis: `used_memory` (its allocator's count) and `used_memory_rss` before and after
//! `DEBUG POPULATE`, in a throwaway server. Then the same with a deadline on every key
//! (a day away: kvs's `PUT_UNTIL` events, Redis's `PEXPIREAT`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs_plugin_api::{Event, EventKind, TransactionLogger};

use crate::rest::start_kvs_with;

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

/// Writes a log of the `KEYS` keys, each expiring at `deadline` if given.
fn write_log(path: &Path, deadline: Option<u64>) -> Result<()> {
    let mut logger = kvs_plugin_file::FileLogger::open(kvs_plugin_file::Config::parse(&format!(
        "path = {path:?}\nsync = \"never\""
    ))?)?;
    logger.replay(&mut |_| Ok(()))?;
    let mut batch = Vec::new();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(10_000) {
        batch.clear();
        batch.extend(chunk.iter().map(|&i| {
            let mut value = deadline.map_or(Vec::new(), |d| d.to_le_bytes().to_vec());
            value.extend_from_slice(&value_of(i));
            (i, key_of(i), value)
        }));
        let events: Vec<Event<'_>> = batch
            .iter()
            .map(|(i, k, v)| Event {
                kind: if deadline.is_some() {
                    EventKind::PUT_UNTIL
                } else {
                    EventKind::PUT
                },
                ..Event::put(i + 1, k, v)
            })
            .collect();
        logger.append(&events)?;
    }
    logger.close()?;
    Ok(())
}

pub(crate) fn memory(plugins: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let empty_log = dir.path().join("empty.log");
    let full_log = dir.path().join("full.log");
    let ttl_log = dir.path().join("ttl.log");
    let a_day_away = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 86_400_000;
    write_log(&full_log, None)?;
    write_log(&ttl_log, Some(a_day_away))?;
    let data_bytes: u64 = (0..KEYS)
        .map(|i| key_of(i).len() as u64 + VALUE as u64)
        .sum();
    let per_key_data = data_bytes as f64 / KEYS as f64;
    let (empty, _) = kvs_rss(plugins, &empty_log)?;
    println!(
        "== memory: {KEYS} keys `key:N` with {VALUE}-byte values ({per_key_data:.1} bytes of \
         data per key)"
    );
    println!(
        "{:>30}  {:>14}  {:>20}",
        "", "bytes per key", "beyond key + value"
    );
    for (what, log) in [
        ("kvs (RSS growth)", &full_log),
        ("kvs, with TTLs", &ttl_log),
    ] {
        let (full, replay) = kvs_rss(plugins, log)?;
        let kvs_per_key = (full.saturating_sub(empty)) as f64 / KEYS as f64;
        println!(
            "{what:>30}  {kvs_per_key:>14.1}  {:>20.1}   (replay took {} ms)",
            kvs_per_key - per_key_data,
            replay.as_millis()
        );
    }
    match redis_memory(a_day_away) {
        Ok(figures) => {
            for (what, bytes) in figures {
                let per_key = bytes as f64 / KEYS as f64;
                println!(
                    "{what:>30}  {per_key:>14.1}  {:>20.1}",
                    per_key - per_key_data
                );
            }
        }
        Err(e) => println!("   no Redis side by side: {e:#}"),
    }
    Ok(())
}

/// Growth of Redis's `used_memory` and `used_memory_rss` from `DEBUG POPULATE`, then
/// with every key given a deadline (`PEXPIREAT`, through `redis-cli --pipe`).
fn redis_memory(deadline: u64) -> Result<Vec<(&'static str, u64)>> {
    let dir = tempfile::tempdir()?;
    let server = crate::redis::Redis::start_in_memory(dir.path())?;
    let port = server.port();
    let cli = |args: &[&str]| server.cli(args);
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
    let mut commands = Vec::new();
    for i in 0..KEYS {
        let key = format!("key:{i}");
        let at = deadline.to_string();
        commands.extend_from_slice(
            format!(
                "*3\r\n$9\r\nPEXPIREAT\r\n${}\r\n{key}\r\n${}\r\n{at}\r\n",
                key.len(),
                at.len()
            )
            .as_bytes(),
        );
    }
    let mut pipe = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(pipe.stdin.as_mut().context("stdin")?, &commands)?;
    drop(pipe.stdin.take());
    anyhow::ensure!(pipe.wait()?.success(), "redis-cli --pipe failed");
    std::thread::sleep(Duration::from_millis(500));
    let with_ttl = cli(&["INFO", "memory"])?;
    let used_ttl = memory(&with_ttl, "used_memory")? - memory(&before, "used_memory")?;
    Ok(vec![
        ("Redis used_memory", used),
        ("Redis RSS growth", rss),
        ("Redis used_memory, TTLs", used_ttl),
    ])
}
