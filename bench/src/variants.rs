//! Side-by-side REST benchmarks of kvs configured different ways, each with the server's
//! CPU time per request beside req/s (the steadier figure on a shared 2-core machine,
//! where wrk competes with the server for the cores). wrk, 32 keep-alive connections;
//! a fresh kvs per variant per round, the variants taking turns; medians of the rounds.
//!
//! * `kvs-bench security`: plaintext, TLS, JWT (HS256 + a role check), TLS + JWT.
//! * `kvs-bench observability`: metrics on (admin listener) vs off, and traces exported
//!   to a local OTLP sink vs not.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::rest::{median, put_script, start_kvs};
use crate::{VALUE_BYTES, which};

/// One way of running kvs.
struct Variant {
    name: &'static str,
    /// Lines for the frontend's table (and tables after it).
    extra: String,
    tls: bool,
    /// A header wrk sends with every request.
    header: Option<String>,
}

/// One wrk run: requests per second, and the server's CPU microseconds per request.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    pub(crate) rate: f64,
    /// The server's CPU time (user + system) per request, microseconds.
    pub(crate) cpu_us: f64,
    /// Its user-space part (the rest is the kernel's: TCP, fsync, wake-ups).
    pub(crate) user_us: f64,
}

pub(crate) fn security(plugins: &Path) -> Result<()> {
    which("openssl").context("openssl is needed: apt-get install openssl")?;
    let files = tempfile::tempdir()?;
    let dir = files.path();
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()?
        .status
        .success();
    if !ok {
        bail!("openssl could not make a certificate");
    }
    let secret = [b'k'; 48];
    std::fs::write(dir.join("jwt.secret"), secret)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "bench", "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(&secret)?,
    )?;
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}\n",
        dir.join("server.pem"),
        dir.join("server.key")
    );
    let auth = format!(
        "[auth]\nenabled = true\n[auth.jwt]\nhs256_secret_file = {:?}\n\
         [auth.roles.all]\nread = [\"*\"]\nwrite = [\"*\"]\n[auth.principals]\nbench = [\"all\"]\n",
        dir.join("jwt.secret")
    );
    let bearer = Some(format!("Authorization: Bearer {token}"));
    compare(
        plugins,
        "security: TLS (rustls, ECDSA P-256 certificate; keep-alive: one handshake per \
         connection) and JWT (HS256, verified once per token, then cached; a role check on \
         every request)",
        vec![
            Variant {
                name: "plaintext",
                extra: String::new(),
                tls: false,
                header: None,
            },
            Variant {
                name: "TLS",
                extra: tls.clone(),
                tls: true,
                header: None,
            },
            Variant {
                name: "JWT",
                extra: auth.clone(),
                tls: false,
                header: bearer.clone(),
            },
            Variant {
                name: "TLS + JWT",
                extra: format!("{tls}{auth}"),
                tls: true,
                header: bearer,
            },
        ],
    )
}

pub(crate) fn observability(plugins: &Path) -> Result<()> {
    // A sink for OTLP/HTTP: accepts and drops what kvs exports, so the cost measured
    // is kvs's (spans, batching, encoding, sending), not a collector's.
    let sink = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sink_url = format!("http://{}", sink.local_addr()?);
    std::thread::spawn(move || otlp_sink(sink));
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n".to_string();
    let traces = format!("[telemetry]\notlp_endpoint = {sink_url:?}\n");
    compare(
        plugins,
        "observability: per-request metrics are recorded only when the admin listener is \
         on; traces: every request sampled and exported over OTLP/HTTP to a local sink",
        vec![
            Variant {
                name: "metrics off",
                extra: String::new(),
                tls: false,
                header: None,
            },
            Variant {
                name: "metrics on",
                extra: admin.clone(),
                tls: false,
                header: None,
            },
            Variant {
                name: "metrics+traces",
                extra: format!("{admin}{traces}"),
                tls: false,
                header: None,
            },
        ],
    )
}

/// Answers every HTTP request 200 with an empty body (enough for an OTLP exporter).
fn otlp_sink(listener: std::net::TcpListener) {
    use std::io::{BufRead, BufReader, Read, Write};
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(reply).is_err() {
                    return;
                }
            }
        });
    }
}

/// Runs every variant, taking turns, and prints the table.
fn compare(plugins: &Path, title: &str, variants: Vec<Variant>) -> Result<()> {
    which("wrk").context("wrk is needed: apt-get install wrk")?;
    let files = tempfile::tempdir()?;
    let put_script = put_script(files.path())?;
    let secs = 5;
    let rounds = 3;
    println!(
        "== {title}.\n   REST, 32 wrk connections, {VALUE_BYTES}-byte values, file logger with \
         sync = always, loopback;\n   {rounds} rounds of {secs}s runs, variants taking turns; \
         medians. CPU: the kvs process's\n   user+system time per request served."
    );
    let mut runs: Vec<(Vec<Run>, Vec<Run>)> = variants.iter().map(|_| Default::default()).collect();
    for _ in 0..rounds {
        for (variant, (gets, puts)) in variants.iter().zip(runs.iter_mut()) {
            let extra = format!("worker_threads = 2\n{}", variant.extra);
            let (kvs, port, _data) = start_kvs(plugins, "rest", &extra)?;
            let scheme = if variant.tls { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}/v1/key");
            let header = variant.header.as_deref();
            seed(&url, header)?;
            let pid = kvs.0.id();
            gets.push(wrk(&format!("{url}/hot"), None, header, secs, pid)?);
            puts.push(wrk(
                &format!("{url}/k"),
                Some(&put_script),
                header,
                secs,
                pid,
            )?);
        }
    }
    println!(
        "{:>15}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
        "variant", "GET req/s", "GET us/req", "GET ratio", "PUT req/s", "PUT us/req", "PUT ratio"
    );
    let summary: Vec<(Run, Run)> = runs
        .iter()
        .map(|(g, p)| (median_run(g), median_run(p)))
        .collect();
    let (base_get, base_put) = summary[0];
    for (variant, (get, put)) in variants.iter().zip(&summary) {
        println!(
            "{:>15}  {:>10.0}  {:>10.1}  {:>9.2}x  {:>10.0}  {:>10.1}  {:>9.2}x",
            variant.name,
            get.rate,
            get.cpu_us,
            get.rate / base_get.rate,
            put.rate,
            put.cpu_us,
            put.rate / base_put.rate
        );
    }
    println!("\n   every round, req/s (server CPU us per request):");
    for (variant, (gets, puts)) in variants.iter().zip(&runs) {
        for (op, list) in [("GET", gets), ("PUT", puts)] {
            let shown: Vec<String> = list
                .iter()
                .map(|r| format!("{:.0} ({:.1})", r.rate, r.cpu_us))
                .collect();
            println!(
                "   {:>19}: {}",
                format!("{} {op}", variant.name),
                shown.join("  ")
            );
        }
    }
    Ok(())
}

fn median_run(runs: &[Run]) -> Run {
    let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
    let cpu: Vec<f64> = runs.iter().map(|r| r.cpu_us).collect();
    let user: Vec<f64> = runs.iter().map(|r| r.user_us).collect();
    Run {
        rate: median(&rates),
        cpu_us: median(&cpu),
        user_us: median(&user),
    }
}

/// Stores the value the GET runs read.
fn seed(url: &str, header: Option<&str>) -> Result<()> {
    let mut curl = Command::new("curl");
    curl.args([
        "-sfk",
        "-X",
        "PUT",
        "--data-binary",
        &"x".repeat(VALUE_BYTES),
    ]);
    if let Some(h) = header {
        curl.args(["-H", h]);
    }
    if !curl.arg(format!("{url}/hot")).status()?.success() {
        bail!("seeding {url}/hot failed");
    }
    Ok(())
}

/// A process's CPU time so far, in clock ticks (the default: none, so
/// `per_request_since` gives the whole time so far).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuTime {
    user: u64,
    system: u64,
}

impl CpuTime {
    /// Reads `/proc/<pid>/stat`.
    pub(crate) fn of(pid: u32) -> Result<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are the 14th and
        // 15th fields of the whole line.
        let after = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        Ok(CpuTime {
            user: fields[11].parse()?,
            system: fields[12].parse()?,
        })
    }

    /// CPU microseconds per request since `self`: (user + system, user).
    pub(crate) fn per_request_since(self, pid: u32, requests: f64) -> Result<(f64, f64)> {
        let now = CpuTime::of(pid)?;
        let us_per_tick = 1e6 / ticks_per_second()?;
        let user = (now.user - self.user) as f64 * us_per_tick / requests;
        let system = (now.system - self.system) as f64 * us_per_tick / requests;
        Ok((user + system, user))
    }
}

pub(crate) fn ticks_per_second() -> Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

pub(crate) fn wrk(
    url: &str,
    script: Option<&Path>,
    header: Option<&str>,
    secs: u64,
    pid: u32,
) -> Result<Run> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", "32", "-d", &format!("{secs}s")]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let before = CpuTime::of(pid)?;
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .with_context(|| format!("no request count in wrk output:\n{text}"))?;
    let (cpu_us, user_us) = before.per_request_since(pid, requests)?;
    Ok(Run {
        rate,
        cpu_us,
        user_us,
    })
}
