//! The Redis protocol: the native `resp` frontend and the `wasm-resp` stream guest,
//! driven by real Redis clients (redis-cli, redis-benchmark, redis-py) and by raw bytes
//! for the inputs no client sends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{Kvs, copy_of_staged_plugins, wasm_module, write_config};

/// Both Redis frontends: every test runs against each.
const FRONTENDS: [&str; 2] = ["resp", "wasm-resp"];

/// A config for the file logger (fsync per batch) and `frontend` on a free port.
pub(crate) fn config(dir: &Path, frontend: &str, extra_table: &str) -> PathBuf {
    config_with(dir, frontend, extra_table, "")
}

/// [`config`] with `top` (top-level tables) too.
fn config_with(dir: &Path, frontend: &str, extra_table: &str, top: &str) -> PathBuf {
    let path = write_config(dir, top);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "frontends = [\"rest\"]",
        &format!("frontends = [{frontend:?}]"),
    ) + &format!("\n[plugins.{frontend}]\nlisten = \"127.0.0.1:0\"\n{extra_table}");
    std::fs::write(&path, text).unwrap();
    path
}

/// The port of a frontend's endpoint (`redis://127.0.0.1:N` or `tcp://127.0.0.1:N`).
pub(crate) fn port(kvs: &Kvs, frontend: &str) -> String {
    let endpoint = kvs.endpoint(frontend);
    endpoint.rsplit(':').next().unwrap().to_string()
}

/// `redis-cli -p PORT ARGS...`: its stdout, trimmed.
pub(crate) fn cli(port: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools) must be installed");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A raw connection with a read timeout, so a test fails rather than hangs.
fn raw(port: &str) -> TcpStream {
    let s = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until `want` bytes arrived (or EOF / timeout, which fail the comparison).
fn read_n(s: &mut TcpStream, want: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads everything until the server closes; panics if it does not within the timeout.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&got).into_owned();
            }
            Err(e) => panic!("the server neither answered nor closed: {e}; got {got:?}"),
        }
    }
}

#[test]
fn redis_cli_sets_gets_deletes_and_reads_info_and_writes_survive_a_restart() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), frontend, "");
        let plugins = crate::util::staged_plugins();
        let kvs = Kvs::start(&config, &plugins, &[]);
        let p = port(&kvs, frontend);
        assert_eq!(cli(&p, &["PING"]), "PONG", "{frontend}");
        assert_eq!(cli(&p, &["SET", "greeting", "hello world"]), "OK");
        assert_eq!(cli(&p, &["GET", "greeting"]), "hello world");
        assert_eq!(cli(&p, &["MSET", "a", "1", "b", "2"]), "OK");
        assert_eq!(cli(&p, &["MGET", "a", "b", "nope"]), "1\n2"); // then an empty line: nil
        assert_eq!(cli(&p, &["EXISTS", "a", "b", "nope"]), "2");
        assert_eq!(cli(&p, &["STRLEN", "greeting"]), "11");
        assert_eq!(cli(&p, &["DEL", "b", "nope"]), "1");
        assert_eq!(cli(&p, &["DBSIZE"]), "2");
        let info = cli(&p, &["INFO"]);
        for want in [
            "# Server",
            "redis_version:",
            "# Clients",
            "# Stats",
            "db0:keys=2",
        ] {
            assert!(info.contains(want), "{frontend} INFO lacks {want}:\n{info}");
        }
        assert!(
            cli(&p, &["FROBNICATE", "x"]).starts_with("ERR unknown command 'FROBNICATE'"),
            "{frontend}"
        );
        assert!(cli(&p, &["SETRANGE", "a", "0", "x"]).contains("not supported by kvs"));
        assert_eq!(
            cli(&p, &["SET", "a", "2", "NX"]),
            "",
            "{frontend}: nil, a exists"
        );
        // A binary value through stdin (-x): every byte value, CR/LF and NUL included.
        let value: Vec<u8> = (0..=255u8).chain(*b"\r\n\0end").collect();
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &p, "-x", "SET", "bin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&value).unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
        let mut s = raw(&p);
        s.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n").unwrap();
        let reply = read_n(&mut s, 6 + value.len() + 2);
        assert!(
            reply.starts_with(&format!("${}\r\n", value.len())),
            "{reply:?}"
        );
        drop(s);
        kvs.stop();

        // Every acknowledged write was durable: a new kvs replays them.
        let kvs = Kvs::start(&config, &plugins, &[]);
        let p = port(&kvs, frontend);
        assert_eq!(cli(&p, &["GET", "greeting"]), "hello world", "{frontend}");
        assert_eq!(cli(&p, &["MGET", "a", "b"]), "1");
        assert_eq!(cli(&p, &["STRLEN", "bin"]), value.len().to_string());
        kvs.stop();
    }
}

#[test]
fn redis_benchmark_runs_to_completion_without_errors() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
        let kvs = Kvs::start(
            &config_with(dir.path(), frontend, "", admin),
            &crate::util::staged_plugins(),
            &[],
        );
        let p = port(&kvs, frontend);
        for pipeline in ["1", "16"] {
            let out = Command::new("redis-benchmark")
                .args(["-h", "127.0.0.1", "-p", &p, "-t", "set,get", "-n", "3000"])
                .args(["-c", "8", "-P", pipeline, "-q"])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{frontend} -P {pipeline}: {stdout}\n{stderr}"
            );
            assert_eq!(
                stdout.matches("requests per second").count(),
                2,
                "{frontend} -P {pipeline}: {stdout}\n{stderr}"
            );
            assert!(
                !stderr.contains("Error") && !stdout.contains("ERR"),
                "{stderr}{stdout}"
            );
        }
        assert_eq!(cli(&p, &["EXISTS", "key:__rand_int__"]), "1");
        // Both frontends commit their own writes (`frontend:commits`; the host does it
        // for a WASM guest): appends are made on the connections' thread, and by the
        // writer thread only when two committers meet (wasm-resp has two threads) or
        // none committed within its watchdog (a starved thread, on a loaded machine).
        let (by_frontend, by_writer) =
            (kvs.writer_batches("frontend"), kvs.writer_batches("writer"));
        assert!(
            by_frontend > 0,
            "{frontend}: {by_frontend} batches committed by the frontend, {by_writer} by the writer thread"
        );
        kvs.stop();
    }
}

/// redis-py (Debian's python3-redis): a pipeline of binary values, read back singly,
/// with MGET and in a second pipeline, then deleted.
const REDIS_PY: &str = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
values = {f"k{i}".encode() + b"\x00\xff": bytes((i + j) % 256 for j in range(i * 7)) + b"\r\n" for i in range(200)}
pipe = r.pipeline(transaction=False)
for k, v in values.items():
    pipe.set(k, v)
assert pipe.execute() == [True] * len(values)
for k, v in values.items():
    assert r.get(k) == v, k
keys = list(values)
assert r.mget(keys) == [values[k] for k in keys]
pipe = r.pipeline(transaction=False)
for k in keys:
    pipe.get(k)
    pipe.delete(k)
    pipe.exists(k)
out = pipe.execute()
for i, k in enumerate(keys):
    assert out[3 * i] == values[k] and out[3 * i + 1] == 1 and out[3 * i + 2] == 0, (k, out[3 * i:3 * i + 3])
assert r.ping()
print("ok")
"#;

#[test]
fn redis_py_pipelines_binary_values() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let kvs = Kvs::start(
            &config(dir.path(), frontend, ""),
            &crate::util::staged_plugins(),
            &[],
        );
        let out = Command::new("/usr/bin/python3")
            .args(["-c", REDIS_PY, &port(&kvs, frontend)])
            .output()
            .expect("python3 with redis-py (Debian package python3-redis)");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "{frontend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        kvs.stop();
    }
}

/// A pipeline cut anywhere — mid-header, mid-argument, between CR and LF — is answered
/// exactly as when it arrives whole (`wasm-resp` decodes a read in place and keeps only
/// an unfinished command, so every cut takes the path that joins the pieces).
#[test]
fn a_pipeline_cut_at_any_byte_is_answered_as_if_whole() {
    let pipeline: &[u8] = b"*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n\
        *2\r\n$3\r\nGET\r\n$2\r\nk1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\nPING\r\n\
        *2\r\n$3\r\nGET\r\n$1\r\nn\r\n";
    let want = "+OK\r\n$5\r\nhello\r\n:CNT\r\n+PONG\r\n$LEN\r\nCNT\r\n";
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let kvs = Kvs::start(
            &config(dir.path(), frontend, ""),
            &crate::util::staged_plugins(),
            &[],
        );
        let p = port(&kvs, frontend);
        let mut s = raw(&p);
        s.set_nodelay(true).unwrap();
        for (round, cut) in (1..pipeline.len()).enumerate() {
            s.write_all(&pipeline[..cut]).unwrap();
            // Let the first piece be read on its own.
            std::thread::sleep(Duration::from_millis(2));
            s.write_all(&pipeline[cut..]).unwrap();
            let n = (round + 1).to_string();
            let want = want.replace("CNT", &n).replace("LEN", &n.len().to_string());
            assert_eq!(read_n(&mut s, want.len()), want, "{frontend}, cut at {cut}");
        }
        kvs.stop();
    }
}

#[test]
fn bad_input_gets_an_error_or_a_clean_close_and_the_server_carries_on() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let kvs = Kvs::start(
            &config(dir.path(), frontend, ""),
            &crate::util::staged_plugins(),
            &[],
        );
        let p = port(&kvs, frontend);

        // A pipeline sees its own writes, in order, answered in order.
        let mut s = raw(&p);
        s.write_all(
            b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n\
              *2\r\n$3\r\nDEL\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\n",
        )
        .unwrap();
        let want = "+OK\r\n$1\r\n1\r\n:1\r\n$-1\r\n+PONG\r\n";
        assert_eq!(read_n(&mut s, want.len()), want, "{frontend}");

        // RESP3: HELLO 3 answers a map; a missing key is a RESP3 null.
        s.write_all(b"HELLO 3\r\n").unwrap();
        let hello = read_n(&mut s, 3);
        assert!(hello.starts_with("%7"), "{frontend}: {hello:?}");
        let mut rest = [0u8; 4096];
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = s.read(&mut rest);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET missing\r\n").unwrap();
        assert_eq!(read_n(&mut s, 3), "_\r\n", "{frontend}");

        // An argument over the value limit (1 MiB) is skipped unread and refused; the
        // connection goes on.
        let big = vec![b'x'; 2 << 20];
        s.write_all(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", big.len()).as_bytes())
            .unwrap();
        s.write_all(&big).unwrap();
        s.write_all(b"\r\nPING\r\n").unwrap();
        let reply = read_n(&mut s, 10);
        assert!(
            reply.starts_with("-ERR argument of 2097152 bytes"),
            "{frontend}: {reply:?}"
        );
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut tail = [0u8; 256];
        let n = s.read(&mut tail).unwrap_or(0);
        let rest = reply + &String::from_utf8_lossy(&tail[..n]);
        assert!(rest.ends_with("+PONG\r\n"), "{frontend}: {rest:?}");
        assert_eq!(cli(&p, &["EXISTS", "k"]), "0");

        // Not RESP: an error, then the server closes.
        for bad in [
            &b"*x\r\n"[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n",
            b"*1\r\n+PING\r\n",
        ] {
            let mut s = raw(&p);
            s.write_all(bad).unwrap();
            let reply = read_to_close(&mut s);
            assert!(
                reply.starts_with("-ERR Protocol error"),
                "{frontend} {bad:?}: {reply:?}"
            );
        }
        // Half a command, then the client goes: the server closes its side too.
        let mut s = raw(&p);
        s.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nab").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_close(&mut s), "", "{frontend}");

        assert_eq!(cli(&p, &["PING"]), "PONG", "{frontend} still serves");
        kvs.stop();
    }
}

#[test]
fn a_stream_guest_that_traps_or_spins_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    let fixture = wasm_module("kvs_wasm_fixture_stream_trap");
    std::fs::copy(&fixture, plugins.join("stream-trap.wasm")).unwrap();
    let config = config(dir.path(), "stream-trap", "call_timeout_ms = 300\n");
    let kvs = Kvs::start(&config, &plugins, &[]);
    let p = port(&kvs, "stream-trap");

    let mut bystander = raw(&p);
    bystander.write_all(b"hello\n").unwrap();
    assert_eq!(read_n(&mut bystander, 8), "1 hello\n");
    for misdeed in ["TRAP\n", "SPIN\n"] {
        let mut culprit = raw(&p);
        culprit.write_all(b"first\n").unwrap();
        assert_eq!(read_n(&mut culprit, 8), "1 first\n");
        culprit.write_all(misdeed.as_bytes()).unwrap();
        assert_eq!(read_to_close(&mut culprit), "", "{misdeed}");
        // The other connection keeps its instance and its state (its line count).
        bystander.write_all(b"still\n").unwrap();
        let n = if misdeed == "TRAP\n" { 2 } else { 3 };
        assert_eq!(
            read_n(&mut bystander, 8),
            format!("{n} still\n"),
            "{misdeed}"
        );
        // New connections get a fresh instance.
        let mut fresh = raw(&p);
        fresh.write_all(b"new\nBYE\n").unwrap();
        assert_eq!(read_to_close(&mut fresh), "1 new\n");
    }
    let log = kvs.stop();
    assert!(log.contains("the guest failed"), "{log}");
}

/// A pipeline whose commands each wait for the log (INCRs: the guest needs each outcome
/// to answer) takes longer than the guest's `call_timeout_ms` on a slow disk, but the
/// time spent waiting for the log is not the guest's: every INCR is answered, none is
/// lost. (Found by an outside probe: with 3 ms fsyncs, a 5 s timeout cut a pipeline of
/// 3,000 INCRs off after 1,407 had been applied, with none answered.)
#[test]
fn a_pipeline_waiting_on_a_slow_log_longer_than_the_call_timeout_is_answered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = crate::util::staged_plugins_and_memory_logger(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"memory\"\nfrontends = [\"wasm-resp\"]\n\
             [plugins.memory]\nnamespace = {:?}\nappend_delay_ms = 10\n\
             [plugins.wasm-resp]\nlisten = \"127.0.0.1:0\"\ncall_timeout_ms = 200\n",
            crate::util::namespace("slow-log")
        ),
    )
    .unwrap();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let p = port(&kvs, "wasm-resp");
    let mut s = raw(&p);
    // 100 INCRs in one 800-byte write, so one guest call (or a few: any part of more
    // than 20 INCRs outlasts the timeout): 100 appends of 10 ms, 5x the call's timeout.
    s.write_all("INCR n\r\n".repeat(100).as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let expected: String = (1..=100).map(|i| format!(":{i}\r\n")).collect();
    let started = std::time::Instant::now();
    let got = read_n(&mut s, expected.len());
    assert_eq!(got, expected);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the pipeline took {:?}: the log was not slow enough to outlast the timeout",
        started.elapsed()
    );
    assert_eq!(cli(&p, &["GET", "n"]), "100");
    kvs.stop();
}

/// Writes are answered once durable: one the logger then fails is never acknowledged —
/// a WASM HTTP response becomes a 503, a WASM stream connection is closed unanswered,
/// the native Redis frontend answers `-ERR` — while other writes go through.
#[test]
fn a_write_the_logger_fails_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = crate::util::staged_plugins_and_memory_logger(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"memory\"\nfrontends = [\"wasm-rest\", \"wasm-resp\", \"resp\"]\n\
             [plugins.memory]\nnamespace = {:?}\nfail_keys_with_prefix = \"refuse\"\n\
             [plugins.wasm-rest]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.wasm-resp]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.resp]\nlisten = \"127.0.0.1:0\"\n",
            crate::util::namespace("deferred")
        ),
    )
    .unwrap();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let http = crate::util::http_client();
    let base = kvs.endpoint("wasm-rest");
    let refused = http
        .put(format!("{base}/v1/key/refuse-1"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);
    // Either the guest heard the refusal (the logger answered while the call ran) or
    // the host replaced its answer: the logger's reason is in the body both ways.
    assert!(refused.text().unwrap().contains("told to fail"));
    assert_eq!(
        crate::util::put_status(&http, format!("{base}/v1/key/ok-1"), "y"),
        201
    );
    assert_eq!(
        crate::util::get_status(&http, format!("{base}/v1/key/refuse-1")),
        404
    );

    let p = port(&kvs, "wasm-resp");
    let mut s = raw(&p);
    s.write_all(b"SET ok-2 v\r\nSET refuse-2 v\r\n").unwrap();
    // Usually both writes are in the failed batch and the connection is closed with
    // nothing sent; if the logger answered while the guest still ran, the guest itself
    // answers -ERR for refuse-2. Never a +OK for it.
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || (got.contains("-ERR") && !got.contains("+OK\r\n+OK")),
        "{got:?}"
    );
    assert_eq!(cli(&p, &["GET", "ok-1"]), "y");
    assert_eq!(cli(&p, &["EXISTS", "refuse-2"]), "0");

    // The native frontend answers the failed write's reply with the error instead, and
    // the connection carries on.
    let mut s = raw(&port(&kvs, "resp"));
    s.write_all(b"SET refuse-3 v\r\n").unwrap();
    let reply = read_n(&mut s, 5);
    assert!(reply.starts_with("-ERR"), "{reply:?}");
    let mut rest = [0u8; 512];
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = s.read(&mut rest);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"SET ok-3 v\r\nGET ok-3\r\n").unwrap();
    assert_eq!(read_n(&mut s, 12), "+OK\r\n$1\r\nv\r\n");
    let log = kvs.stop();
    assert!(log.contains("a write it made failed"), "{log}");
}

/// Both Redis frontends sit on kvs-serve's TCP listener: connections over
/// `max_connections` are closed at once (and logged) while the open ones are served, a
/// freed slot is usable again, and a stop lets an idle open connection go without
/// waiting out the deadline.
#[test]
fn connections_over_max_connections_are_closed_and_the_open_ones_served() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let plugins = copy_of_staged_plugins(dir.path());
        let config = config(dir.path(), frontend, "max_connections = 2\n");
        let kvs = Kvs::start(&config, &plugins, &[]);
        let p = port(&kvs, frontend);
        let ping = |s: &mut TcpStream| {
            s.write_all(b"PING\r\n").unwrap();
            read_n(s, 7)
        };
        let mut first = raw(&p);
        let mut second = raw(&p);
        assert_eq!(ping(&mut first), "+PONG\r\n", "{frontend}");
        assert_eq!(ping(&mut second), "+PONG\r\n", "{frontend}");
        let mut third = raw(&p);
        let _ = third.write_all(b"PING\r\n");
        assert_eq!(read_to_close(&mut third), "", "{frontend}: over the limit");
        assert_eq!(ping(&mut first), "+PONG\r\n", "{frontend}");
        drop(second);
        // The slot frees once the server sees the close.
        let mut again = None;
        for _ in 0..100 {
            let mut s = raw(&p);
            if s.write_all(b"PING\r\n").is_ok() && read_n(&mut s, 7) == "+PONG\r\n" {
                again = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            again.is_some(),
            "{frontend}: a freed slot was never reusable"
        );
        let started = std::time::Instant::now();
        let log = kvs.stop();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{frontend}: stopping waited {:?} for idle connections",
            started.elapsed()
        );
        assert!(
            log.contains("refusing connections: 2 open, the limit is max_connections = 2"),
            "{frontend}: {log}"
        );
    }
}

/// Both Redis frontends serve TLS from the same `tls` table as the HTTP frontends:
/// `redis-cli --tls` works against the test CA, plain text is closed, and with
/// `client_ca` a client without a certificate is turned away while one with a
/// certificate the CA issued is served.
#[test]
fn redis_clients_speak_tls_and_mtls_to_both_frontends() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::security::Pki::new(dir.path(), "pki");
        let (cert, key) = pki.issue("server", "localhost", true);
        let (client_cert, client_key) = pki.issue("client", "app", false);
        let plugins = copy_of_staged_plugins(dir.path());
        let ca = pki.ca();
        let tls = |client_ca: bool| {
            let mut t = format!("tls = {{ cert = {cert:?}, key = {key:?}");
            if client_ca {
                t += &format!(", client_ca = {ca:?}");
            }
            t + " }\n"
        };
        let tls_cli = |port: &str, extra: &[&str], args: &[&str]| {
            Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", port, "--tls", "--cacert"])
                .arg(&ca)
                .args(extra)
                .args(args)
                .output()
                .expect("redis-cli")
        };

        let plain_config = config(dir.path(), frontend, &tls(false));
        let kvs = Kvs::start(&plain_config, &plugins, &[]);
        let endpoint = kvs.endpoint(frontend);
        assert!(
            endpoint.starts_with("rediss://") || endpoint.starts_with("tls://"),
            "{frontend}: {endpoint}"
        );
        let p = port(&kvs, frontend);
        let out = tls_cli(&p, &[], &["SET", "greeting", "hello over tls"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "OK",
            "{frontend}: {out:?}"
        );
        let out = tls_cli(&p, &[], &["GET", "greeting"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hello over tls",
            "{frontend}: {out:?}"
        );
        // Plain RESP to a TLS listener: no answer, just a close.
        let mut plain = raw(&p);
        let _ = plain.write_all(b"PING\r\n");
        assert!(
            !read_to_close(&mut plain).contains("PONG"),
            "{frontend}: answered plain text"
        );
        kvs.stop();

        let mtls_config = config(dir.path(), frontend, &tls(true));
        let kvs = Kvs::start(&mtls_config, &plugins, &[]);
        let p = port(&kvs, frontend);
        let out = tls_cli(&p, &[], &["PING"]);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("PONG"),
            "{frontend}: served a client without a certificate: {out:?}"
        );
        let cert_args = [
            "--cert".to_string(),
            client_cert.display().to_string(),
            "--key".to_string(),
            client_key.display().to_string(),
        ];
        let cert_args: Vec<&str> = cert_args.iter().map(String::as_str).collect();
        let out = tls_cli(&p, &cert_args, &["PING"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "PONG",
            "{frontend}: {out:?}"
        );
        kvs.stop();
    }
}

/// A `MSET` (or `DEL`) one of whose keys the store would refuse writes none of them:
/// every key is checked before any write is queued.
#[test]
fn a_refused_mset_writes_nothing() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let plugins = copy_of_staged_plugins(dir.path());
        let config = config(dir.path(), frontend, "");
        let kvs = Kvs::start(&config, &plugins, &[]);
        let p = port(&kvs, frontend);
        // The empty key, second: refused, and the first pair not written either.
        let answer = cli(&p, &["MSET", "m/1", "v1", "", "v2", "m/3", "v3"]);
        assert!(
            answer.contains("does not accept empty keys"),
            "{frontend}: {answer}"
        );
        assert_eq!(cli(&p, &["EXISTS", "m/1", "m/3"]), "0", "{frontend}");
        if frontend == "resp" {
            // A key over limits.max_key_bytes (4096) but under the value limit, which
            // the decoder allows through.
            let long = "k".repeat(5000);
            let answer = cli(&p, &["MSET", "m/1", "v1", &long, "v2", "m/3", "v3"]);
            assert!(answer.contains("max_key_bytes"), "{frontend}: {answer}");
            assert_eq!(cli(&p, &["EXISTS", "m/1", "m/3"]), "0", "{frontend}");
        }
        assert_eq!(cli(&p, &["MSET", "m/1", "v1", "m/3", "v3"]), "OK");
        assert_eq!(cli(&p, &["EXISTS", "m/1", "m/3"]), "2", "{frontend}");
        kvs.stop();
    }
}

/// kvs's resident memory, in MiB.
fn rss_mib(kvs: &Kvs) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", kvs.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// Unauthenticated clients cannot grow the native frontend's memory: 300 connections
/// that each send a ~1 MB command and stay open keep only small buffers (they give
/// back what the command needed, and the allocator returns it to the OS), and a client that pipelines GETs of a 1 MiB value
/// without reading the replies stops being read once 1 MiB of replies is unsent. An
/// MGET whose reply would pass `max_reply_bytes` is refused.
#[test]
fn large_commands_and_unread_replies_do_not_grow_resp_memory() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    let config = config(
        dir.path(),
        "resp",
        "max_reply_bytes = 8388608\nmax_connections_per_peer = 400\n",
    );
    let kvs = Kvs::start(&config, &plugins, &[]);
    let p = port(&kvs, "resp");
    let big = "x".repeat(1_000_000);
    let echo = format!("*2\r\n$4\r\nECHO\r\n${}\r\n{big}\r\n", big.len());
    let before = rss_mib(&kvs);
    let mut open = Vec::new();
    for _ in 0..300 {
        let mut s = raw(&p);
        s.write_all(echo.as_bytes()).unwrap();
        let reply = read_n(&mut s, big.len() + 12);
        assert_eq!(reply.len(), big.len() + 12);
        open.push(s);
    }
    // kvs hands freed memory back to the OS within a second of a burst.
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss_mib(&kvs).saturating_sub(before);
    println!("RSS: {before} MiB, +{grown} MiB with 300 connections after a 1 MB ECHO each");
    assert!(grown < 100, "RSS grew by {grown} MiB");
    drop(open);

    // A 1 MiB value, then GETs of it pipelined by a client that never reads.
    let value = vec![b'v'; 1 << 20];
    let mut s = raw(&p);
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).as_bytes())
        .unwrap();
    s.write_all(&value).unwrap();
    s.write_all(b"\r\n").unwrap();
    assert_eq!(read_n(&mut s, 5), "+OK\r\n");
    let before = rss_mib(&kvs);
    let mut flood = raw(&p);
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let gets = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(20_000);
    // The write stops making progress once kvs stops reading: that is the point.
    let _ = flood.write_all(gets.as_bytes());
    std::thread::sleep(Duration::from_secs(1));
    let grown = rss_mib(&kvs).saturating_sub(before);
    println!("RSS: {before} MiB, +{grown} MiB with a client not reading 1 MiB GET replies");
    assert!(grown < 100, "RSS grew by {grown} MiB");
    // An MGET whose reply would be 10 MiB, over max_reply_bytes (8 MiB): refused.
    let keys = vec!["big"; 10];
    let answer = cli(&p, &[&["MGET"][..], &keys].concat());
    assert!(
        answer.contains("max_reply_bytes"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    drop(flood);
    kvs.stop();
}

/// Connections that send nothing are closed: one that never sends a byte after the
/// first-bytes deadline (10 s by default, or `idle_timeout_ms` if shorter), one that
/// went quiet after `idle_timeout_ms`.
#[test]
fn silent_resp_connections_are_closed() {
    for frontend in FRONTENDS {
        let dir = tempfile::tempdir().unwrap();
        let plugins = copy_of_staged_plugins(dir.path());
        let config = config(dir.path(), frontend, "idle_timeout_ms = 1500\n");
        let kvs = Kvs::start(&config, &plugins, &[]);
        let p = port(&kvs, frontend);
        let started = std::time::Instant::now();
        let mut silent = raw(&p);
        assert_eq!(read_to_close(&mut silent), "", "{frontend}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
            "{frontend}: closed after {waited:?}"
        );
        let mut quiet = raw(&p);
        quiet.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_n(&mut quiet, 7), "+PONG\r\n");
        std::thread::sleep(Duration::from_millis(1000));
        quiet.write_all(b"PING\r\n").unwrap();
        assert_eq!(
            read_n(&mut quiet, 7),
            "+PONG\r\n",
            "{frontend}: closed early"
        );
        let started = std::time::Instant::now();
        assert_eq!(read_to_close(&mut quiet), "", "{frontend}");
        assert!(started.elapsed() < Duration::from_secs(5), "{frontend}");
        kvs.stop();
    }
    // The defaults: a connection that never sends a byte is closed after 10 s.
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    let config = config(dir.path(), "resp", "");
    let kvs = Kvs::start(&config, &plugins, &[]);
    let mut silent = raw(&port(&kvs, "resp"));
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(read_to_close(&mut silent), "");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    kvs.stop();
}

/// A stream frontend holds an instance per connection, each up to `memory_max_mb`:
/// `memory_budget_mb` caps how many exist. Past it a new connection is closed at once,
/// with the reason in the log; once a connection ends, its instance serves the next.
#[test]
fn a_wasm_stream_frontend_refuses_connections_past_its_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "wasm-resp",
        "memory_max_mb = 16\nmemory_budget_mb = 48\npool_size = 1\n",
    );
    let kvs = Kvs::start(&path, &copy_of_staged_plugins(dir.path()), &[]);
    // Said at start, where an operator looks before a client is refused.
    assert!(
        kvs.log()
            .contains("serves at most 3 connections at once (memory_budget_mb = 48"),
        "{}",
        kvs.log()
    );
    let p = port(&kvs, "wasm-resp");
    let idle = rss_mib(&kvs);
    let ping = |s: &mut TcpStream| {
        s.write_all(b"PING\r\n").unwrap();
        read_n(s, 7)
    };
    // 48 / 16: three instances, each held by a connection.
    let mut held: Vec<TcpStream> = (0..3).map(|_| raw(&p)).collect();
    for s in &mut held {
        assert_eq!(ping(s), "+PONG\r\n");
    }
    let serving = rss_mib(&kvs);
    let mut fourth = raw(&p);
    let _ = fourth.write_all(b"PING\r\n");
    assert_eq!(read_to_close(&mut fourth), "", "a fourth instance was made");
    // Logged before the close, but read from kvs's stderr by another thread: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let log = kvs.log();
        if let Some(line) = log.lines().find(|l| l.contains("refusing the connection")) {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reason logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        reason.contains("3 instances of memory_max_mb = 16")
            && reason.contains("memory_budget_mb = 48"),
        "{reason}"
    );
    // One connection ends: its instance (idle now) serves the next one.
    drop(held.remove(0));
    std::thread::sleep(Duration::from_millis(300));
    let mut next = raw(&p);
    assert_eq!(ping(&mut next), "+PONG\r\n");
    println!(
        "stream budget: 3 connections x 16 MiB served, the 4th closed ({reason}); kvs RSS \
         {idle} MiB idle, {serving} MiB with 3 connections; after one closed, a new one \
         served"
    );
    drop(held);
    drop(next);
    kvs.stop();
}

/// A client that keeps pipelining without reading its replies always has bytes ready;
/// SIGTERM must still reach its connection (stop looked at before the next read), so kvs
/// exits well within its shutdown deadline (10 s) instead of running the client's
/// writes until the deadline (a probe saw 545k writes run after the signal).
#[test]
fn sigterm_stops_a_connection_that_never_stops_sending() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = Kvs::start(
        &config_with(dir.path(), "resp", "", ""),
        &crate::util::staged_plugins(),
        &[],
    );
    let p = port(&kvs, "resp");
    let mut socket = std::net::TcpStream::connect(format!("127.0.0.1:{p}")).unwrap();
    let pipeline = "*3\r\n$3\r\nSET\r\n$2\r\nnr\r\n$1\r\nv\r\n".repeat(1000);
    let sending = std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        // Stops when kvs closes the connection (or after 20 s).
        while std::time::Instant::now() < until && socket.write_all(pipeline.as_bytes()).is_ok() {}
    });
    // Early, while the unread replies still fit the socket buffers (once they do not,
    // kvs waits in its write and the stop deadline is what ends the connection).
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    kvs.stop();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "kvs took {took:?} to stop with a client sending without reading"
    );
    sending.join().unwrap();
}

/// `resp` commits its connections' writes when its thread has nothing left to run; a
/// thread kept busy by another connection (a client that never stops sending `GET`s)
/// still commits them itself within a bounded number of commands, not leaving every
/// write to the writer thread's watchdog (5 ms each).
#[test]
fn writes_are_committed_by_resp_while_another_connection_keeps_its_thread_busy() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let kvs = Kvs::start(
        &config_with(dir.path(), "resp", "", admin),
        &crate::util::staged_plugins(),
        &[],
    );
    let p = port(&kvs, "resp");
    // The busy client: pipelines of GETs sent without pause, replies read by another
    // thread, so the connection always has a command ready.
    let flood = raw(&p);
    let mut replies = flood.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = std::thread::spawn({
        let stop = stop.clone();
        let mut flood = flood;
        let pipeline = "*2\r\n$3\r\nGET\r\n$4\r\nbusy\r\n".repeat(500);
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flood.write_all(pipeline.as_bytes()).unwrap();
            }
        }
    });
    let reading = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while replies.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    std::thread::sleep(Duration::from_millis(300));
    let batches = |by: &str| kvs.writer_batches(by);
    let before = (batches("frontend"), batches("writer"));
    // One write at a time: each waits for its commit.
    let mut writes = raw(&p);
    let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
    for _ in 0..200 {
        writes.write_all(set).unwrap();
        assert_eq!(read_n(&mut writes, 5), "+OK\r\n");
    }
    let (by_frontend, by_writer) = (batches("frontend") - before.0, batches("writer") - before.1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sending.join().unwrap();
    kvs.stop();
    reading.join().unwrap();
    assert!(
        by_frontend > 3 * by_writer,
        "of 200 writes made while another connection kept resp's thread busy, \
         {by_frontend} batches were committed by resp, {by_writer} by the writer thread"
    );
}
