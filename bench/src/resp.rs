//! `kvs-bench resp`: like for like against Redis — the same client (`redis-benchmark`),
//! the same commands, the same transport (RESP over loopback TCP), the same durability
//! (Redis `appendfsync always`, kvs `sync = "always"`). Contenders: Redis, kvs's native
//! `resp` frontend (with its default one async thread, as Redis has; with two; and with
//! one and `[writer] frontend_commits = false`, the writer thread committing every
//! write), and the `wasm-resp` guest. SET, GET, INCR and SET NX at `-P 1` and
//! `-P 16`, 32 clients, 100-byte values over 10000 keys; rounds with the contenders
//! taking turns, medians; the server's CPU microseconds per request beside each rate.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::redis::Redis;
use crate::rest::{median, start_kvs};
use crate::variants::{CpuTime, Run};
use crate::{VALUE_BYTES, which};

const CONTENDERS: [&str; 5] = [
    "Redis",
    "kvs resp",
    "resp, 2 threads",
    "resp, writer commits",
    "kvs wasm-resp",
];

/// One benchmarked command: its label, `redis-benchmark`'s arguments for it, pipeline
/// depth, requests per run.
struct Case {
    label: &'static str,
    command: &'static [&'static str],
    pipeline: usize,
    requests: usize,
}

const CASES: [Case; 8] = [
    Case {
        label: "SET -P 1",
        command: &["-t", "set"],
        pipeline: 1,
        requests: 60_000,
    },
    Case {
        label: "GET -P 1",
        command: &["-t", "get"],
        pipeline: 1,
        requests: 100_000,
    },
    Case {
        label: "SET -P 16",
        command: &["-t", "set"],
        pipeline: 16,
        requests: 300_000,
    },
    Case {
        label: "GET -P 16",
        command: &["-t", "get"],
        pipeline: 16,
        requests: 600_000,
    },
    // Atomic updates (plugin-api 1.4): counters over the same 10000 keys, and SET NX
    // over 10 times as many (most succeed, so most are writes that need an fsync).
    Case {
        label: "INCR -P 1",
        command: &["-t", "incr"],
        pipeline: 1,
        requests: 60_000,
    },
    Case {
        label: "INCR -P 16",
        command: &["-t", "incr"],
        pipeline: 16,
        requests: 300_000,
    },
    Case {
        label: "SET NX -P 1",
        command: &["SET", "nx:__rand_int__", "value", "NX"],
        pipeline: 1,
        requests: 60_000,
    },
    Case {
        label: "SET NX -P 16",
        command: &["SET", "nx:__rand_int__", "value", "NX"],
        pipeline: 16,
        requests: 300_000,
    },
];

/// One `redis-benchmark` run of `case` against `port`: its rate and the server's CPU
/// per request.
fn run(port: u16, pid: u32, case: &Case) -> Result<Run> {
    let before = CpuTime::of(pid)?;
    let keys = if case.command[0] == "SET" {
        "100000"
    } else {
        "10000"
    };
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "32", "-P", &case.pipeline.to_string()])
        .args([
            "-n",
            &case.requests.to_string(),
            "-d",
            &VALUE_BYTES.to_string(),
        ])
        .args(["-r", keys, "-q"])
        .args(case.command)
        .output()?;
    let (cpu_us, user_us) = before.per_request_since(pid, case.requests as f64)?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let rate: f64 = text
        .lines()
        .rev()
        .find(|l| l.contains("requests per second"))
        .and_then(|l| l.rsplit(':').next())
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
        "== RESP like for like: redis-benchmark -c 32 -d {VALUE_BYTES} -r 10000 (SET NX: \
         -r 100000), loopback;\n   \
         Redis with appendfsync always, kvs with the file logger at sync = always (a fresh\n   \
         kvs per contender per round). {rounds} rounds, the contenders taking turns; medians.\n   \
         cpu = the server's CPU time (user + system) per request"
    );
    let redis = Redis::start()?;
    // results[contender][case] = runs
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); CASES.len()]; CONTENDERS.len()];
    for round in 1..=rounds {
        // A fresh Redis store per round too, so SET NX finds the same empty keyspace.
        redis.flush()?;
        for (c, contender) in CONTENDERS.iter().enumerate() {
            let kvs = match c {
                0 => None,
                // Its defaults: one async thread, as Redis has, committing its
                // connections' writes itself.
                1 => Some(start_kvs(plugins, "resp", "worker_threads = 1")?),
                2 => Some(start_kvs(plugins, "resp", "worker_threads = 2")?),
                // One thread, the writer thread committing every write (issue #33's
                // first item: the hop to the writer thread and back, measured against
                // the frontend committing its connections' writes itself).
                3 => Some(start_kvs(
                    plugins,
                    "resp",
                    "worker_threads = 1\n[writer]\nfrontend_commits = false",
                )?),
                // An instance per connection: 32 of 16 MB fit the default 1024 MB budget
                // (the default 64 MB each would refuse connections past the 16th).
                _ => Some(start_kvs(plugins, "wasm-resp", "memory_max_mb = 16")?),
            };
            let (port, pid) = match &kvs {
                None => (redis.port(), redis.pid()),
                Some((k, port, _)) => (*port, k.0.id()),
            };
            for (i, case) in CASES.iter().enumerate() {
                let r =
                    run(port, pid, case).with_context(|| format!("{contender} {}", case.label))?;
                results[c][i].push(r);
            }
            drop(kvs);
        }
        eprintln!("   round {round}/{rounds} done");
    }
    // medians[contender][case] = (rate, cpu, user)
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
    let row = |label: &str, cells: &[String]| {
        let rest: String = cells[1..].iter().map(|c| format!(" {c:>32}")).collect();
        println!("   {label:<13} {:>24}{rest}", cells[0]);
    };
    row("", &CONTENDERS.map(String::from));
    for (i, case) in CASES.iter().enumerate() {
        let redis_rate = medians[0][i].0;
        let cells: Vec<String> = (0..CONTENDERS.len())
            .map(|c| {
                let (rate, cpu, _) = medians[c][i];
                if c == 0 {
                    format!("{rate:>9.0}/s {cpu:>5.1} us cpu")
                } else {
                    format!(
                        "{rate:>9.0}/s {cpu:>5.1} us cpu {:>5.2}x",
                        rate / redis_rate
                    )
                }
            })
            .collect();
        row(case.label, &cells);
    }
    println!("\n   cpu split, us per request: user + system (the kernel's TCP, fsync, wake-ups)");
    for (i, case) in CASES.iter().enumerate() {
        let cells: Vec<String> = (0..CONTENDERS.len())
            .map(|c| {
                let (_, cpu, user) = medians[c][i];
                format!("{user:.1} + {:.1}", cpu - user)
            })
            .collect();
        row(case.label, &cells);
    }
    Ok(())
}
