//! `kvs-bench overload`: kvs offered 1x, 3x and 10x the durable write rate it sustains,
//! by greedy clients plus one polite client, over gRPC (kvs.v1 `Put`, 100-byte values,
//! file logger with `sync = "always"`).
//!
//! gRPC because HTTP/2 answers each call on its own: a refusal is not held behind an
//! earlier write on the same connection, so its latency is the server's. The greedy
//! clients are open-loop (8 connections, calls started at a fixed rate whatever the
//! answers, up to 4096 outstanding per connection); the polite one sends one call at a
//! time at 1% of the sustained rate on its own connection. `writer.max_batch = 16`
//! makes the sustained rate a matter of fsyncs rather than CPU, so that this 2-core
//! machine has the CPU to offer ten times it (said in the output).
//!
//! After the load kvs is killed (SIGKILL) and its log read back: every write that was
//! acknowledged must be in it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kvs_plugin_api::TransactionLogger;
use kvs_proto::v1::{PutRequest, key_value_client::KeyValueClient};
use tonic::transport::Channel;

use crate::VALUE_BYTES;
use crate::rest::start_kvs;
use crate::variants::CpuTime;

const GREEDY_CONNECTIONS: u64 = 8;
const MAX_OUTSTANDING: u64 = 4096;
const LEVEL: Duration = Duration::from_secs(5);

/// What one run of calls saw.
#[derive(Default)]
struct Seen {
    ok_us: Vec<u32>,
    refused_us: Vec<u32>,
    other_errors: u64,
    acked: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

async fn put(client: &mut KeyValueClient<Channel>, key: String, seen: &Shared) {
    let started = Instant::now();
    let result = client
        .put(PutRequest {
            key: key.clone().into_bytes(),
            value: vec![b'x'; VALUE_BYTES],
            ..Default::default()
        })
        .await;
    let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    let mut seen = seen.lock().unwrap();
    match result {
        Ok(_) => {
            seen.ok_us.push(us);
            seen.acked.push(key);
        }
        Err(s) if s.code() == tonic::Code::Unavailable => seen.refused_us.push(us),
        Err(_) => seen.other_errors += 1,
    }
}

async fn connect(port: u16) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?)
}

/// The polite client: one call at a time, `rate` per second, until `stop`.
async fn polite(port: u16, rate: f64, stop: Arc<AtomicBool>, seen: Shared) -> Result<()> {
    let mut client = KeyValueClient::new(connect(port).await?);
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut n = 0u64;
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        put(&mut client, format!("polite-{n}"), &seen).await;
        n += 1;
        next += every;
        tokio::time::sleep_until(next).await;
    }
    Ok(())
}

/// One greedy connection: calls started at `rate` per second for `secs`, open-loop.
async fn greedy(id: u64, port: u16, rate: f64, run: Duration, seen: Shared) -> Result<u64> {
    let client = KeyValueClient::new(connect(port).await?);
    let outstanding = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut skipped = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while started.elapsed() < run {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent + skipped < due {
            if outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
                skipped += 1;
                continue;
            }
            outstanding.fetch_add(1, Ordering::Relaxed);
            let (mut client, seen, outstanding) =
                (client.clone(), seen.clone(), outstanding.clone());
            let key = format!("g{id}-{sent}");
            tokio::spawn(async move {
                put(&mut client, key, &seen).await;
                outstanding.fetch_sub(1, Ordering::Relaxed);
            });
            sent += 1;
        }
    }
    while outstanding.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(skipped)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The sustained rate: 64 calls always in flight over 8 connections for a while.
async fn sustained(port: u16) -> Result<f64> {
    let seen = Shared::default();
    let mut channels = Vec::new();
    for _ in 0..GREEDY_CONNECTIONS {
        channels.push(connect(port).await?);
    }
    let until = Instant::now() + Duration::from_secs(4);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let mut client = KeyValueClient::new(channels[(t % GREEDY_CONNECTIONS) as usize].clone());
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                put(&mut client, format!("c{t}-{n}"), &seen).await;
                n += 1;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let seen = seen.lock().unwrap();
    if seen.ok_us.is_empty() {
        bail!("no write succeeded while measuring the sustained rate");
    }
    Ok(seen.ok_us.len() as f64 / started.elapsed().as_secs_f64())
}

pub(crate) fn overload(plugins: &Path) -> Result<()> {
    let extra = "[writer]\nmax_batch = 16\n";
    let (mut kvs, port, dir) = start_kvs(plugins, "grpc", extra)?;
    let pid = kvs.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut acked: Vec<String> = Vec::new();
    println!(
        "kvs-bench overload: gRPC kvs.v1 Put, {VALUE_BYTES}-byte values, file logger sync = \
         always, writer.max_batch = 16 (the durable rate set by fsyncs, so this machine's 2 \
         cores can offer 10x it), shed_delay_ms = 100 (default); {} s per level; greedy: {} \
         open-loop connections; polite: one call at a time at 1% of the sustained rate",
        LEVEL.as_secs(),
        GREEDY_CONNECTIONS
    );
    let capacity = rt.block_on(sustained(port))?;
    println!("sustained durable write rate (64 calls in flight): {capacity:.0}/s");
    // The polite client alone: its unloaded latency.
    let polite_rate = (capacity / 100.0).max(10.0);
    let alone = Shared::default();
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(polite(port, polite_rate, stop.clone(), alone.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        task.await?
    })?;
    let mut alone = std::mem::take(&mut *alone.lock().unwrap());
    alone.ok_us.sort_unstable();
    let unloaded_p99 = percentile(&alone.ok_us, 0.99);
    acked.append(&mut alone.acked);
    println!(
        "polite client alone ({polite_rate:.0}/s): p50 {:.2} ms, p99 {unloaded_p99:.2} ms",
        percentile(&alone.ok_us, 0.5)
    );
    println!(
        "\n{:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7} {:>11} {:>8} {:>9}",
        "level",
        "offered/s",
        "goodput/s",
        "refused%",
        "p50 ms",
        "p99 ms",
        "polite99",
        "polite err",
        "err",
        "refusal p99",
        "peak RSS",
        "cpu us/ok"
    );
    let mut goodput_1x = 0.0;
    for level in [1.0, 3.0, 10.0] {
        let offered = capacity * level;
        let seen = Shared::default();
        let polite_seen = Shared::default();
        let cpu = CpuTime::of(pid)?;
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let started = Instant::now();
        let skipped: u64 = rt.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = {
                let (stop, peak) = (stop.clone(), peak.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            };
            let polite_task =
                tokio::spawn(polite(port, polite_rate, stop.clone(), polite_seen.clone()));
            let mut tasks = Vec::new();
            for id in 0..GREEDY_CONNECTIONS {
                let rate = offered / GREEDY_CONNECTIONS as f64;
                let id = (level as u64) * 100 + id;
                tasks.push(tokio::spawn(greedy(id, port, rate, LEVEL, seen.clone())));
            }
            let mut skipped = 0;
            for task in tasks {
                skipped += task.await??;
            }
            stop.store(true, Ordering::Relaxed);
            polite_task.await??;
            sampler.await?;
            Ok::<u64, anyhow::Error>(skipped)
        })?;
        let secs = started.elapsed().as_secs_f64();
        let mut seen = std::mem::take(&mut *seen.lock().unwrap());
        let mut polite = std::mem::take(&mut *polite_seen.lock().unwrap());
        seen.ok_us.sort_unstable();
        seen.refused_us.sort_unstable();
        polite.ok_us.sort_unstable();
        let ok = seen.ok_us.len() + polite.ok_us.len();
        let goodput = ok as f64 / secs;
        if level == 1.0 {
            goodput_1x = goodput;
        }
        let answered = seen.ok_us.len() + seen.refused_us.len();
        let (cpu_us, _) = cpu.per_request_since(pid, ok as f64)?;
        println!(
            "{:>4}x {:>9.0} {:>9.0} {:>7.1}% {:>8.2} {:>8.2} {:>9.2} {:>10} {:>7} {:>8.2} ms {:>5} MiB {:>9.1}",
            level,
            (answered as u64 + skipped) as f64 / secs,
            goodput,
            100.0 * seen.refused_us.len() as f64 / answered.max(1) as f64,
            percentile(&seen.ok_us, 0.5),
            percentile(&seen.ok_us, 0.99),
            percentile(&polite.ok_us, 0.99),
            format!(
                "{}/{}",
                polite.refused_us.len() as u64 + polite.other_errors,
                polite.ok_us.len() + polite.refused_us.len()
            ),
            seen.other_errors,
            percentile(&seen.refused_us, 0.99),
            peak.load(Ordering::Relaxed) / 1024,
            cpu_us,
        );
        if skipped > 0 {
            println!(
                "      ({skipped} calls not started: a connection had {MAX_OUTSTANDING} outstanding)"
            );
        }
        acked.append(&mut seen.acked);
        acked.append(&mut polite.acked);
    }
    if goodput_1x > 0.0 {
        println!("(goodput at 10x is compared with 1x's {goodput_1x:.0}/s above)");
    }
    println!("polite client's unloaded p99: {unloaded_p99:.2} ms");
    // Durability: kill kvs and read its log back.
    let _ = kvs.0.kill();
    let _ = kvs.0.wait();
    let mut logger = kvs_plugin_file::FileLogger::open(kvs_plugin_file::Config::parse(&format!(
        "path = {:?}\nsync = \"never\"",
        dir.path().join("kvs.log")
    ))?)?;
    let mut logged: HashSet<Vec<u8>> = HashSet::new();
    logger.replay(&mut |events| {
        for e in events {
            logged.insert(e.key.to_vec());
        }
        Ok(())
    })?;
    let missing = acked
        .iter()
        .filter(|k| !logged.contains(k.as_bytes()))
        .count();
    println!(
        "after SIGKILL: {} acknowledged writes, {missing} missing from the log",
        acked.len()
    );
    if missing > 0 {
        bail!("{missing} acknowledged writes are not in the log");
    }
    Ok(())
}
