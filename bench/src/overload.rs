//! `kvs-bench overload`: kvs offered 1x, 3x and 10x the durable write rate that 32
//! connections sending one `SET` at a time sustain, by greedy pipelining clients plus
//! one polite client, over RESP (`SET`, 100-byte values, file logger with `sync =
//! "always"`).
//!
//! RESP because a pipelining client costs about a microsecond per command: this 2-core
//! machine's durable rate is bound by CPU (its fsyncs are fast), and only a cheap
//! client leaves kvs some CPU. Even so the client shares the two cores with kvs, and
//! pipelined writes cost kvs far less each than one-at-a-time ones, so 10x here is not
//! ten times what kvs could take from pipelining clients: that cannot be offered from
//! this machine (said in the output). The greedy clients are open-loop (8 connections, commands sent at a fixed
//! rate whatever the answers, up to 4096 outstanding per connection); the polite one
//! sends one command at a time at 1% of the sustained rate on its own connection.
//! Latencies are the client's: a RESP reply comes in order, so a refusal is also held
//! behind its connection's earlier replies (said in the output).
//!
//! After the load kvs is killed (SIGKILL) and its log read back: every write that was
//! acknowledged must be in it.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kvs_plugin_api::TransactionLogger;

use crate::VALUE_BYTES;
use crate::rest::start_kvs;
use crate::variants::CpuTime;

const GREEDY_CONNECTIONS: u64 = 8;
const MAX_OUTSTANDING: usize = 4096;
const LEVEL: Duration = Duration::from_secs(5);

/// What a client saw.
#[derive(Default)]
struct Seen {
    ok_us: Vec<u32>,
    refused_us: Vec<u32>,
    other_errors: u64,
    acked: Vec<String>,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn set_command(key: &str) -> Vec<u8> {
    let mut c = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${VALUE_BYTES}\r\n",
        key.len()
    )
    .into_bytes();
    c.extend(std::iter::repeat_n(b'x', VALUE_BYTES));
    c.extend_from_slice(b"\r\n");
    c
}

/// Files one reply for the command sent at `sent` with key `key`.
fn record(seen: &mut Seen, line: &str, key: String, sent: Instant) {
    let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    if line.starts_with("+PONG") {
        // The greedy reader's wake-up (see `greedy`), not a write.
    } else if line.starts_with("+OK") {
        seen.ok_us.push(us);
        seen.acked.push(key);
    } else if line.contains("overloaded") {
        seen.refused_us.push(us);
    } else {
        seen.other_errors += 1;
    }
}

fn connect(port: u16) -> Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The polite client: one command at a time, `rate` per second, until `stop`.
fn polite(port: u16, rate: f64, stop: &AtomicBool) -> Result<Seen> {
    let mut stream = connect(port)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut seen = Seen::default();
    let mut next = Instant::now();
    let mut line = String::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("polite-{n}");
        let sent = Instant::now();
        stream.write_all(&set_command(&key))?;
        line.clear();
        reader.read_line(&mut line)?;
        record(&mut seen, &line, key, sent);
        n += 1;
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(seen)
}

/// One greedy connection: commands sent at `rate` per second for `run`, open-loop; a
/// reader thread takes the replies. Returns what it saw and how many commands it did
/// not send because `MAX_OUTSTANDING` were unanswered.
fn greedy(id: u64, port: u16, rate: f64, run: Duration) -> Result<(Seen, u64)> {
    let mut stream = connect(port)?;
    let reader_stream = stream.try_clone()?;
    let outstanding: Arc<Mutex<VecDeque<(String, Instant)>>> = Arc::default();
    let done_sending = Arc::new(AtomicBool::new(false));
    let reader = {
        let (outstanding, done_sending) = (outstanding.clone(), done_sending.clone());
        std::thread::spawn(move || -> Result<Seen> {
            let mut reader = BufReader::new(reader_stream);
            let mut seen = Seen::default();
            let mut line = String::new();
            loop {
                if done_sending.load(Ordering::Acquire) && outstanding.lock().unwrap().is_empty() {
                    return Ok(seen);
                }
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    bail!("kvs closed a greedy connection");
                }
                let (key, sent) = outstanding
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("a reply to a command not sent");
                record(&mut seen, &line, key, sent);
            }
        })
    };
    let started = Instant::now();
    let (mut sent, mut skipped) = (0u64, 0u64);
    let mut buf = Vec::new();
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_millis(1));
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        buf.clear();
        {
            let mut queue = outstanding.lock().unwrap();
            while sent + skipped < due {
                if queue.len() >= MAX_OUTSTANDING {
                    skipped += 1;
                    continue;
                }
                let key = format!("g{id}-{sent}");
                buf.extend(set_command(&key));
                queue.push_back((key, Instant::now()));
                sent += 1;
            }
        }
        stream.write_all(&buf)?;
    }
    done_sending.store(true, Ordering::Release);
    // The reader may be waiting for a reply already in flight: wake it with a PING
    // only if nothing is outstanding (else the last reply ends it).
    if outstanding.lock().unwrap().is_empty() {
        outstanding
            .lock()
            .unwrap()
            .push_back(("ping".into(), Instant::now()));
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    }
    let seen = reader.join().expect("reader panicked")?;
    Ok((seen, skipped))
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

/// The sustained rate: 32 connections with one command in flight each, for 4 s.
fn sustained(port: u16) -> Result<f64> {
    let until = Instant::now() + Duration::from_secs(4);
    let started = Instant::now();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            std::thread::spawn(move || -> Result<u64> {
                let mut stream = connect(port)?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut line = String::new();
                let mut ok = 0;
                while Instant::now() < until {
                    stream.write_all(&set_command(&format!("c{t}-{ok}")))?;
                    line.clear();
                    reader.read_line(&mut line)?;
                    if line.starts_with("+OK") {
                        ok += 1;
                    }
                }
                Ok(ok)
            })
        })
        .collect();
    let mut ok = 0;
    for t in threads {
        ok += t.join().expect("client panicked")?;
    }
    if ok == 0 {
        bail!("no write succeeded while measuring the sustained rate");
    }
    Ok(ok as f64 / started.elapsed().as_secs_f64())
}

pub(crate) fn overload(plugins: &Path) -> Result<()> {
    for shed_delay_ms in [kvs_host::overload::DEFAULT_SHED_DELAY_MS, 20] {
        run(plugins, shed_delay_ms)?;
    }
    Ok(())
}

fn run(plugins: &Path, shed_delay_ms: u64) -> Result<()> {
    let extra = format!("[writer]\nshed_delay_ms = {shed_delay_ms}\n");
    let (mut kvs, port, dir) = start_kvs(plugins, "resp", &extra)?;
    let pid = kvs.0.id();
    let mut acked: Vec<String> = Vec::new();
    println!(
        "\nkvs-bench overload: RESP SET, {VALUE_BYTES}-byte values, file logger sync = always, \
         shed_delay_ms = {shed_delay_ms}; {} s per level; greedy: {GREEDY_CONNECTIONS} \
         open-loop pipelining connections; polite: one command at a time at 1% of the \
         sustained rate; latencies are the client's (a refusal waits for its connection's \
         earlier replies)",
        LEVEL.as_secs(),
    );
    let capacity = sustained(port)?;
    println!(
        "1x = the durable rate of 32 connections with one SET in flight each: {capacity:.0}/s \
         (pipelined writes cost kvs less each, so the levels are not multiples of what kvs \
         can take from pipelining clients, which this machine cannot offer 10x of)"
    );
    let polite_rate = (capacity / 100.0).max(10.0);
    let stop = AtomicBool::new(false);
    let mut alone = std::thread::scope(|s| {
        let task = s.spawn(|| polite(port, polite_rate, &stop));
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        task.join().expect("polite client panicked")
    })?;
    alone.ok_us.sort_unstable();
    let unloaded_p99 = percentile(&alone.ok_us, 0.99);
    acked.append(&mut alone.acked);
    println!(
        "polite client alone ({polite_rate:.0}/s): p50 {:.2} ms, p99 {unloaded_p99:.2} ms",
        percentile(&alone.ok_us, 0.5)
    );
    println!(
        "{:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10} {:>5} {:>11} {:>8} {:>9}",
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
    for level in [1u64, 3, 10] {
        let offered = capacity * level as f64;
        let cpu = CpuTime::of(pid)?;
        let peak = AtomicU64::new(rss_kib(pid));
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (greedy_results, polite_seen) = std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let polite_task = s.spawn(|| polite(port, polite_rate, &stop));
            let tasks: Vec<_> = (0..GREEDY_CONNECTIONS)
                .map(|id| {
                    let rate = offered / GREEDY_CONNECTIONS as f64;
                    s.spawn(move || greedy(level * 100 + id, port, rate, LEVEL))
                })
                .collect();
            let results: Vec<Result<(Seen, u64)>> = tasks
                .into_iter()
                .map(|t| t.join().expect("greedy client panicked"))
                .collect();
            stop.store(true, Ordering::Relaxed);
            let polite_seen = polite_task.join().expect("polite client panicked");
            sampler.join().expect("sampler panicked");
            (results, polite_seen)
        });
        let secs = started.elapsed().as_secs_f64();
        let polite_seen = &mut polite_seen?;
        let mut seen = Seen::default();
        let mut skipped = 0;
        for result in greedy_results {
            let (mut s, k) = result?;
            seen.ok_us.append(&mut s.ok_us);
            seen.refused_us.append(&mut s.refused_us);
            seen.other_errors += s.other_errors;
            seen.acked.append(&mut s.acked);
            skipped += k;
        }
        seen.ok_us.sort_unstable();
        seen.refused_us.sort_unstable();
        polite_seen.ok_us.sort_unstable();
        let ok = seen.ok_us.len() + polite_seen.ok_us.len();
        let answered = seen.ok_us.len() + seen.refused_us.len();
        let (cpu_us, _) = cpu.per_request_since(pid, ok as f64)?;
        println!(
            "{:>4}x {:>9.0} {:>9.0} {:>7.1}% {:>8.2} {:>8.2} {:>9.2} {:>10} {:>5} {:>8.2} ms {:>5} MiB {:>9.1}",
            level,
            (answered as u64 + skipped) as f64 / secs,
            ok as f64 / secs,
            100.0 * seen.refused_us.len() as f64 / answered.max(1) as f64,
            percentile(&seen.ok_us, 0.5),
            percentile(&seen.ok_us, 0.99),
            percentile(&polite_seen.ok_us, 0.99),
            format!(
                "{}/{}",
                polite_seen.refused_us.len() as u64 + polite_seen.other_errors,
                polite_seen.ok_us.len() + polite_seen.refused_us.len()
            ),
            seen.other_errors,
            percentile(&seen.refused_us, 0.99),
            peak.load(Ordering::Relaxed) / 1024,
            cpu_us,
        );
        if skipped > 0 {
            println!(
                "      ({skipped} commands not sent: a connection had {MAX_OUTSTANDING} unanswered)"
            );
        }
        acked.append(&mut seen.acked);
        acked.append(&mut polite_seen.acked);
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
