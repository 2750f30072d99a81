//! `kvs-bench rest`: GET and durable PUT through the REST, WASM REST and gRPC frontends
//! of a real `kvs` process, next to Redis GET/SET, in alternating rounds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::redis::Redis;
use crate::variants::{CpuTime, Run, wrk};
use crate::{KillOnDrop, VALUE_BYTES, command_under, free_port, wait_for_port, which};

pub(crate) fn rest(plugins: &Path) -> Result<()> {
    which("wrk").context("wrk is needed: apt-get install wrk")?;
    let data = tempfile::tempdir()?;
    let put_script = put_script(data.path())?;
    let secs = 5;
    let rounds = 3;
    println!(
        "== frontends vs Redis: 32 concurrent clients, {VALUE_BYTES}-byte values, loopback\n   \
         (each frontend alone in a fresh kvs, file logger with sync = always; REST and WASM\n   \
         REST: wrk; gRPC: tonic clients in this process, unary kvs.v1 calls; Redis:\n   \
         redis-benchmark with appendfsync always)\n   \
         {rounds} rounds of {secs}s runs, the contenders taking turns within each round;\n   \
         each figure is the median of its rounds (this machine's load varies by ~15%)"
    );
    // Server CPU microseconds per request, per contender: [GET, PUT], each run as
    // (user + system, user).
    type Runs = Vec<(f64, f64)>;
    let mut cpu: [(&str, [Runs; 2]); 4] = [
        ("REST", Default::default()),
        ("WASM REST", Default::default()),
        ("gRPC", Default::default()),
        ("Redis", Default::default()),
    ];
    let mut rest_runs = (Vec::new(), Vec::new());
    let mut wasm_runs = (Vec::new(), Vec::new());
    let mut grpc_runs = (Vec::new(), Vec::new());
    let mut redis_runs = (Vec::new(), Vec::new());
    let redis = Redis::start()
        .inspect_err(|e| println!("   no Redis side by side: {e:#}"))
        .ok();
    for _ in 0..rounds {
        // Each frontend alone in a fresh kvs, as an operator would run it.
        let (get, put) = http_load(plugins, "rest", "worker_threads = 2", &put_script, secs)?;
        rest_runs.0.push(get.rate);
        rest_runs.1.push(put.rate);
        cpu[0].1[0].push((get.cpu_us, get.user_us));
        cpu[0].1[1].push((put.cpu_us, put.user_us));
        let (get, put) = http_load(plugins, "wasm-rest", "pool_size = 8", &put_script, secs)?;
        wasm_runs.0.push(get.rate);
        wasm_runs.1.push(put.rate);
        cpu[1].1[0].push((get.cpu_us, get.user_us));
        cpu[1].1[1].push((put.cpu_us, put.user_us));
        let (kvs, port, _dir) = start_kvs(plugins, "grpc", "worker_threads = 2")?;
        for (i, put) in [false, true].into_iter().enumerate() {
            let before = CpuTime::of(kvs.0.id())?;
            let (rate, calls) = grpc_load(port, put, secs)?;
            cpu[2].1[i].push(before.per_request_since(kvs.0.id(), calls as f64)?);
            if put {
                grpc_runs.1.push(rate);
            } else {
                grpc_runs.0.push(rate);
            }
        }
        if let Some(r) = &redis {
            for (i, (op, n)) in [("get", 300_000), ("set", 100_000)].into_iter().enumerate() {
                let before = CpuTime::of(r.pid())?;
                let rate = r.benchmark(op, 32, n)?;
                cpu[3].1[i].push(before.per_request_since(r.pid(), n as f64)?);
                if i == 0 {
                    redis_runs.0.push(rate);
                } else {
                    redis_runs.1.push(rate);
                }
            }
        }
    }
    let (get, put) = (median(&rest_runs.0), median(&rest_runs.1));
    let (wasm_get, wasm_put) = (median(&wasm_runs.0), median(&wasm_runs.1));
    let (grpc_get, grpc_put) = (median(&grpc_runs.0), median(&grpc_runs.1));
    let (redis_get, redis_set) = match redis {
        Some(_) => (Some(median(&redis_runs.0)), Some(median(&redis_runs.1))),
        None => (None, None),
    };
    println!(
        "{:>12}  {:>12}  {:>12}  {:>12}  {:>11}",
        "operation", "REST req/s", "gRPC req/s", "Redis req/s", "REST/Redis"
    );
    for (op, rest, grpc, theirs) in [
        ("GET", get, grpc_get, redis_get),
        ("durable PUT", put, grpc_put, redis_set),
    ] {
        println!(
            "{op:>12}  {rest:>12.0}  {grpc:>12.0}  {:>12}  {:>11}",
            theirs.map_or("-".into(), |r| format!("{r:.0}")),
            theirs.map_or("-".into(), |r| format!("{:.2}x", rest / r))
        );
    }
    println!(
        "\n{:>12}  {:>12}  {:>15}  {:>12}",
        "operation", "REST req/s", "WASM REST req/s", "WASM/native"
    );
    for (op, native, wasm) in [("GET", get, wasm_get), ("durable PUT", put, wasm_put)] {
        println!(
            "{op:>12}  {native:>12.0}  {wasm:>15.0}  {:>11.2}x",
            wasm / native
        );
    }
    println!(
        "\n{:>12}  {:>22}  {:>22}   (server CPU per request, medians:\n{:>12}  {:>22}  {:>22}    total = user + system)",
        "contender", "GET us/req", "PUT us/req", "", "", ""
    );
    let split = |runs: &[(f64, f64)]| {
        let total: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let user: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let system: Vec<f64> = runs.iter().map(|r| r.0 - r.1).collect();
        format!(
            "{:.1} = {:.1} + {:.1}",
            median(&total),
            median(&user),
            median(&system)
        )
    };
    for (who, [gets, puts]) in cpu.iter().filter(|(_, runs)| !runs[0].is_empty()) {
        println!("{who:>12}  {:>22}  {:>22}", split(gets), split(puts));
    }
    println!("\n   every round, req/s:");
    let all = [
        ("REST GET", &rest_runs.0),
        ("REST PUT", &rest_runs.1),
        ("WASM REST GET", &wasm_runs.0),
        ("WASM REST PUT", &wasm_runs.1),
        ("gRPC Get", &grpc_runs.0),
        ("gRPC Put", &grpc_runs.1),
        ("Redis GET", &redis_runs.0),
        ("Redis SET", &redis_runs.1),
    ];
    for (what, runs) in all.into_iter().filter(|(_, r)| !r.is_empty()) {
        let runs: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        println!("   {what:>14}: {}", runs.join("  "));
    }
    Ok(())
}

/// Writes the wrk script that PUTs `VALUE_BYTES`-byte values under 10,000 keys into
/// `dir`; returns its path.
pub(crate) fn put_script(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("put.lua");
    std::fs::write(
        &path,
        format!(
            "local n = 0\nlocal body = string.rep('x', {VALUE_BYTES})\n\
             request = function()\n  n = n + 1\n  return wrk.format('PUT', '/v1/key/k' .. (n % 10000), nil, body)\nend\n"
        ),
    )?;
    Ok(path)
}

/// GET and durable PUT rates through an HTTP frontend in a fresh kvs, with wrk.
fn http_load(
    plugins: &Path,
    frontend: &str,
    extra: &str,
    put_script: &Path,
    secs: u64,
) -> Result<(Run, Run)> {
    let (kvs, port, _dir) = start_kvs(plugins, frontend, extra)?;
    let url = format!("http://127.0.0.1:{port}");
    seed_hot(&url)?;
    let pid = kvs.0.id();
    Ok((
        wrk(&format!("{url}/v1/key/hot"), None, None, secs, pid)?,
        wrk(
            &format!("{url}/v1/key/k"),
            Some(put_script),
            None,
            secs,
            pid,
        )?,
    ))
}

/// The middle value (the mean of the two middle ones for an even count).
pub(crate) fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Starts a release `kvs` with the file logger (`sync = always`) and one frontend on a
/// free port; killed when the guard drops, then its directory removed.
pub(crate) fn start_kvs(
    plugins: &Path,
    frontend: &str,
    extra: &str,
) -> Result<(KillOnDrop, u16, tempfile::TempDir)> {
    start_kvs_with(plugins, frontend, extra, "")
}

/// [`start_kvs`] with `file_table` as the file logger's table (its own log in a fresh
/// directory, `sync = always`, when empty).
pub(crate) fn start_kvs_with(
    plugins: &Path,
    frontend: &str,
    extra: &str,
    file_table: &str,
) -> Result<(KillOnDrop, u16, tempfile::TempDir)> {
    start_kvs_on(plugins, "file", file_table, frontend, extra)
}

/// [`start_kvs`] with the logger `logger` and its table `logger_table` (for `file`, an
/// empty table means its own log in the fresh directory, `sync = always`).
pub(crate) fn start_kvs_on(
    plugins: &Path,
    logger: &str,
    logger_table: &str,
    frontend: &str,
    extra: &str,
) -> Result<(KillOnDrop, u16, tempfile::TempDir)> {
    start_kvs_under(&[], plugins, logger, logger_table, frontend, extra)
}

/// [`start_kvs_on`], with kvs run by the command `wrapper` (e.g. valgrind) when it is
/// not empty.
pub(crate) fn start_kvs_under(
    wrapper: &[&str],
    plugins: &Path,
    logger: &str,
    logger_table: &str,
    frontend: &str,
    extra: &str,
) -> Result<(KillOnDrop, u16, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_path_buf();
    let port = free_port()?;
    let config = data.join("config.toml");
    let logger_table = if logger == "file" && logger_table.is_empty() {
        format!(
            "[plugins.file]\npath = {:?}\nsync = \"always\"\ncompact_min_bytes = 1073741824\n",
            data.join("kvs.log")
        )
    } else {
        logger_table.to_string()
    };
    std::fs::write(
        &config,
        format!(
            "logger = {logger:?}\nfrontends = [{frontend:?}]\n{logger_table}\
             [plugins.{frontend}]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n"
        ),
    )?;
    let kvs_bin = std::env::current_exe()?.parent().unwrap().join("kvs");
    let (mut command, patience) = command_under(wrapper, &kvs_bin);
    let mut kvs = KillOnDrop(
        command
            .arg("--config")
            .arg(&config)
            .arg("--plugins-dir")
            .arg(plugins)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(if wrapper.is_empty() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("cannot start {}", kvs_bin.display()))?,
    );
    wait_for_port(port, &mut kvs.0, patience)?;
    // kvs is killed (first field) before its directory is removed.
    Ok((kvs, port, dir))
}

/// Stores the value the GET runs read.
fn seed_hot(url: &str) -> Result<()> {
    let ok = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "--data-binary",
            &"x".repeat(VALUE_BYTES),
            &format!("{url}/v1/key/hot"),
        ])
        .status()?
        .success();
    if !ok {
        bail!("seeding {url}/v1/key/hot failed");
    }
    Ok(())
}

/// 32 concurrent unary calls (over 4 HTTP/2 connections) for `secs`; calls per second
/// and calls made.
fn grpc_load(port: u16, put: bool, secs: u64) -> Result<(f64, u64)> {
    use kvs_proto::v1::{GetRequest, PutRequest, key_value_client::KeyValueClient};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
                    .connect()
                    .await?,
            );
        }
        let mut seed = KeyValueClient::new(channels[0].clone());
        seed.put(PutRequest {
            key: b"hot".to_vec(),
            value: vec![b'x'; VALUE_BYTES],
            ..Default::default()
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..32usize {
            let mut client = KeyValueClient::new(channels[t % 4].clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if put {
                        let key = format!("g{t}-{}", n % 10_000).into_bytes();
                        client
                            .put(PutRequest {
                                key,
                                value: vec![b'x'; VALUE_BYTES],
                                ..Default::default()
                            })
                            .await?;
                    } else {
                        client
                            .get(GetRequest {
                                key: b"hot".to_vec(),
                            })
                            .await?;
                    }
                    n += 1;
                }
                Ok::<u64, tonic::Status>(n)
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        Ok((total as f64 / started.elapsed().as_secs_f64(), total))
    })
}
