//! The WASM logger under power loss. Its file is written by the guest through WASI, out
//! of reach of the file logger's instrumented `io` layer, so the record comes from
//! `strace` instead: kvs runs under it while a client PUTs keys one at a time; every
//! write, fsync and truncation of `wasm.log`, every fsync of its directory and every
//! `201` kvs sends back become one ordered record. `kvs_testkit::crash` turns it into
//! every state a power loss could leave, and each is replayed with the WASM logger.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvs_testkit::crash::{self, Op};

use crate::util::{http_client, staged_plugins};

/// Decodes strace's `-xx` text (`\x41\x42`) to bytes.
fn unhex(text: &str) -> Vec<u8> {
    text.split("\\x")
        .skip(1)
        .filter_map(|h| u8::from_str_radix(h.get(..2)?, 16).ok())
        .collect()
}

/// One traced system call.
struct Call {
    time: f64,
    name: String,
    /// The first argument's path (strace `-y`), decoded.
    path: String,
    /// The bytes of every quoted string in the arguments, in order.
    data: Vec<u8>,
    /// The last argument, when it is a number (pwrite's offset, ftruncate's length).
    last_number: Option<u64>,
    /// What the call returned, and the path of a returned descriptor.
    result: String,
}

fn parse_line(line: &str) -> Option<Call> {
    let (time, rest) = line.split_once(' ')?;
    let (name, rest) = rest.split_once('(')?;
    let (args, result) = rest.rsplit_once(") = ")?;
    let path = args
        .split_once('<')
        .and_then(|(_, p)| p.split_once('>'))
        .map(|(p, _)| String::from_utf8_lossy(&unhex(p)).into_owned())
        .unwrap_or_default();
    // Quoted strings are the odd pieces between quotes: write's buffer, writev's
    // iov_bases (-xx leaves no quote unescaped inside them).
    let data = args.split('"').skip(1).step_by(2).flat_map(unhex).collect();
    let last_number = args.rsplit(", ").next().and_then(|n| n.trim().parse().ok());
    Some(Call {
        time: time.parse().ok()?,
        name: name.to_string(),
        path,
        data,
        last_number,
        result: result.trim().to_string(),
    })
}

/// The record of the WASM logger's file and the acknowledgements, from strace's
/// per-thread files merged by time.
fn record(trace_dir: &Path, data_dir: &Path) -> Vec<Op> {
    let log = data_dir.join("wasm.log");
    let (log, dir) = (
        log.to_string_lossy().into_owned(),
        data_dir.to_string_lossy().into_owned(),
    );
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(trace_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("trace."))
        {
            let text = std::fs::read_to_string(&path).unwrap();
            calls.extend(text.lines().filter_map(parse_line));
        }
    }
    calls.sort_by(|a, b| a.time.total_cmp(&b.time));
    let mut ops = Vec::new();
    let mut model = crash::Model::default();
    let mut opened = false;
    let mut acks = 0;
    let push = |op: Op, model: &mut crash::Model, ops: &mut Vec<Op>| {
        model.apply(&op);
        ops.push(op);
    };
    for call in calls {
        let returns_log = call.result.contains('<')
            && String::from_utf8_lossy(&unhex(call.result.split('<').nth(1).unwrap_or(""))) == log;
        match call.name.as_str() {
            "openat" | "openat2" if returns_log => {
                let created = !opened;
                opened = true;
                push(
                    Op::Open {
                        name: "wasm.log".into(),
                        inode: 1,
                        created,
                    },
                    &mut model,
                    &mut ops,
                );
            }
            "write" | "writev" if call.path == log => {
                let offset = model.live_len(1);
                push(
                    Op::Write {
                        inode: 1,
                        offset,
                        data: call.data,
                    },
                    &mut model,
                    &mut ops,
                );
            }
            "pwrite64" | "pwritev" if call.path == log => {
                let offset = call.last_number.expect("pwrite offset");
                push(
                    Op::Write {
                        inode: 1,
                        offset,
                        data: call.data,
                    },
                    &mut model,
                    &mut ops,
                );
            }
            "ftruncate" if call.path == log => {
                let len = call.last_number.expect("ftruncate length");
                push(Op::SetLen { inode: 1, len }, &mut model, &mut ops);
            }
            "fsync" | "fdatasync" if call.path == log => {
                push(Op::Sync { inode: 1 }, &mut model, &mut ops)
            }
            "fsync" | "fdatasync" if call.path == dir => push(Op::SyncDir, &mut model, &mut ops),
            "write" | "writev" | "sendto" | "sendmsg" if call.data.starts_with(b"HTTP/1.1 201") => {
                acks += 1;
                push(Op::Mark(format!("ack {acks}")), &mut model, &mut ops);
            }
            _ => {}
        }
    }
    ops
}

fn value_of(i: usize) -> Vec<u8> {
    // Some values span 4 KiB pages, so torn writes are part of the states.
    let len = if i.is_multiple_of(3) {
        5000 + i * 10
    } else {
        20 + i
    };
    (0..len).map(|j| (i + j) as u8).collect()
}

#[test]
fn every_crash_state_of_the_wasm_logger_holds_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let traces = dir.path().join("traces");
    std::fs::create_dir(&traces).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = \"wasm-log\"\nfrontends = [\"rest\"]\n[plugins.wasm-log]\ndata_dir = {data:?}\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let mut strace = Command::new("strace")
        .args(["-f", "-ff", "-ttt", "-qq", "-y", "-xx", "-s", "1000000", "-e"])
        .arg("trace=openat,openat2,write,writev,pwrite64,pwritev,fsync,fdatasync,ftruncate,sendto,sendmsg")
        .arg("-o")
        .arg(traces.join("trace"))
        .arg(env!("CARGO_BIN_EXE_kvs"))
        .arg("--config")
        .arg(&config)
        .arg("--plugins-dir")
        .arg(staged_plugins())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace (`.ci/run` installs it)");
    let mut endpoint = None;
    for line in BufReader::new(strace.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((_, url)) = line.split_once("frontend rest serving on ") {
            endpoint = Some(url.trim().to_string());
        }
        if line.contains("kvs ready") {
            break;
        }
    }
    let endpoint = endpoint.expect("kvs did not start under strace");
    let http = http_client();
    let writes = 12;
    for i in 0..writes {
        let r = http
            .put(format!("{endpoint}/v1/key/k{i}"))
            .body(value_of(i))
            .send()
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    // Stop kvs itself (strace would only detach on a signal) and let strace finish.
    let tracee = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        strace.id(),
        strace.id()
    ))
    .unwrap();
    let kvs_pid = tracee.split_whitespace().next().expect("kvs under strace");
    assert!(
        Command::new("kill")
            .args(["-TERM", kvs_pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while strace.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kvs did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    let ops = record(&traces, &data);
    let acked = ops.iter().filter(|o| matches!(o, Op::Mark(_))).count();
    assert_eq!(acked, writes, "every 201 is in the record");
    let wasm = staged_plugins().join("kvs_wasm_logger.wasm");
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    let checked = crash::walk(&ops, |k, marks, files| {
        n += 1;
        let state = scratch.path().join(format!("s{n}"));
        std::fs::create_dir(&state).unwrap();
        for (name, content) in files {
            std::fs::write(state.join(name), content).unwrap();
        }
        let acked = marks.len();
        let recovered =
            kvs_host::wasm::open_logger(&wasm, "wasm-log", &format!("data_dir = {state:?}"), None)
                .map_err(|e| e.to_string())
                .and_then(|mut logger| {
                    let map = kvs_host::store::Map::default();
                    kvs_host::writer::replay(logger.as_mut(), &map).map_err(|e| e.to_string())?;
                    Ok(map
                        .iter()
                        .map(|e| (e.key().to_vec(), e.value().to_vec()))
                        .collect::<BTreeMap<_, _>>())
                });
        let mut want: BTreeMap<Vec<u8>, Vec<u8>> = (0..acked)
            .map(|i| (format!("k{i}").into_bytes(), value_of(i)))
            .collect();
        let ok = match &recovered {
            Ok(map) if map == &want => true,
            Ok(map) => {
                // The write in flight may have landed, whole.
                want.insert(format!("k{acked}").into_bytes(), value_of(acked));
                map == &want
            }
            Err(_) => false,
        };
        if !ok {
            failures.push(format!(
                "crash after op {k} ({acked} acknowledged; files {:?}): {:?}",
                files.iter().map(|(n, c)| (n, c.len())).collect::<Vec<_>>(),
                recovered.map(|m| m.len())
            ));
        }
        let _ = std::fs::remove_dir_all(&state);
    });
    assert!(checked >= writes * 2, "only {checked} crash states");
    eprintln!("{checked} crash states of the WASM logger checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} crash states lose acknowledged writes:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}
