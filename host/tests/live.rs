//! Live changes (#28): a real kvs under a steady load of REST keep-alive, gRPC, RESP
//! pipelines and wasm-rest clients while `kvs reload` changes a limit and an access
//! rule, replaces wasm-rest, the native rest frontend (overwritten in place) and the
//! file logger, and is offered a broken plug-in and a broken config. No client request
//! may fail, every acknowledged write must be in the log afterwards, and the p99
//! latency of each swap is printed beside the steady state's.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvs_proto::v1;

use crate::util::{Kvs, copy_of_staged_plugins, http_client};

fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports. The listeners are held until all are picked: one
/// dropped at once may be handed out again by the next bind (two frontends were once
/// given the same port, and kvs refused to start).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// The ports of one kvs, fixed so that a replacement binds the same address.
struct Ports {
    rest: u16,
    grpc: u16,
    resp: u16,
    wasm_rest: u16,
    admin: u16,
}

/// The config, with the value limit and the `load` role's write grants given.
fn write_config(dir: &Path, ports: &Ports, max_value_bytes: u64, writes: &str) -> PathBuf {
    write_config_with(dir, ports, max_value_bytes, writes, "", "")
}

/// [`write_config`], with `extra` added to the file logger's and rest's tables, and
/// `rest_extra` to rest's.
fn write_config_with(
    dir: &Path,
    ports: &Ports,
    max_value_bytes: u64,
    writes: &str,
    extra: &str,
    rest_extra: &str,
) -> PathBuf {
    let path = dir.join("config.toml");
    let log = dir.join("data").join("kvs.log");
    let text = format!(
        "logger = \"file\"\n\
         frontends = [\"rest\", \"grpc\", \"resp\", \"wasm-rest\"]\n\
         shutdown_timeout_ms = 4000\n\
         [limits]\nmax_value_bytes = {max_value_bytes}\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [auth]\nenabled = true\nanonymous = [\"load\"]\n\
         [auth.jwt]\nhs256_secret_file = {secret:?}\n\
         [auth.principals]\nops = [\"load\"]\n\
         [auth.roles.load]\nread = [\"*\"]\nwrite = [{writes}]\n\
         [plugins.file]\npath = {log:?}\n{extra}\n\
         [plugins.rest]\nlisten = \"127.0.0.1:{rest}\"\n{extra}\n{rest_extra}\n\
         [plugins.grpc]\nlisten = \"127.0.0.1:{grpc}\"\n\
         [plugins.resp]\nlisten = \"127.0.0.1:{resp}\"\n\
         [plugins.wasm-rest]\nlisten = \"127.0.0.1:{wasm_rest}\"\npool_size = 2\n",
        admin = ports.admin,
        rest = ports.rest,
        grpc = ports.grpc,
        resp = ports.resp,
        wasm_rest = ports.wasm_rest,
        secret = dir.join("jwt.secret"),
    );
    // Written whole and renamed in, as an operator's editor or config tool would.
    let tmp = dir.join("config.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// One request as a client saw it.
struct Sample {
    at: Instant,
    took: Duration,
}

/// What one load client did.
#[derive(Default)]
struct ClientRun {
    samples: Vec<Sample>,
    failures: Vec<String>,
    /// Keys whose write was acknowledged, with the value written.
    acked: Vec<(String, String)>,
    /// wasm-rest: the content type each GET of a value was answered with, in order.
    content_types: Vec<String>,
}

impl ClientRun {
    fn record(&mut self, started: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => self.samples.push(Sample {
                at: started,
                took: started.elapsed(),
            }),
            Err(e) => self.failures.push(e),
        }
    }
}

/// PUT then GET of fresh keys over one keep-alive client until `stop`.
fn http_load(base: String, name: &'static str, stop: Arc<AtomicBool>) -> ClientRun {
    let client = http_client();
    let mut run = ClientRun::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (key, value) = (format!("load-{name}-{n}"), format!("{name}-{n}"));
        let started = Instant::now();
        let put = client
            .put(format!("{base}/v1/key/{key}"))
            .body(value.clone())
            .send()
            .map_err(|e| format!("{name} PUT {key}: {e:#}"))
            .and_then(|r| match r.status().as_u16() {
                201 => Ok(()),
                s => Err(format!(
                    "{name} PUT {key}: {s} {}",
                    r.text().unwrap_or_default()
                )),
            });
        let ok = put.is_ok();
        run.record(started, put);
        if !ok {
            continue;
        }
        run.acked.push((key.clone(), value.clone()));
        let started = Instant::now();
        let get = client
            .get(format!("{base}/v1/key/{key}"))
            .send()
            .map_err(|e| format!("{name} GET {key}: {e:#}"))
            .and_then(|r| {
                let ct = r
                    .headers()
                    .get("content-type")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                match (r.status().as_u16(), r.text()) {
                    (200, Ok(body)) if body == value => Ok(ct),
                    (s, body) => Err(format!("{name} GET {key}: {s} {body:?}")),
                }
            });
        match get {
            Ok(ct) => {
                run.content_types.push(ct);
                run.record(started, Ok(()));
            }
            Err(e) => run.record(started, Err(e)),
        }
    }
    run
}

/// gRPC Put then Get of fresh keys over one channel until `stop`.
fn grpc_load(endpoint: String, stop: Arc<AtomicBool>) -> ClientRun {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let url = endpoint.replace("grpc://", "http://");
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = v1::key_value_client::KeyValueClient::new(channel);
        let mut run = ClientRun::default();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let (key, value) = (format!("load-grpc-{n}"), format!("grpc-{n}"));
            let started = Instant::now();
            let put = client
                .put(v1::PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })
                .await;
            match put {
                Ok(_) => {
                    run.record(started, Ok(()));
                    run.acked.push((key.clone(), value.clone()));
                }
                Err(e) => {
                    run.record(started, Err(format!("grpc Put {key}: {e}")));
                    continue;
                }
            }
            let started = Instant::now();
            let got = client
                .get(v1::GetRequest {
                    key: key.clone().into_bytes(),
                })
                .await;
            let checked = match got {
                Ok(r) if r.get_ref().value == value.as_bytes() => Ok(()),
                Ok(r) => Err(format!("grpc Get {key}: {:?}", r.get_ref().value)),
                Err(e) => Err(format!("grpc Get {key}: {e}")),
            };
            run.record(started, checked);
        }
        run
    })
}

/// Pipelines of 8 SETs over one RESP connection until `stop`.
fn resp_load(addr: String, stop: Arc<AtomicBool>) -> ClientRun {
    let stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut run = ClientRun::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut pipeline = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..8 {
            n += 1;
            let (key, value) = (format!("load-resp-{n}"), format!("resp-{n}"));
            write!(
                pipeline,
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .unwrap();
            batch.push((key, value));
        }
        let started = Instant::now();
        let outcome = writer
            .write_all(&pipeline)
            .map_err(|e| format!("resp write: {e}"))
            .and_then(|()| {
                for (key, value) in &batch {
                    let mut line = String::new();
                    reader
                        .read_line(&mut line)
                        .map_err(|e| format!("resp read: {e}"))?;
                    if line != "+OK\r\n" {
                        return Err(format!("resp SET {key}: {line:?}"));
                    }
                    run.acked.push((key.clone(), value.clone()));
                }
                Ok(())
            });
        let failed = outcome.is_err();
        run.record(started, outcome);
        if failed {
            break;
        }
    }
    run
}

fn p99(samples: &[&Sample]) -> Option<Duration> {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    (!took.is_empty()).then(|| took[(took.len() * 99 / 100).min(took.len() - 1)])
}

/// `kvs reload` as the operator `ops` (the admin endpoints need a principal with a
/// role): its exit status and output.
fn reload(admin: &str, dir: &Path) -> (i32, String) {
    let secret = std::fs::read(dir.join("jwt.secret")).unwrap();
    let claims = serde_json::json!({"sub": "ops", "exp": 4_000_000_000u64});
    let key = jsonwebtoken::EncodingKey::from_secret(&secret).unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["reload", "--admin", admin])
        .env("KVS_TOKEN", token)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `bytes` with a few bytes appended: a different file (another SHA-256) that loads
/// and behaves as the original, standing in for a rebuild.
fn rebuilt(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.extend_from_slice(format!("\nkvs-test-rebuild {tag}\n").as_bytes());
    out
}

#[test]
fn reloads_and_swaps_under_load_fail_no_request_and_lose_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    std::fs::write(dir.path().join("jwt.secret"), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        dir.path().join("jwt.secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let [rest, grpc, resp, wasm_rest, admin] = free_ports();
    let ports = Ports {
        rest,
        grpc,
        resp,
        wasm_rest,
        admin,
    };
    let config = write_config(dir.path(), &ports, 1 << 20, "\"load\", \"open/\"");
    let kvs = Kvs::start(&config, &plugins, &[]);
    let admin = kvs.admin();
    let rest = format!("http://127.0.0.1:{}", ports.rest);
    let wasm_rest = format!("http://127.0.0.1:{}", ports.wasm_rest);
    let http = http_client();

    // Before: a 2000-byte value and a key under open/ may be written.
    let put = |base: &str, key: &str, value: Vec<u8>| {
        http.put(format!("{base}/v1/key/{key}"))
            .body(value)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put(&rest, "open/before", vec![b'x'; 2000]), 201);

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (base, name) in [(rest.clone(), "rest"), (wasm_rest.clone(), "wasm-rest")] {
        let stop = stop.clone();
        clients.push(std::thread::spawn(move || http_load(base, name, stop)));
    }
    let (grpc_stop, resp_stop) = (stop.clone(), stop.clone());
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    clients.push(std::thread::spawn(move || grpc_load(endpoint, grpc_stop)));
    let addr = format!("127.0.0.1:{}", ports.resp);
    clients.push(std::thread::spawn(move || resp_load(addr, resp_stop)));
    let mut phases: Vec<(&str, Instant, Instant)> = Vec::new();
    let steady = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    phases.push(("steady state", steady, Instant::now()));

    // 1. A limit and an access rule.
    let began = Instant::now();
    write_config(dir.path(), &ports, 1000, "\"load\"");
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed: limits"), "{out}");
    assert!(out.contains("changed: access"), "{out}");
    phases.push(("limit + access rule", began, Instant::now()));
    assert_eq!(
        put(&rest, "load-big", vec![b'x'; 2000]),
        413,
        "the new limit"
    );
    assert_eq!(put(&rest, "open/after", b"v".to_vec()), 401, "the new rule");
    assert_eq!(
        put(&wasm_rest, "open/after", b"v".to_vec()),
        401,
        "for every frontend"
    );

    // 2. wasm-rest: a build that answers values with another content type.
    let file = plugins.join("kvs_wasm_rest.wasm");
    let original = std::fs::read(&file).unwrap();
    let (old_ct, new_ct) = (b"application/octet-stream", b"application/octet-STREAM");
    let at = original
        .windows(old_ct.len())
        .position(|w| w == old_ct)
        .expect("wasm-rest answers values as application/octet-stream");
    let mut patched = original.clone();
    patched[at..at + new_ct.len()].copy_from_slice(new_ct);
    let began = Instant::now();
    std::fs::write(&file, &patched).unwrap();
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("changed: frontend wasm-rest: swapped in place"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(500));
    phases.push(("wasm-rest replaced", began, Instant::now()));

    // 3. rest: a rebuilt file copied over the one in use, in place.
    let file = plugins.join("libkvs_plugin_rest.so");
    let original = std::fs::read(&file).unwrap();
    let began = Instant::now();
    std::fs::write(&file, rebuilt(&original, "rest")).unwrap();
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed: frontend rest: replaced"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    phases.push(("rest replaced in place", began, Instant::now()));

    // 3b. rest's table: a new request timeout, applied by rest itself (plugin-api 1.4
    // `reconfigure`), its connections kept.
    let began = Instant::now();
    write_config_with(
        dir.path(),
        &ports,
        1000,
        "\"load\"",
        "",
        "request_timeout_ms = 20000",
    );
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("changed: frontend rest: reconfigured in place"),
        "{out}"
    );
    phases.push(("rest reconfigured", began, Instant::now()));
    write_config(dir.path(), &ports, 1000, "\"load\"");
    let (code, out) = reload(&admin, dir.path());
    assert!(code == 0 && out.contains("reconfigured in place"), "{out}");

    // 4. The file logger, rebuilt, mid-load.
    let file = plugins.join("libkvs_plugin_file.so");
    let original = std::fs::read(&file).unwrap();
    let began = Instant::now();
    std::fs::write(&file, rebuilt(&original, "file")).unwrap();
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed: logger file: swapped"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    phases.push(("file logger swapped", began, Instant::now()));

    // 5. A broken plug-in: nothing changes, the reason is given.
    let file = plugins.join("libkvs_plugin_grpc.so");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"not a shared library").unwrap();
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused:") && out.contains("grpc"), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    std::fs::write(&file, &good).unwrap();
    // A copy cut short (an interrupted cp): refused before it is mapped, which would
    // have killed kvs with SIGBUS.
    let rest_file = plugins.join("libkvs_plugin_rest.so");
    let whole = std::fs::read(&rest_file).unwrap();
    std::fs::write(&rest_file, &whole[..300_000]).unwrap();
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    let log = kvs.log();
    assert!(
        log.contains("truncated: it needs"),
        "the scan says why:\n{log}"
    );
    std::fs::write(&rest_file, &whole).unwrap();
    assert_eq!(put(&rest, "load-after-truncated", b"v".to_vec()), 201);

    // 6. A config with an error: nothing changes, the reason is given.
    std::fs::write(&config, "frontends = [\"rest\"\n").unwrap();
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused: config:"), "{out}");
    assert_eq!(put(&rest, "load-big2", vec![b'x'; 2000]), 413, "limit kept");

    // 7. Tables: rest refuses one it does not know and keeps serving; the logger's
    // waits for a restart.
    write_config_with(dir.path(), &ports, 1000, "\"load\"", "bogus_key = 1", "");
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 1, "{out}");
    // A logger's new table may name other storage: never swapped live.
    assert!(
        out.contains("kept: logger file: its table changed; that takes effect on restart"),
        "{out}"
    );
    assert!(out.contains("refused: frontend rest: not swapped"), "{out}");
    assert!(out.contains("unknown field `bogus_key`"), "{out}");
    assert!(
        out.lines()
            .all(|l| ["changed: ", "kept: ", "refused: ", "kvs: error: "]
                .iter()
                .any(|p| l.starts_with(p))),
        "one line per item:\n{out}"
    );
    assert_eq!(put(&rest, "load-after-refusals", b"v".to_vec()), 201);

    write_config(dir.path(), &ports, 1000, "\"load\"");
    let (code, out) = reload(&admin, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("changed:"),
        "the same config again changes nothing:\n{out}"
    );

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let runs: Vec<ClientRun> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let failures: Vec<&String> = runs.iter().flat_map(|r| &r.failures).collect();
    assert!(
        failures.is_empty(),
        "{} request(s) failed during the reloads, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        kvs.log()
    );
    // wasm-rest answered from the old module, then from the new one, never back.
    let types = &runs[1].content_types;
    let first_new = types
        .iter()
        .position(|t| t.as_bytes() == new_ct)
        .expect("wasm-rest never answered from the new module");
    assert!(first_new > 0, "the old module never answered");
    assert!(
        types[first_new..].iter().all(|t| t.as_bytes() == new_ct),
        "an answer from the old module after the new one's first"
    );

    println!("p99 latency per phase (every client's requests begun in it):");
    let all: Vec<&Sample> = runs.iter().flat_map(|r| &r.samples).collect();
    for (name, from, to) in &phases {
        let within: Vec<&Sample> = all
            .iter()
            .copied()
            .filter(|s| s.at >= *from && s.at < *to)
            .collect();
        let p = p99(&within).map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
        println!("  {name:<24} {p:>10}  ({} requests)", within.len());
    }

    // Every acknowledged write is in the log: read back after a restart.
    let acked: Vec<(String, String)> = runs.into_iter().flat_map(|r| r.acked).collect();
    let log = kvs.stop();
    assert!(!log.contains("panicked"), "{log}");
    let kvs = Kvs::start(&config, &plugins, &[]);
    let client = http_client();
    let base = format!("http://127.0.0.1:{}", ports.rest);
    let mut missing = Vec::new();
    for (key, value) in &acked {
        let r = client.get(format!("{base}/v1/key/{key}")).send().unwrap();
        if r.status().as_u16() != 200 || r.text().unwrap() != *value {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing after restart, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    println!(
        "{} acknowledged writes all read back after a restart",
        acked.len()
    );
    kvs.stop();
}

#[test]
fn with_watch_on_a_changed_config_file_is_applied_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    let port = free_port();
    let write = |max_value_bytes: u64| {
        let text = format!(
            "watch = true\nlogger = \"file\"\nfrontends = [\"rest\"]\n\
             [limits]\nmax_value_bytes = {max_value_bytes}\n\
             [plugins.file]\npath = {:?}\n\
             [plugins.rest]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("kvs.log")
        );
        let tmp = dir.path().join("config.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join("config.toml")).unwrap();
        dir.path().join("config.toml")
    };
    let config = write(1 << 20);
    let kvs = Kvs::start(&config, &plugins, &[]);
    let http = http_client();
    let put = |len: usize| {
        http.put(kvs.at("/v1/key/k"))
            .body(vec![b'x'; len])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put(2000), 201);
    write(1000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kvs.log().contains("reload: changed: limits") {
        assert!(Instant::now() < deadline, "no reload:\n{}", kvs.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(put(2000), 413, "the new limit");
    // A file dropped into the plugins directory is seen too (here: not a plug-in).
    std::fs::write(plugins.join("junk.so"), b"not a library").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kvs.log().contains("junk.so") {
        assert!(Instant::now() < deadline, "no reload:\n{}", kvs.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    kvs.stop();
}
