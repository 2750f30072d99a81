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
//! * `kvs-bench security` / `observability`: REST GET and durable PUT with kvs set up
//!   different ways (TLS, JWT; metrics, traces), side by side with the server's CPU time
//!   per request (`variants.rs`).
//! * `kvs-bench resp`: like for like with Redis — `redis-benchmark` SET and GET at
//!   `-P 1` and `-P 16` against Redis (`appendfsync always`), kvs's `resp` frontend and
//!   the `wasm-resp` guest (`sync = always`), with the server's CPU per request.
//! * `kvs-bench cluster`: durable PUTs through 1 and 3 kvs nodes on a 3-member etcd
//!   cluster (the `etcd` logger) next to etcd's own put rate, and a node's local GETs.
//! * `kvs-bench memory`: resident memory per key after loading 1M keys, next to Redis's
//!   `used_memory` and RSS for the same keys and values.
//! * `kvs-bench instructions`: user-space instructions per GET and durable PUT/SET,
//!   counted by valgrind's callgrind, for the REST, WASM REST and RESP frontends and
//!   Redis: the figure that does not move with the machine's load.
//! * `kvs-bench soak [--minutes N]` (`cargo xtask soak`): mixed load on every kind of
//!   frontend, with reloads and reconnecting clients, printing kvs's memory, open files,
//!   threads and p99 per interval; fails if they grow.
//! * `kvs-bench backup`: `kvs backup` and `kvs restore` of 1M keys next to Redis's
//!   `redis-cli --rdb` and `DEBUG RELOAD` on the same data.
//! * `kvs-bench overload`: 1x, 3x and 10x the sustained durable write rate offered by
//!   greedy gRPC clients beside one polite client: goodput, latencies, refusals, RSS.
//!
//! Run it through `cargo xtask bench [writes|rest|resp|cluster|security|observability|memory|instructions|backup|overload]`, which builds in release mode and
//! stages the plug-ins. Everything listens on 127.0.0.1 and stops by itself.

mod backup;
mod cluster;
mod instructions;
mod memory;
mod overload;
mod redis;
mod resp;
mod rest;
mod soak;
mod variants;
mod writes;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const VALUE_BYTES: usize = 100;

fn main() -> Result<()> {
    // The postgres logger reads its password from the environment; set it before any
    // thread exists.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("KVS_POSTGRES_PASSWORD", kvs_testkit::pg::PASSWORD) };
    let mode = std::env::args().nth(1).unwrap_or_else(|| "writes".into());
    let plugins = plugins_dir()?;
    match mode.as_str() {
        "writes" => writes::writes(&plugins),
        "rest" => rest::rest(&plugins),
        "security" => variants::security(&plugins),
        "observability" => variants::observability(&plugins),
        "memory" => memory::memory(&plugins),
        "resp" => resp::resp(&plugins),
        "cluster" => cluster::cluster(&plugins),
        "instructions" => instructions::instructions(&plugins),
        "backup" => backup::backup(&plugins),
        "overload" => overload::overload(&plugins),
        "soak" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let minutes = match args.as_slice() {
                [] => 1.0,
                [flag, n] if flag == "--minutes" => n
                    .parse::<f64>()
                    .ok()
                    .filter(|m| *m > 0.0)
                    .context("--minutes takes a positive number")?,
                _ => bail!("usage: kvs-bench soak [--minutes N]"),
            };
            soak::soak(&plugins, minutes)
        }
        other => bail!(
            "unknown benchmark {other:?}: use `writes`, `rest`, `resp`, `cluster`, `security`, `observability`, `memory`, `instructions`, `backup` or `overload`"
        ),
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

fn which(tool: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(tool))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("{tool} not found on PATH"))
}

fn wait_for_port(port: u16, child: &mut Child, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "nothing listening on port {port} after {} s",
        patience.as_secs()
    )
}

/// `program`, run by the command `wrapper` (e.g. `valgrind --tool=callgrind`) unless it
/// is empty; and how long to wait for it to listen (a wrapped server starts ~50x slower).
fn command_under(wrapper: &[&str], program: impl AsRef<std::ffi::OsStr>) -> (Command, Duration) {
    match wrapper.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(program);
            (c, Duration::from_secs(300))
        }
        None => (Command::new(program), Duration::from_secs(30)),
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
