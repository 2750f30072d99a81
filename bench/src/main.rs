//! `kvs-bench`: measures kvs and prints numbers, side by side with Redis where it can.
//!
//! * `kvs-bench writes`: durable (`sync = "always"`) write throughput of the `file`
//!   logger through the host's store and writer, at 1, 8 and 32 concurrent writers, and
//!   replay time for 1M records; then Redis `SET` with `appendfsync always` via
//!   `redis-benchmark` at the same concurrency.
//! * `kvs-bench rest`: GET and durable PUT through the `rest` frontend with `wrk`
//!   (32 connections) and through the `grpc` frontend (32 concurrent tonic calls), and
//!   Redis GET/SET with `redis-benchmark -c 32`.
//!
//! Run it through `cargo xtask bench [writes|rest]`, which builds in release mode and
//! stages the plug-ins. Everything listens on 127.0.0.1 and stops by itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs_host::config::{Config, Overrides, RawConfig};
use kvs_host::lifecycle;
use kvs_host::plugins::Catalog;
use kvs_host::write_request::Completion;
use kvs_testkit::pg::PgServer;

const VALUE_BYTES: usize = 100;

fn main() -> Result<()> {
    // The postgres logger reads its password from the environment; set it before any
    // thread exists.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("KVS_POSTGRES_PASSWORD", kvs_testkit::pg::PASSWORD) };
    let mode = std::env::args().nth(1).unwrap_or_else(|| "writes".into());
    let plugins = plugins_dir()?;
    match mode.as_str() {
        "writes" => writes(&plugins),
        "rest" => rest(&plugins),
        other => bail!("unknown benchmark {other:?}: use `writes` or `rest`"),
    }
}

/// `plugins/` beside this executable, where `cargo xtask build --release` stages them.
fn plugins_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap().join("plugins");
    if !dir.join("libkvs_plugin_file.so").is_file() {
        bail!(
            "{} has no staged plug-ins: run `cargo xtask bench`",
            dir.display()
        );
    }
    Ok(dir)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn file_config(plugins: &Path, data: &Path, sync: &str) -> Result<Config> {
    let toml = format!(
        "logger = \"file\"\nfrontends = []\n[plugins.file]\npath = {:?}\nsync = {sync:?}\n",
        data.join("kvs.log")
    );
    resolve(plugins, &toml)
}

fn postgres_config(plugins: &Path, pg: &PgServer, table: &str) -> Result<Config> {
    let toml = format!(
        "logger = \"postgres\"\nfrontends = []\n[plugins.postgres]\nurl = {:?}\ntable = {table:?}\n",
        pg.url()
    );
    resolve(plugins, &toml)
}

fn resolve(plugins: &Path, toml: &str) -> Result<Config> {
    Config::resolve(
        RawConfig::parse(toml)?,
        Overrides {
            plugins_dir: Some(plugins.to_path_buf()),
            ..Overrides::default()
        },
    )
}

/// Durable writes from `writers` threads for `duration`; returns (writes/s, mean batch).
fn durable_writes(
    catalog: &Catalog,
    config: &Config,
    writers: usize,
    duration: Duration,
) -> Result<(f64, f64)> {
    let running = lifecycle::start(config, catalog)?;
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers {
            let (store, stop, done) = (&running.store, &stop, &done);
            s.spawn(move || {
                let value = vec![b'v'; VALUE_BYTES];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (tx, rx) = mpsc::sync_channel(1);
                    let key = format!("bench-{t}-{}", i % 10_000).into_bytes();
                    store.put(
                        key,
                        value.clone(),
                        Completion::new(move |r| tx.send(r).unwrap()),
                    );
                    rx.recv().unwrap().expect("durable write failed");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = running.stop()?;
    let writes = done.load(Ordering::Relaxed) as f64;
    Ok((
        writes / elapsed,
        stats.writes as f64 / stats.batches.max(1) as f64,
    ))
}

fn writes(plugins: &Path) -> Result<()> {
    let catalog = Catalog::scan(plugins)?;
    let secs = Duration::from_secs(5);
    println!(
        "== durable writes: {VALUE_BYTES}-byte values, 10k keys per writer, {}s each\n   \
         file: sync = always; postgres: local server with fsync = on; Redis: appendfsync always\n   \
         (kvs measured in-process through Store + writer + logger; Redis over loopback TCP)",
        secs.as_secs()
    );
    let redis = Redis::start().ok();
    if redis.is_none() {
        println!(
            "   redis-server/redis-benchmark not found: `apt-get install redis-server redis-tools` for the side-by-side"
        );
    }
    let pg = postgres_server();
    println!(
        "{:>8}  {:>12}  {:>10}  {:>15}  {:>12}  {:>11}",
        "writers", "file/s", "mean batch", "postgres/s", "redis SET/s", "file/redis"
    );
    for writers in [1usize, 8, 32] {
        let data = tempfile::tempdir()?;
        let config = file_config(plugins, data.path(), "always")?;
        let (rate, batch) = durable_writes(&catalog, &config, writers, secs)?;
        let pg_rate = match &pg {
            Some(pg) => {
                let table = format!("bench_{writers}");
                Some(
                    durable_writes(
                        &catalog,
                        &postgres_config(plugins, pg, &table)?,
                        writers,
                        secs,
                    )?
                    .0,
                )
            }
            None => None,
        };
        let redis_rate = match &redis {
            Some(r) => Some(r.benchmark("set", writers, 20_000 * writers.min(8))?),
            None => None,
        };
        println!(
            "{writers:>8}  {rate:>12.0}  {batch:>10.1}  {:>15}  {:>12}  {:>11}",
            pg_rate.map_or("-".into(), |r| format!("{r:.0}")),
            redis_rate.map_or("-".into(), |r| format!("{r:.0}")),
            redis_rate.map_or("-".into(), |r| format!("{:.2}x", rate / r)),
        );
    }
    drop(redis);

    println!("\n== replay of {VALUE_BYTES}-byte records into the map");
    let data = tempfile::tempdir()?;
    replay(
        &catalog,
        &file_config(plugins, data.path(), "never")?,
        "file",
        1_000_000,
    )?;
    if let Some(pg) = &pg {
        replay(
            &catalog,
            &postgres_config(plugins, pg, "bench_replay")?,
            "postgres",
            200_000,
        )?;
    }
    Ok(())
}

/// Writes `n` records, restarts, and prints how long replay took.
fn replay(catalog: &Catalog, config: &Config, name: &str, n: u64) -> Result<()> {
    let running = lifecycle::start(config, catalog)?;
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let store = &running.store;
            s.spawn(move || {
                let mut pending = Vec::new();
                for i in (t..n).step_by(8) {
                    let (tx, rx) = mpsc::sync_channel(1);
                    store.put(
                        format!("replay-{i:08}").into_bytes(),
                        vec![b'r'; VALUE_BYTES],
                        Completion::new(move |r| tx.send(r).unwrap()),
                    );
                    pending.push(rx);
                    if pending.len() == 256 {
                        pending.drain(..).for_each(|rx| rx.recv().unwrap().unwrap());
                    }
                }
                pending.drain(..).for_each(|rx| rx.recv().unwrap().unwrap());
            });
        }
    });
    running.stop()?;
    let started = Instant::now();
    let again = lifecycle::start(config, catalog)?;
    let elapsed = started.elapsed();
    println!(
        "{name:>10}: {} events, {} keys: replay {:.0} ms ({:.2} M events/s)",
        again.replayed.events,
        again.store.len(),
        elapsed.as_secs_f64() * 1000.0,
        again.replayed.events as f64 / elapsed.as_secs_f64() / 1e6
    );
    again.stop()?;
    Ok(())
}

/// A throwaway durable PostgreSQL server, if its binaries are installed.
fn postgres_server() -> Option<PgServer> {
    match std::panic::catch_unwind(PgServer::start_durable) {
        Ok(pg) => Some(pg),
        Err(_) => {
            println!(
                "   no PostgreSQL server binaries: `apt-get install postgresql` for the postgres column"
            );
            None
        }
    }
}

fn rest(plugins: &Path) -> Result<()> {
    which("wrk").context("wrk is needed: apt-get install wrk")?;
    let data = tempfile::tempdir()?;
    let put_script = data.path().join("put.lua");
    std::fs::write(
        &put_script,
        format!(
            "local n = 0\nlocal body = string.rep('x', {VALUE_BYTES})\n\
             request = function()\n  n = n + 1\n  return wrk.format('PUT', '/v1/key/k' .. (n % 10000), nil, body)\nend\n"
        ),
    )?;
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
        rest_runs.0.push(get);
        rest_runs.1.push(put);
        let (get, put) = http_load(plugins, "wasm-rest", "pool_size = 8", &put_script, secs)?;
        wasm_runs.0.push(get);
        wasm_runs.1.push(put);
        let (_kvs, port, _dir) = start_kvs(plugins, "grpc", "worker_threads = 2")?;
        grpc_runs.0.push(grpc_load(port, false, secs)?);
        grpc_runs.1.push(grpc_load(port, true, secs)?);
        if let Some(r) = &redis {
            redis_runs.0.push(r.benchmark("get", 32, 300_000)?);
            redis_runs.1.push(r.benchmark("set", 32, 100_000)?);
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

/// GET and durable PUT rates through an HTTP frontend in a fresh kvs, with wrk.
fn http_load(
    plugins: &Path,
    frontend: &str,
    extra: &str,
    put_script: &Path,
    secs: u64,
) -> Result<(f64, f64)> {
    let (_kvs, port, _dir) = start_kvs(plugins, frontend, extra)?;
    let url = format!("http://127.0.0.1:{port}");
    seed_hot(&url)?;
    Ok((
        wrk(&format!("{url}/v1/key/hot"), None, secs)?,
        wrk(&format!("{url}/v1/key/k"), Some(put_script), secs)?,
    ))
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(runs: &[f64]) -> f64 {
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
fn start_kvs(
    plugins: &Path,
    frontend: &str,
    extra: &str,
) -> Result<(KillOnDrop, u16, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_path_buf();
    let port = free_port()?;
    let config = data.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"file\"\nfrontends = [{frontend:?}]\n\
             [plugins.file]\npath = {:?}\nsync = \"always\"\ncompact_min_bytes = 1073741824\n\
             [plugins.{frontend}]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n",
            data.join("kvs.log")
        ),
    )?;
    let kvs_bin = std::env::current_exe()?.parent().unwrap().join("kvs");
    let mut kvs = KillOnDrop(
        Command::new(&kvs_bin)
            .arg("--config")
            .arg(&config)
            .arg("--plugins-dir")
            .arg(plugins)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", kvs_bin.display()))?,
    );
    wait_for_port(port, &mut kvs.0)?;
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

/// 32 concurrent unary calls (over 4 HTTP/2 connections) for `secs`; calls per second.
fn grpc_load(port: u16, put: bool, secs: u64) -> Result<f64> {
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
        Ok(total as f64 / started.elapsed().as_secs_f64())
    })
}

fn wrk(url: &str, script: Option<&Path>, secs: u64) -> Result<f64> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", "32", "-d", &format!("{secs}s")]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

fn which(tool: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(tool))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("{tool} not found on PATH"))
}

fn wait_for_port(port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on port {port} after 30 s")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A throwaway redis-server with `appendfsync always`, the durable setting comparable to
/// kvs's `sync = "always"`.
struct Redis {
    _server: KillOnDrop,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Redis {
    fn start() -> Result<Redis> {
        which("redis-server")?;
        which("redis-benchmark")?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut server = KillOnDrop(
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()?,
        );
        wait_for_port(port, &mut server.0)?;
        Ok(Redis {
            _server: server,
            _dir: dir,
            port,
        })
    }

    /// `redis-benchmark -t OP -c CLIENTS`; requests per second.
    fn benchmark(&self, op: &str, clients: usize, requests: usize) -> Result<f64> {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-t",
                op,
                "-c",
                &clients.to_string(),
            ])
            .args([
                "-n",
                &requests.to_string(),
                "-d",
                &VALUE_BYTES.to_string(),
                "-r",
                "10000",
                "-q",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
        text.lines()
            .rev()
            .find(|l| l.contains("requests per second"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no rate in redis-benchmark output:\n{text}"))
    }
}
