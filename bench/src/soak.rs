//! `kvs-bench soak --minutes N` (`cargo xtask soak`): mixed load on every kind of
//! frontend for N minutes, watching kvs's resources.
//!
//! One kvs (file logger, `sync = "always"`, compacting every 256 KiB of log) serves
//! `rest`, `grpc`, `resp`, `wasm-rest` and `wasm-resp`. Each frontend gets clients that
//! put, get and delete over 10,000 keys with values of 10 to 2000 bytes, and that hang
//! up and connect again every few hundred requests; every 15 s the config is reloaded
//! (`kvs reload`, alternating a limit, so the reload changes something). Every interval
//! (10 s for soaks up to 2 minutes, else 1 minute) it prints kvs's resident memory, open
//! files and threads, and per frontend the requests and the p99 latency in that interval.
//!
//! Afterwards it fails if any resource grew without bound: past the first third (warm-up),
//! the last sample may exceed the lowest by at most 64 MiB + 25 % of RSS, 64 open files
//! and 8 threads. Clients only talk to 127.0.0.1 and everything stops by itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{KillOnDrop, free_port, wait_for_port};

const KEYS: u64 = 10_000;
const FRONTENDS: [&str; 5] = ["rest", "grpc", "resp", "wasm-rest", "wasm-resp"];
/// Requests a client makes on one connection before it hangs up and connects again.
const REQUESTS_PER_CONNECTION: u64 = 300;

/// Latencies recorded in the current interval, per frontend.
#[derive(Default)]
struct Window {
    latencies: Vec<Vec<Duration>>,
    errors: Vec<u64>,
}

/// A small xorshift generator: each client its own, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

enum Op {
    Put(String, Vec<u8>),
    Get(String),
    Delete(String),
}

fn op(rng: &mut Rng) -> Op {
    let key = format!("soak:{}", rng.next() % KEYS);
    match rng.next() % 10 {
        0..=3 => {
            let len = 10 + (rng.next() % 1990) as usize;
            Op::Put(key, vec![b'a' + (rng.next() % 26) as u8; len])
        }
        4..=8 => Op::Get(key),
        _ => Op::Delete(key),
    }
}

/// One HTTP/1.1 request on a keep-alive connection; the status.
fn http(stream: &mut BufReader<TcpStream>, op: &Op) -> Result<u16> {
    let (method, key, body): (&str, &str, &[u8]) = match op {
        Op::Put(k, v) => ("PUT", k, v),
        Op::Get(k) => ("GET", k, &[]),
        Op::Delete(k) => ("DELETE", k, &[]),
    };
    let head = format!(
        "{method} /v1/key/{key} HTTP/1.1\r\nHost: soak\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let out = stream.get_mut();
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

/// One RESP command; whether the reply was not an error.
fn resp(stream: &mut BufReader<TcpStream>, op: &Op) -> Result<bool> {
    let args: Vec<&[u8]> = match op {
        Op::Put(k, v) => vec![b"SET", k.as_bytes(), v],
        Op::Get(k) => vec![b"GET", k.as_bytes()],
        Op::Delete(k) => vec![b"DEL", k.as_bytes()],
    };
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for a in &args {
        command.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        command.extend_from_slice(a);
        command.extend_from_slice(b"\r\n");
    }
    stream.get_mut().write_all(&command)?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    match line.as_bytes().first() {
        Some(b'$') => {
            let len: i64 = line[1..].trim().parse()?;
            if len >= 0 {
                let mut body = vec![0; len as usize + 2];
                stream.read_exact(&mut body)?;
            }
            Ok(true)
        }
        Some(b'+' | b':') => Ok(true),
        Some(b'-') => Ok(false),
        _ => bail!("not a RESP reply: {line:?}"),
    }
}

fn connect(port: u16) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

/// A client of frontend `f` on `port` until `stop`; records into `window`.
fn client(f: usize, port: u16, seed: u64, stop: Arc<AtomicBool>, window: Arc<Mutex<Window>>) {
    let mut rng = Rng(seed | 1);
    let grpc = FRONTENDS[f] == "grpc";
    let runtime = grpc.then(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    });
    while !stop.load(Ordering::Relaxed) {
        let mut stream = None;
        let mut grpc_client = None;
        for _ in 0..REQUESTS_PER_CONNECTION {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let op = op(&mut rng);
            let started = Instant::now();
            let ok = if let Some(rt) = &runtime {
                rt.block_on(grpc_call(&mut grpc_client, port, &op)).is_ok()
            } else {
                let s = match &mut stream {
                    Some(s) => s,
                    None => match connect(port) {
                        Ok(s) => stream.insert(s),
                        Err(_) => {
                            window.lock().unwrap().errors[f] += 1;
                            std::thread::sleep(Duration::from_millis(100));
                            break;
                        }
                    },
                };
                match FRONTENDS[f] {
                    "resp" | "wasm-resp" => resp(s, &op).unwrap_or(false),
                    _ => http(s, &op).is_ok_and(|status| status < 500),
                }
            };
            let took = started.elapsed();
            let mut w = window.lock().unwrap();
            w.latencies[f].push(took);
            if !ok {
                w.errors[f] += 1;
                drop(w);
                break; // a fresh connection after an error
            }
        }
        // Hang up (dropping the stream or channel) and come back.
    }
}

async fn grpc_call(
    client: &mut Option<kvs_proto::v1::key_value_client::KeyValueClient<tonic::transport::Channel>>,
    port: u16,
    op: &Op,
) -> Result<()> {
    use kvs_proto::v1::{DeleteRequest, GetRequest, PutRequest, key_value_client::KeyValueClient};
    if client.is_none() {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        *client = Some(KeyValueClient::new(channel));
    }
    let c = client.as_mut().expect("just set");
    let result = match op {
        Op::Put(k, v) => c
            .put(PutRequest {
                key: k.clone().into_bytes(),
                value: v.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Op::Get(k) => match c
            .get(GetRequest {
                key: k.clone().into_bytes(),
            })
            .await
        {
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            other => other.map(|_| ()),
        },
        Op::Delete(k) => match c
            .delete(DeleteRequest {
                key: k.clone().into_bytes(),
                ..Default::default()
            })
            .await
        {
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            other => other.map(|_| ()),
        },
    };
    result.map_err(|s| {
        *client = None;
        anyhow::anyhow!("{s}")
    })
}

/// kvs's resident memory (bytes), open files and threads.
fn resources(pid: u32) -> Result<(u64, usize, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let files = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((field("VmRSS:")? * 1024, files, field("Threads:")? as usize))
}

fn p99(latencies: &mut [Duration]) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

pub(crate) fn soak(plugins: &Path, minutes: f64) -> Result<()> {
    let total = Duration::from_secs_f64(minutes * 60.0);
    let interval = if minutes <= 2.0 {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(60)
    };
    let dir = tempfile::tempdir()?;
    let ports: Vec<u16> = FRONTENDS
        .iter()
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let admin_port = free_port()?;
    let config = dir.path().join("config.toml");
    let write_config = |max_key_bytes: u64| -> Result<()> {
        let mut text = format!(
            "logger = \"file\"\nfrontends = {FRONTENDS:?}\n[limits]\nmax_key_bytes = \
             {max_key_bytes}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [plugins.file]\npath = {:?}\nsync = \"always\"\ncompact_min_bytes = 262144\n",
            dir.path().join("kvs.log"),
        );
        for (f, port) in FRONTENDS.iter().zip(&ports) {
            text.push_str(&format!("[plugins.{f}]\nlisten = \"127.0.0.1:{port}\"\n"));
        }
        std::fs::write(&config, text)?;
        Ok(())
    };
    write_config(1024)?;
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
    for port in &ports {
        wait_for_port(*port, &mut kvs.0, Duration::from_secs(60))?;
    }
    let pid = kvs.0.id();
    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Mutex::new(Window {
        latencies: vec![Vec::new(); FRONTENDS.len()],
        errors: vec![0; FRONTENDS.len()],
    }));
    let mut clients = Vec::new();
    for (f, port) in ports.iter().enumerate() {
        for c in 0..3u64 {
            let (stop, window, port) = (stop.clone(), window.clone(), *port);
            let seed = 0x9E37_79B9_7F4A_7C15 ^ ((f as u64) << 8 | c);
            clients.push(std::thread::spawn(move || {
                client(f, port, seed, stop, window)
            }));
        }
    }
    println!(
        "== soak: {:.1} min of mixed load on {} (3 clients each, reconnecting every {} \
         requests), reloads every 15 s",
        minutes,
        FRONTENDS.join(", "),
        REQUESTS_PER_CONNECTION
    );
    print!(
        "{:>6}  {:>8}  {:>6}  {:>7}",
        "t (s)", "RSS MB", "files", "threads"
    );
    for f in FRONTENDS {
        print!("  {:>22}", format!("{f} req / p99 ms / err"));
    }
    println!();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next_reload = started + Duration::from_secs(15);
    let mut reloads = 0u64;
    let mut next_sample = started + interval;
    let admin = format!("http://127.0.0.1:{admin_port}");
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(Some(status)) = kvs.0.try_wait() {
            stop.store(true, Ordering::Relaxed);
            bail!("kvs exited during the soak: {status}");
        }
        if Instant::now() >= next_reload {
            reloads += 1;
            write_config(if reloads % 2 == 1 { 2048 } else { 1024 })?;
            let out = Command::new(&kvs_bin)
                .args(["reload", "--admin", &admin])
                .output()?;
            if !out.status.success() {
                stop.store(true, Ordering::Relaxed);
                bail!(
                    "kvs reload failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            next_reload += Duration::from_secs(15);
        }
        if Instant::now() >= next_sample {
            next_sample += interval;
            let (rss, files, threads) = resources(pid)?;
            let mut w = window.lock().unwrap();
            print!(
                "{:>6.0}  {:>8.1}  {:>6}  {:>7}",
                started.elapsed().as_secs_f64(),
                rss as f64 / 1e6,
                files,
                threads
            );
            for f in 0..FRONTENDS.len() {
                let n = w.latencies[f].len();
                let p = p99(&mut w.latencies[f]);
                print!(
                    "  {:>22}",
                    format!("{n} / {:.1} / {}", p.as_secs_f64() * 1e3, w.errors[f])
                );
                w.latencies[f].clear();
                w.errors[f] = 0;
            }
            println!();
            samples.push((rss, files, threads));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while kvs.0.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("kvs did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check_flat(&samples)
}

/// Fails if, past the first third of the samples, the last one exceeds the lowest by
/// more than the slack the module documentation states.
fn check_flat(samples: &[(u64, usize, usize)]) -> Result<()> {
    if samples.len() < 3 {
        bail!("too few samples ({}) to judge growth", samples.len());
    }
    let settled = &samples[samples.len() / 3..];
    let last = settled[settled.len() - 1];
    let low_rss = settled.iter().map(|s| s.0).min().unwrap_or(0);
    let low_files = settled.iter().map(|s| s.1).min().unwrap_or(0);
    let low_threads = settled.iter().map(|s| s.2).min().unwrap_or(0);
    let mut grew = Vec::new();
    if last.0 > low_rss + (64 << 20) + low_rss / 4 {
        grew.push(format!(
            "RSS {} -> {} MB",
            low_rss / 1_000_000,
            last.0 / 1_000_000
        ));
    }
    if last.1 > low_files + 64 {
        grew.push(format!("open files {low_files} -> {}", last.1));
    }
    if last.2 > low_threads + 8 {
        grew.push(format!("threads {low_threads} -> {}", last.2));
    }
    if !grew.is_empty() {
        bail!("kvs grew during the soak: {}", grew.join(", "));
    }
    println!(
        "flat after warm-up: RSS {:.1} MB (lowest {:.1}), {} open files (lowest {low_files}), {} \
         threads (lowest {low_threads})",
        last.0 as f64 / 1e6,
        low_rss as f64 / 1e6,
        last.1,
        last.2
    );
    Ok(())
}
