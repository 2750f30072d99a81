//! `kvs-bench instructions`: user-space instructions per request, counted by
//! valgrind's callgrind — the figure that does not move with the machine's load.
//!
//! Each server (kvs with one frontend, and Redis) runs under callgrind. One client
//! connection sends requests one at a time over loopback: a warm-up, then the counters
//! are zeroed (`callgrind_control -z`), then `REQUESTS` more, then the counters are
//! dumped (`callgrind_control -d`) and their total divided by the requests. Only the
//! server's own instructions are counted (its threads, libraries, JIT-compiled WASM),
//! not the kernel's: the same two system calls per request cost kvs and Redis the same
//! (see `kvs-bench rest`, which prints user and system time apart). Counts repeat to
//! within about 1% from run to run, whatever else the machine is doing. The RESP
//! servers also answer GETs 16 to a write (`GET -P16`, as `redis-benchmark -P 16`
//! sends them), counted per GET: where the WASM guest's per-command cost shows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::redis::Redis;
use crate::rest::start_kvs_under;
use crate::{VALUE_BYTES, which};

/// Requests counted per measurement (after `WARM_UP` uncounted ones).
const REQUESTS: usize = 3000;
const WARM_UP: usize = 300;

/// One request/response exchange on a connection.
type Exchange = fn(&mut Client, usize) -> Result<()>;

pub(crate) fn instructions(plugins: &Path) -> Result<()> {
    which("valgrind").context("valgrind is needed: apt-get install valgrind")?;
    which("callgrind_control").context("callgrind_control is needed (valgrind)")?;
    let out = tempfile::tempdir()?;
    let pattern = out.path().join("callgrind.out.%p");
    let pattern = pattern.to_string_lossy();
    let out_file = format!("--callgrind-out-file={pattern}");
    let wrapper = ["valgrind", "--tool=callgrind", &out_file];
    println!(
        "== user-space instructions per request (valgrind callgrind; one connection, one\n   \
         request at a time, {REQUESTS} counted after {WARM_UP} warm-up; {VALUE_BYTES}-byte values;\n   \
         durable writes: file logger sync = always, Redis appendfsync always). The kernel's\n   \
         share (TCP, fsync) is not counted; it is about the same for both, see `rest`.\n   \
         GET -P16: 16 GETs per write, counted per GET."
    );
    println!(
        "{:>24}  {:>14}  {:>14}  {:>14}  {:>14}",
        "server", "GET instr/req", "PUT instr/req", "INCR instr/req", "GET -P16 /req"
    );
    let http: [(&str, &str, &str); 2] = [
        ("kvs rest (HTTP)", "rest", "worker_threads = 2"),
        ("kvs wasm-rest (HTTP)", "wasm-rest", "pool_size = 8"),
    ];
    for (label, frontend, extra) in http {
        let (kvs, port, _dir) = start_kvs_under(&wrapper, plugins, "file", "", frontend, extra)?;
        let mut client = seeded(port, http_put)?;
        let pid = kvs.0.id();
        let get = count(&mut client, pid, out.path(), http_get)?;
        let put = count(&mut client, pid, out.path(), http_put)?;
        println!("{label:>24}  {get:>14.0}  {put:>14.0}");
    }
    let resp: [(&str, &str, &str); 2] = [
        ("kvs resp (RESP)", "resp", ""),
        (
            "kvs wasm-resp (RESP, WASM)",
            "wasm-resp",
            "memory_max_mb = 16",
        ),
    ];
    for (label, frontend, extra) in resp {
        let (kvs, port, _dir) = start_kvs_under(&wrapper, plugins, "file", "", frontend, extra)?;
        let mut client = seeded(port, resp_set)?;
        let pid = kvs.0.id();
        let row = resp_row(&mut client, pid, out.path())?;
        println!("{label:>24}  {row}");
    }
    match Redis::start_under(&wrapper) {
        Ok(redis) => {
            let mut client = seeded(redis.port(), resp_set)?;
            let row = resp_row(&mut client, redis.pid(), out.path())?;
            println!("{:>24}  {row}", "Redis (RESP)");
        }
        Err(e) => println!("   no Redis side by side: {e:#}"),
    }
    Ok(())
}

/// A RESP server's row: GET, SET and INCR one at a time, and GET in a pipeline.
fn resp_row(client: &mut Client, pid: u32, dir: &Path) -> Result<String> {
    let get = count(client, pid, dir, resp_get)?;
    let set = count(client, pid, dir, resp_set)?;
    let incr = count(client, pid, dir, resp_incr)?;
    let pipelined = count(client, pid, dir, resp_get_pipelined)? / PIPELINE as f64;
    Ok(format!(
        "{get:>14.0}  {set:>14.0}  {incr:>14.0}  {pipelined:>14.0}"
    ))
}

/// Connects and writes the key the GETs read, retrying on a new connection while the
/// server is still starting (under valgrind a frontend may listen well before kvs has
/// finished starting and serves).
fn seeded(port: u16, write: Exchange) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match Client::connect(port).and_then(|mut c| write(&mut c, usize::MAX).map(|()| c)) {
            Ok(client) => return Ok(client),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e.context("the server never accepted a write")),
        }
    }
}

/// Warms up, zeroes the server's counters, runs `REQUESTS` exchanges, dumps the
/// counters: instructions per request.
fn count(client: &mut Client, pid: u32, dir: &Path, exchange: Exchange) -> Result<f64> {
    for i in 0..WARM_UP {
        exchange(client, i)?;
    }
    callgrind_control("-z", pid)?;
    for i in 0..REQUESTS {
        exchange(client, i)?;
    }
    let before = dumps(dir, pid)?;
    callgrind_control("-d", pid)?;
    let dump = dumps(dir, pid)?
        .into_iter()
        .find(|d| !before.contains(d))
        .context("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&dump)?;
    keep(&dump)?;
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no summary in {}", dump.display()))?;
    Ok(total as f64 / REQUESTS as f64)
}

/// Copies a dump into `$KVS_BENCH_CALLGRIND_KEEP` when it is set, for reading with
/// `callgrind_annotate` (which functions the instructions went to).
fn keep(dump: &Path) -> Result<()> {
    let Some(dir) = std::env::var_os("KVS_BENCH_CALLGRIND_KEEP") else {
        return Ok(());
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let name = dump.file_name().context("a dump has a name")?;
    std::fs::copy(dump, dir.join(name))
        .with_context(|| format!("copying {} into {}", dump.display(), dir.display()))?;
    println!("   kept {}", dir.join(name).display());
    Ok(())
}

fn callgrind_control(what: &str, pid: u32) -> Result<()> {
    let out = Command::new("callgrind_control")
        .arg(what)
        .arg(pid.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "callgrind_control {what} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The numbered dumps (`callgrind.out.PID.N`) callgrind has written for `pid`.
fn dumps(dir: &Path, pid: u32) -> Result<Vec<PathBuf>> {
    let prefix = format!("callgrind.out.{pid}.");
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect())
}

/// One keep-alive connection, requests sent one at a time.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the server closed the connection");
        }
        Ok(line)
    }

    /// Sends an HTTP/1.1 request and reads the response; its status.
    fn http(&mut self, method: &str, path: &str, body: &[u8]) -> Result<u16> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(&[head.as_bytes(), body].concat())?;
        let status: u16 = self
            .line()?
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad HTTP status line")?;
        let mut length = 0;
        loop {
            let line = self.line()?;
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }

    /// Sends a RESP command and reads one reply (simple, error, integer or bulk).
    fn resp(&mut self, args: &[&[u8]]) -> Result<()> {
        self.resp_pipelined(args, 1)
    }

    /// Sends a RESP command `times` times in one write, then reads the replies.
    fn resp_pipelined(&mut self, args: &[&[u8]], times: usize) -> Result<()> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&frame.repeat(times))?;
        for _ in 0..times {
            self.reply()?;
        }
        Ok(())
    }

    /// Reads one RESP reply (simple, error, integer or bulk).
    fn reply(&mut self) -> Result<()> {
        let line = self.line()?;
        match line.as_bytes().first() {
            Some(b'$') => {
                let length: i64 = line[1..].trim().parse()?;
                if length >= 0 {
                    let mut body = vec![0; length as usize + 2];
                    self.reader.read_exact(&mut body)?;
                }
                Ok(())
            }
            Some(b'-') => bail!("server answered {}", line.trim()),
            _ => Ok(()),
        }
    }
}

fn http_get(client: &mut Client, _: usize) -> Result<()> {
    match client.http("GET", "/v1/key/hot", b"")? {
        200 => Ok(()),
        status => bail!("GET answered {status}"),
    }
}

/// Writes key `k{i % 1000}`, or the key the GETs read for `usize::MAX`.
fn http_put(client: &mut Client, i: usize) -> Result<()> {
    let path = match i {
        usize::MAX => "/v1/key/hot".to_string(),
        i => format!("/v1/key/k{}", i % 1000),
    };
    match client.http("PUT", &path, &[b'x'; VALUE_BYTES])? {
        201 => Ok(()),
        status => bail!("PUT answered {status}"),
    }
}

fn resp_get(client: &mut Client, _: usize) -> Result<()> {
    client.resp(&[b"GET", b"hot"])
}

/// GETs in one pipeline, as `redis-benchmark -P 16` sends them.
const PIPELINE: usize = 16;

/// [`PIPELINE`] GETs sent at once: `count` of it divided by `PIPELINE` is per GET.
fn resp_get_pipelined(client: &mut Client, _: usize) -> Result<()> {
    client.resp_pipelined(&[b"GET", b"hot"], PIPELINE)
}

fn resp_set(client: &mut Client, i: usize) -> Result<()> {
    let key = match i {
        usize::MAX => "hot".to_string(),
        i => format!("k{}", i % 1000),
    };
    client.resp(&[b"SET", key.as_bytes(), &[b'x'; VALUE_BYTES]])
}

/// A durable `INCR` of one of 1,000 counters (a read-modify-write the writer evaluates).
fn resp_incr(client: &mut Client, i: usize) -> Result<()> {
    let key = format!("n{}", i % 1000);
    client.resp(&[b"INCR", key.as_bytes()])
}
