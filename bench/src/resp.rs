//! `kvs-bench resp`: like for like against Redis — the same client (`redis-benchmark`),
//! the same commands, the same transport (RESP over loopback TCP), the same durability
//! (Redis `appendfsync always`, kvs `sync = "always"`). Contenders: Redis, kvs's native
//! `resp` frontend, and the `wasm-resp` guest. SET and GET at `-P 1` and `-P 16`,
//! 32 clients, 100-byte values over 10000 keys; rounds with the contenders taking turns,
//! medians; the server's CPU microseconds per request beside each rate.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::redis::Redis;
use crate::rest::{median, start_kvs};
use crate::variants::{CpuTime, Run};
use crate::{VALUE_BYTES, which};

const CONTENDERS: [&str; 3] = ["Redis", "kvs resp", "kvs wasm-resp"];
/// (command, pipeline depth, requests per run).
const CASES: [(&str, usize, usize); 4] = [
    ("set", 1, 60_000),
    ("get", 1, 100_000),
    ("set", 16, 300_000),
    ("get", 16, 600_000),
];

/// One `redis-benchmark` run against `port`: its rate and the server's CPU per request.
fn run(port: u16, pid: u32, op: &str, pipeline: usize, requests: usize) -> Result<Run> {
    let before = CpuTime::of(pid)?;
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", op])
        .args(["-c", "32", "-P", &pipeline.to_string()])
        .args(["-n", &requests.to_string(), "-d", &VALUE_BYTES.to_string()])
        .args(["-r", "10000", "-q"])
        .output()?;
    let (cpu_us, user_us) = before.per_request_since(pid, requests as f64)?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let rate: f64 = text
        .lines()
        .rev()
        .find(|l| l.contains("requests per second"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no rate in redis-benchmark output:\n{text}"))?;
    Ok(Run {
        rate,
        cpu_us,
        user_us,
    })
}

pub(crate) fn resp(plugins: &Path) -> Result<()> {
    which("redis-benchmark").context("redis-benchmark is needed: apt-get install redis-tools")?;
    let rounds = 3;
    println!(
        "== RESP like for like: redis-benchmark -c 32 -d {VALUE_BYTES} -r 10000, loopback;\n   \
         Redis with appendfsync always, kvs with the file logger at sync = always (a fresh\n   \
         kvs per contender per round). {rounds} rounds, the contenders taking turns; medians.\n   \
         cpu = the server's CPU time (user + system) per request"
    );
    let redis = Redis::start()?;
    // results[contender][case] = runs
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); CASES.len()]; CONTENDERS.len()];
    for round in 1..=rounds {
        for (c, contender) in CONTENDERS.iter().enumerate() {
            let kvs = match c {
                0 => None,
                1 => Some(start_kvs(plugins, "resp", "worker_threads = 2")?),
                _ => Some(start_kvs(plugins, "wasm-resp", "")?),
            };
            let (port, pid) = match &kvs {
                None => (redis.port(), redis.pid()),
                Some((k, port, _)) => (*port, k.0.id()),
            };
            for (i, (op, pipeline, requests)) in CASES.iter().enumerate() {
                let r = run(port, pid, op, *pipeline, *requests)
                    .with_context(|| format!("{contender} {op} -P {pipeline}"))?;
                results[c][i].push(r);
            }
            drop(kvs);
        }
        eprintln!("   round {round}/{rounds} done");
    }
    println!(
        "   {:<15} {:>22} {:>22} {:>22} {:>22}",
        "", "SET -P 1", "GET -P 1", "SET -P 16", "GET -P 16"
    );
    let medians: Vec<Vec<(f64, f64, f64)>> = results
        .iter()
        .map(|cases| {
            cases
                .iter()
                .map(|runs| {
                    let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
                    let cpus: Vec<f64> = runs.iter().map(|r| r.cpu_us).collect();
                    let users: Vec<f64> = runs.iter().map(|r| r.user_us).collect();
                    (median(&rates), median(&cpus), median(&users))
                })
                .collect()
        })
        .collect();
    for (c, contender) in CONTENDERS.iter().enumerate() {
        let cells: Vec<String> = medians[c]
            .iter()
            .map(|(rate, cpu, _)| format!("{rate:>9.0}/s {cpu:>5.1} us cpu"))
            .collect();
        println!(
            "   {contender:<15} {:>22} {:>22} {:>22} {:>22}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
    for (c, contender) in CONTENDERS.iter().enumerate().skip(1) {
        let ratios: Vec<String> = (0..CASES.len())
            .map(|i| format!("{:.2}x", medians[c][i].0 / medians[0][i].0))
            .collect();
        println!(
            "   {contender} / Redis (rate): SET -P 1 {}, GET -P 1 {}, SET -P 16 {}, GET -P 16 {}",
            ratios[0], ratios[1], ratios[2], ratios[3]
        );
    }
    println!("\n   cpu split, us per request: user + system (the kernel's TCP, fsync, wake-ups)");
    for (c, contender) in CONTENDERS.iter().enumerate() {
        let cells: Vec<String> = medians[c]
            .iter()
            .map(|(_, cpu, user)| format!("{user:.1} + {:.1}", cpu - user))
            .collect();
        println!(
            "   {contender:<15} {:>22} {:>22} {:>22} {:>22}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
    Ok(())
}
