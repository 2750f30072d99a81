//! `kvs-bench security`: what TLS and bearer tokens cost. REST GET and durable PUT with
//! wrk (32 keep-alive connections) against four fresh kvs processes per round —
//! plaintext, TLS, JWT (HS256, with a role check), TLS + JWT — taking turns, with the
//! server's CPU time per request beside req/s (the steadier figure on a shared 2-core
//! machine, where wrk competes with the server for the cores).

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::rest::{median, start_kvs};
use crate::{VALUE_BYTES, which};

/// One way of running kvs: its frontend-table additions, and how wrk reaches it.
struct Variant {
    name: &'static str,
    tls: bool,
    jwt: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "plaintext",
        tls: false,
        jwt: false,
    },
    Variant {
        name: "TLS",
        tls: true,
        jwt: false,
    },
    Variant {
        name: "JWT",
        tls: false,
        jwt: true,
    },
    Variant {
        name: "TLS + JWT",
        tls: true,
        jwt: true,
    },
];

/// One wrk run: requests per second, and the server's CPU microseconds per request.
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    cpu_us: f64,
}

pub(crate) fn security(plugins: &Path) -> Result<()> {
    which("wrk").context("wrk is needed: apt-get install wrk")?;
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
    let put_script = dir.join("put.lua");
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
        "== security: REST, 32 wrk connections (keep-alive: one TLS handshake each), \
         {VALUE_BYTES}-byte values,\n   file logger with sync = always, loopback. TLS: \
         rustls, ECDSA P-256 certificate. JWT: HS256,\n   verified and role-checked on every \
         request. {rounds} rounds of {secs}s runs, variants taking turns;\n   medians. CPU: \
         the kvs process's user+system time per request served."
    );
    let mut runs: Vec<(Vec<Run>, Vec<Run>)> = VARIANTS.iter().map(|_| Default::default()).collect();
    for _ in 0..rounds {
        for (variant, (gets, puts)) in VARIANTS.iter().zip(runs.iter_mut()) {
            let mut extra = String::from("worker_threads = 2\n");
            if variant.tls {
                extra.push_str(&format!(
                    "tls = {{ cert = {:?}, key = {:?} }}\n",
                    dir.join("server.pem"),
                    dir.join("server.key")
                ));
            }
            if variant.jwt {
                extra.push_str(&format!(
                    "[auth]\nenabled = true\n[auth.jwt]\nhs256_secret_file = {:?}\n\
                     [auth.roles.all]\nread = [\"*\"]\nwrite = [\"*\"]\n\
                     [auth.principals]\nbench = [\"all\"]\n",
                    dir.join("jwt.secret")
                ));
            }
            let (kvs, port, _data) = start_kvs(plugins, "rest", &extra)?;
            let scheme = if variant.tls { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}/v1/key");
            let header = variant
                .jwt
                .then(|| format!("Authorization: Bearer {token}"));
            seed(&url, header.as_deref())?;
            let pid = kvs.0.id();
            gets.push(wrk(
                &format!("{url}/hot"),
                None,
                header.as_deref(),
                secs,
                pid,
            )?);
            puts.push(wrk(
                &format!("{url}/k"),
                Some(&put_script),
                header.as_deref(),
                secs,
                pid,
            )?);
        }
    }
    println!(
        "{:>12}  {:>10}  {:>10}  {:>12}  {:>10}  {:>10}  {:>12}",
        "variant",
        "GET req/s",
        "GET us/req",
        "GET vs plain",
        "PUT req/s",
        "PUT us/req",
        "PUT vs plain"
    );
    let summary: Vec<(Run, Run)> = runs
        .iter()
        .map(|(g, p)| (median_run(g), median_run(p)))
        .collect();
    let (plain_get, plain_put) = summary[0];
    for (variant, (get, put)) in VARIANTS.iter().zip(&summary) {
        println!(
            "{:>12}  {:>10.0}  {:>10.1}  {:>11.2}x  {:>10.0}  {:>10.1}  {:>11.2}x",
            variant.name,
            get.rate,
            get.cpu_us,
            get.rate / plain_get.rate,
            put.rate,
            put.cpu_us,
            put.rate / plain_put.rate
        );
    }
    println!("\n   every round, req/s (server CPU us per request):");
    for (variant, (gets, puts)) in VARIANTS.iter().zip(&runs) {
        for (op, list) in [("GET", gets), ("PUT", puts)] {
            let shown: Vec<String> = list
                .iter()
                .map(|r| format!("{:.0} ({:.1})", r.rate, r.cpu_us))
                .collect();
            println!(
                "   {:>16}: {}",
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
    Run {
        rate: median(&rates),
        cpu_us: median(&cpu),
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

/// The process's user + system CPU time so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and
    // 15th fields of the whole line.
    let after = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn ticks_per_second() -> Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn wrk(url: &str, script: Option<&Path>, header: Option<&str>, secs: u64, pid: u32) -> Result<Run> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", "32", "-d", &format!("{secs}s")]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let before = cpu_ticks(pid)?;
    let out = cmd.arg(url).output()?;
    let cpu_secs = (cpu_ticks(pid)? - before) as f64 / ticks_per_second()?;
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
    Ok(Run {
        rate,
        cpu_us: cpu_secs * 1e6 / requests,
    })
}
