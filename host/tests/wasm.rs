//! `.wasm` plug-ins in a real kvs: the shipped logger and REST frontend, mixed with
//! native ones, and hostile guests that must not take the host down.

use std::path::{Path, PathBuf};

use kvs_host::plugins::Catalog;
use kvs_plugin_api::{API_MAJOR, API_MINOR};
use reqwest::StatusCode;

use crate::util::{
    Kvs, assert_reads_back, copy_of_staged_plugins, encode_key, get_status, http_client,
    staged_plugins, wasm_module,
};

fn config(dir: &Path, logger: &str, frontend: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let data = dir.join("data");
    std::fs::write(
        &path,
        format!(
            "logger = {logger:?}\nfrontends = [{frontend:?}]\nshutdown_timeout_ms = 5000\n\
             [plugins.wasm-log]\ndata_dir = {data:?}\n\
             [plugins.file]\npath = {:?}\n\
             [plugins.wasm-rest]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n{extra}",
            data.join("kvs.log")
        ),
    )
    .unwrap();
    path
}

/// Two kvs given one WASM logger's `data_dir` would write one log from two processes
/// (losing writes): the second is refused at start, saying why, while the first runs.
#[test]
fn a_second_kvs_on_a_wasm_loggers_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "wasm-log", "rest", "");
    let first = Kvs::start(&cfg, &staged_plugins(), &[]);
    let refused = match Kvs::try_start(&cfg, &staged_plugins(), &[]) {
        Ok(second) => panic!(
            "a second kvs started on the same data_dir:\n{}",
            second.stop()
        ),
        Err(log) => log,
    };
    assert!(refused.contains("is in use by another kvs"), "{refused}");
    // Nor through a hard link to its log from another directory (a `cp -al` copy).
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::hard_link(dir.path().join("data/wasm.log"), copy.join("wasm.log")).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_cfg = config(&other, "wasm-log", "rest", "");
    let text = std::fs::read_to_string(&other_cfg)
        .unwrap()
        .replace(&format!("{:?}", other.join("data")), &format!("{copy:?}"));
    std::fs::write(&other_cfg, text).unwrap();
    let refused = match Kvs::try_start(&other_cfg, &staged_plugins(), &[]) {
        Ok(second) => panic!("a second kvs wrote through a hard link:\n{}", second.stop()),
        Err(log) => log,
    };
    assert!(
        refused.contains("wasm.log") && refused.contains("is in use by another kvs"),
        "{refused}"
    );
    first.stop();
    // The lock goes with the process: the next kvs opens the directory.
    Kvs::start(&cfg, &staged_plugins(), &[]).stop();
}

/// A live swap of a WASM logger never lets go of its `data_dir` in between: something
/// trying to take the lock all along never gets it, and the swapped logger serves.
#[test]
fn a_live_swap_of_a_wasm_logger_keeps_its_data_dir_locked() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    let cfg = config(
        dir.path(),
        "wasm-log",
        "rest",
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let kvs = Kvs::start(&cfg, &plugins, &[]);
    let data = dir.path().join("data");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let grabber = {
        let (stop, data) = (stop.clone(), data.clone());
        std::thread::spawn(move || {
            let mut got = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(d) = std::fs::File::open(&data) else {
                    break;
                };
                if d.try_lock().is_ok() {
                    got += 1; // dropping `d` lets go at once
                }
            }
            got
        })
    };
    for round in 0..3 {
        let wasm = plugins.join("kvs_wasm_logger.wasm");
        let mut bytes = std::fs::read(&wasm).unwrap();
        // A custom section: another file (another SHA-256), the same module.
        bytes.extend_from_slice(&[0, 5, 4, b'r', b'0' + round, b'x', b'x']);
        std::fs::write(&wasm, bytes).unwrap();
        let (code, out, err) = crate::util::kvs_command(&["reload", "--admin", &kvs.admin()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("swapped"), "{out}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        grabber.join().unwrap(),
        0,
        "the lock was free during a swap"
    );
    assert_eq!(
        http_client()
            .put(kvs.at("/v1/key/after"))
            .body("v")
            .send()
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    kvs.stop();
}

#[test]
fn a_wasm_logger_and_a_wasm_frontend_keep_data_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "wasm-log", "wasm-rest", "");
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"a/b c".to_vec(), b"tab\there".to_vec()),
        (b"nul\0\n".to_vec(), b"".to_vec()),
        ("ключ".as_bytes().to_vec(), vec![0xff; 70_000]),
    ];
    let http = http_client();
    let kvs = Kvs::start(&cfg, &staged_plugins(), &[]);
    for (k, v) in &cases {
        let r = http
            .put(kvs.at(&format!("/v1/key/{}", encode_key(k))))
            .body(v.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", kvs.log());
    }
    assert_eq!(
        get_status(&http, kvs.at("/v1/key/missing")),
        StatusCode::NOT_FOUND
    );
    let r = http.post(kvs.at("/v1/key/x")).send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers()["allow"].to_str().unwrap().contains("PUT"));
    assert_eq!(
        http.delete(kvs.at("/v1/key/missing"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get_status(&http, kvs.at("/v1/key/")),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(get_status(&http, kvs.at("/readyz")), StatusCode::OK);
    kvs.stop();

    let kvs = Kvs::start(&cfg, &staged_plugins(), &[]);
    assert_reads_back(&http, &kvs, &cases);
    kvs.stop();
}

#[test]
fn native_and_wasm_plug_ins_mix_both_ways() {
    for (logger, frontend) in [("file", "wasm-rest"), ("wasm-log", "rest")] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), logger, frontend, "");
        let http = http_client();
        let kvs = Kvs::start(&cfg, &staged_plugins(), &[]);
        let r = http
            .put(kvs.at("/v1/key/mixed"))
            .body(logger)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{logger}+{frontend}");
        if frontend == "rest" {
            // wasm-log declares log:expiry: a deadline is stored and replayed.
            let r = http
                .put(kvs.at("/v1/key/lease"))
                .header("kvs-ttl-ms", "60000")
                .body("v")
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "{logger}: {:?}", r.text());
        }
        kvs.stop();
        let kvs = Kvs::start(&cfg, &staged_plugins(), &[]);
        assert_eq!(
            http.get(kvs.at("/v1/key/mixed"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
            logger
        );
        if frontend == "rest" {
            let r = http.get(kvs.at("/v1/key/lease")).send().unwrap();
            assert!(
                r.headers().contains_key("kvs-ttl-ms"),
                "{logger}: the deadline"
            );
        }
        kvs.stop();
    }
}

/// kvs with the file logger and the `hostile` fixture frontend, whose table gets
/// `sandbox` (TOML lines) besides a free port.
fn start_hostile(dir: &Path, sandbox: &str) -> Kvs {
    let plugins = copy_of_staged_plugins(dir);
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_hostile"),
        plugins.join("hostile.wasm"),
    )
    .unwrap();
    let cfg = config(
        dir,
        "file",
        "hostile",
        &format!(
            "[plugins.hostile]\nlisten = \"127.0.0.1:0\"\n{sandbox}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
    );
    Kvs::start(&cfg, &plugins, &[])
}

/// The time a guest's call waits for the log is not charged to it, but at most ten
/// timeouts' worth: a guest that keeps its host waiting — an endless loop of increments,
/// each a few microseconds of its own time and 20 ms of the log's — still ends, about
/// 1.1 s into a 100 ms timeout (without the bound it would run for minutes).
#[test]
fn a_guest_that_keeps_its_host_waiting_for_the_log_still_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = crate::util::staged_plugins_and_memory_logger(dir.path());
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_hostile"),
        plugins.join("hostile.wasm"),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        "memory",
        "hostile",
        &format!(
            "[plugins.memory]\nnamespace = {:?}\nappend_delay_ms = 20\n\
             [plugins.hostile]\nlisten = \"127.0.0.1:0\"\ncall_timeout_ms = 100\n",
            crate::util::namespace("incr-forever")
        ),
    );
    let kvs = Kvs::start(&cfg, &plugins, &[]);
    let http = http_client();
    let started = std::time::Instant::now();
    let r = http.get(kvs.at("/incr-forever")).send().unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(r.text().unwrap().contains("timeout"));
    assert!(
        took < std::time::Duration::from_secs(5),
        "the endless loop of waits ran {took:?}"
    );
    assert_eq!(get_status(&http, kvs.at("/ok")), StatusCode::OK);
    kvs.stop();
}

#[test]
fn hostile_guests_fail_their_own_call_and_the_host_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(
        dir.path(),
        "call_timeout_ms = 300\nmemory_max_mb = 32\npool_size = 2\n",
    );
    let http = http_client();
    let cases = [
        ("/trap", StatusCode::INTERNAL_SERVER_ERROR, "wasm trap"),
        ("/spin", StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ("/hog", StatusCode::INTERNAL_SERVER_ERROR, "oom"),
        ("/escape", StatusCode::OK, "denied"),
        // A guest that rewrites Extism's kernel bookkeeping gets its own call failed
        // (the host bounds-checks every length it reads there; it used to SIGSEGV).
        (
            "/corrupt-block",
            StatusCode::INTERNAL_SERVER_ERROR,
            "out of bounds",
        ),
        // A WASI sleep is bounded by the call's timeout like a loop is.
        ("/sleep/8000", StatusCode::GATEWAY_TIMEOUT, "timeout"),
        // Direct host calls (1.4) naming ranges outside the guest's memory.
        (
            "/direct-bad-input",
            StatusCode::INTERNAL_SERVER_ERROR,
            "outside the guest's memory",
        ),
        (
            "/direct-bad-output",
            StatusCode::INTERNAL_SERVER_ERROR,
            "outside the guest's memory",
        ),
        // An op that names no host function is refused; the instance stays.
        (
            "/direct-bad-op",
            StatusCode::OK,
            "refused: 2 kvs_call: no host function has op 999",
        ),
    ];
    for (path, status, says) in cases {
        let started = std::time::Instant::now();
        let r = http.get(kvs.at(path)).send().unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body = r.text().unwrap();
        assert!(body.contains(says), "{path}: {body}");
        assert!(
            started.elapsed().as_secs() < 5,
            "{path} took {:?}",
            started.elapsed()
        );
        // The host is still there, and the next call gets a working instance.
        for _ in 0..3 {
            let r = http.get(kvs.at("/ok")).send().unwrap();
            assert_eq!(
                (r.status(), r.text().unwrap()),
                (StatusCode::OK, "ok".to_string()),
                "after {path}"
            );
        }
    }
    assert_eq!(get_status(&http, kvs.at("/healthz")), StatusCode::OK);
    // The admin listener counted each failure by kind, and each discarded instance.
    let metrics = http
        .get(format!("{}/metrics", kvs.admin()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "kvs_wasm_failures_total{kind=\"trap\",plugin=\"hostile\"} 5",
        "kvs_wasm_failures_total{kind=\"timeout\",plugin=\"hostile\"} 2",
        "kvs_wasm_instance_replacements_total{plugin=\"hostile\"} 7",
        "kvs_wasm_calls_total{plugin=\"hostile\"} 36",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    kvs.stop();
}

/// A hand-written HTTP frontend that takes direct calls (1.4) and lies in them:
/// `buffer` and `dispatch` are the bodies of its `kvs_buffer` and `kvs_dispatch`.
fn lying_guest(name: &str, buffer: &str, dispatch: &str) -> Vec<u8> {
    let handshake = kvs_plugin_api::wire::Handshake {
        api_major: API_MAJOR,
        api_minor: API_MINOR,
        kind: kvs_plugin_api::PluginKind::FRONTEND,
        name: name.into(),
        version: "0.1.0".into(),
        description: "test fixture: lies in direct calls".into(),
        capabilities: vec![kvs_plugin_api::capability::FRONTEND_HTTP.into()],
    }
    .encode();
    let data: String = handshake.iter().map(|b| format!("\\{b:02x}")).collect();
    let len = handshake.len();
    wat::parse_str(format!(
        r#"(module
             (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
             (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
             (import "extism:host/env" "output_set" (func $output (param i64 i64)))
             (import "extism:host/user" "kvs_call"
               (func $kvs_call (param i32 i32 i32 i32 i32) (result i32)))
             (import "extism:host/user" "kvs_call_result"
               (func $kvs_call_result (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "{data}")
             (func (export "kvs_handshake") (result i32) (local $p i64) (local $i i32)
               (local.set $p (call $alloc (i64.const {len})))
               (block $done (loop $copy
                 (br_if $done (i32.ge_u (local.get $i) (i32.const {len})))
                 (call $store (i64.add (local.get $p) (i64.extend_i32_u (local.get $i)))
                              (i32.load8_u (local.get $i)))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br $copy)))
               (call $output (local.get $p) (i64.const {len}))
               (i32.const 0))
             (func (export "kvs_http_handle") (result i32) (i32.const 0))
             (func (export "kvs_buffer") (param i32) (result i32) {buffer})
             (func (export "kvs_dispatch") (param i32 i32) (result i64) {dispatch}))"#
    ))
    .unwrap()
}

#[test]
fn guests_that_lie_in_direct_calls_fail_their_own_call_and_the_host_keeps_serving() {
    let cases = [
        (
            "no-buffer",
            "(i32.const 0)",
            "(i64.const 0)",
            "lent no buffer",
        ),
        (
            "buffer-outside",
            "(i32.const 0x7fff0000)",
            "(i64.const 0)",
            "outside its memory",
        ),
        (
            "answer-outside",
            "(i32.const 1024)",
            "(i64.const 0x7fffff0000000100)",
            "outside its memory",
        ),
        ("trap", "(i32.const 1024)", "unreachable", "wasm trap"),
    ];
    for (name, buffer, dispatch, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let plugins = copy_of_staged_plugins(dir.path());
        std::fs::write(
            plugins.join(format!("{name}.wasm")),
            lying_guest(name, buffer, dispatch),
        )
        .unwrap();
        let cfg = config(
            dir.path(),
            "file",
            name,
            &format!("[plugins.{name}]\nlisten = \"127.0.0.1:0\"\n"),
        );
        let kvs = Kvs::start(&cfg, &plugins, &[]);
        let http = http_client();
        for _ in 0..3 {
            let r = http.get(kvs.at("/v1/key/k")).send().unwrap();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR, "{name}");
            let body = r.text().unwrap();
            assert!(body.contains(says), "{name}: {body}");
        }
        assert_eq!(
            get_status(&http, kvs.at("/healthz")),
            StatusCode::OK,
            "{name}"
        );
        kvs.stop();
    }
}

/// A host-call result too large for the guest's buffer is held for `kvs_call_result`
/// only until the guest call ends: a guest that traps before collecting it must not
/// leave it for the next call on that thread — another instance, serving another
/// client. The guest: for a long request (a long path) it makes a host call whose
/// answer cannot fit (capacity 0) and traps; for a short one it first asks for a held
/// result and traps if there is one (a leak), answering an empty frame otherwise.
#[test]
fn a_result_held_for_a_guest_that_trapped_is_not_handed_to_the_next_call() {
    let dispatch = r#"
        (if (i32.gt_u (local.get 1) (i32.const 200))
          (then
            (drop (call $kvs_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
            (unreachable)))
        (if (i32.ge_s (call $kvs_call_result (i32.const 8192) (i32.const 4096)) (i32.const 0))
          (then (unreachable)))
        (i64.const 0)"#;
    let module = lying_guest("held", "(i32.const 1024)", dispatch);
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    std::fs::write(plugins.join("held.wasm"), module).unwrap();
    let cfg = config(
        dir.path(),
        "file",
        "held",
        // One thread: the two requests' calls run where the held result was left.
        "[plugins.held]\nlisten = \"127.0.0.1:0\"\nworker_threads = 1\n",
    );
    let kvs = Kvs::start(&cfg, &plugins, &[]);
    let http = http_client();
    let long = format!("/v1/key/{}", "k".repeat(300));
    for _ in 0..3 {
        let r = http.get(kvs.at(&long)).send().unwrap();
        assert!(
            r.text().unwrap().contains("wasm trap"),
            "the long request traps"
        );
        let r = http.get(kvs.at("/v1/key/k")).send().unwrap();
        let body = r.text().unwrap();
        assert!(
            !body.contains("wasm trap"),
            "the next call found the trapped call's held result: {body}"
        );
    }
    kvs.stop();
}

/// Two frontends told to listen on one address: the second is refused by name before
/// it starts (it would otherwise share the first's listener), and kvs does not start.
#[test]
fn two_frontends_on_one_address_stop_start_up_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "logger = \"file\"\nfrontends = [\"rest\", \"wasm-rest\"]\n\
             [plugins.file]\npath = {:?}\n\
             [plugins.rest]\nlisten = \"127.0.0.1:{port}\"\n\
             [plugins.wasm-rest]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("kvs.log")
        ),
    )
    .unwrap();
    let log = match Kvs::try_start(&cfg, &staged_plugins(), &[]) {
        Ok(kvs) => {
            kvs.stop();
            panic!("kvs started with two frontends on one address");
        }
        Err(log) => log,
    };
    assert!(
        log.contains(&format!(
            "frontend wasm-rest would listen on 127.0.0.1:{port}, where rest does"
        )),
        "{log}"
    );
    assert!(!log.contains("frontend wasm-rest serving"), "{log}");
}

#[test]
fn spinning_guests_leave_a_worker_free_for_other_requests() {
    // Guest calls run on the frontend's async workers; one that runs long hands its
    // worker's other tasks to a new thread. Three calls spinning to their timeout on a
    // two-worker server must not stall anything else.
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(
        dir.path(),
        "call_timeout_ms = 3000\npool_size = 4\nworker_threads = 2\n",
    );
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let url = kvs.at("/spin");
            std::thread::spawn(move || http_client().get(url).send().unwrap().status())
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let http = http_client();
    for path in ["/healthz", "/ok"] {
        let started = std::time::Instant::now();
        let r = http.get(kvs.at(path)).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1500),
            "{path} waited {:?} behind spinning guests",
            started.elapsed()
        );
    }
    for spinner in spinners {
        assert_eq!(spinner.join().unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    kvs.stop();
}

#[test]
fn a_sleeping_guest_is_stopped_at_its_timeout_and_never_delays_health_checks() {
    // A WASI sleep blocks in the host, where epoch interruption cannot reach: before
    // the sandbox bounded it, an 8 s sleep under a 1 s timeout answered after 8.1 s and
    // held /healthz on the same listener for 7.7 s. Now the sleep ends at the call's
    // deadline, and a sleeping guest hands its worker's other tasks off as a spinning
    // one does, so /healthz is answered long before the sleepers time out.
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(
        dir.path(),
        "call_timeout_ms = 2000\npool_size = 4\nworker_threads = 2\n",
    );
    let sleepers: Vec<_> = (0..3)
        .map(|_| {
            let url = kvs.at("/sleep/8000");
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let status = http_client().get(url).send().unwrap().status();
                (status, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let http = http_client();
    let started = std::time::Instant::now();
    assert_eq!(get_status(&http, kvs.at("/healthz")), StatusCode::OK);
    let health = started.elapsed();
    println!("/healthz while three guests sleep: {health:?}");
    assert!(
        health < std::time::Duration::from_secs(1),
        "/healthz waited {health:?} behind sleeping guests; kvs said:\n{}",
        kvs.log()
    );
    for sleeper in sleepers {
        let (status, took) = sleeper.join().unwrap();
        println!("an 8 s sleep under a 2 s timeout: {status} after {took:?}");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    }
    kvs.stop();
}

#[test]
fn one_guest_timing_out_does_not_cut_short_another_guests_call() {
    // Timeouts are per call: a call that outlives its deadline is stopped, while a call
    // on another instance of the same module, still within its own, runs to the end.
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(dir.path(), "call_timeout_ms = 1000\npool_size = 2\n");
    let spin = kvs.at("/spin");
    let spinner = std::thread::spawn(move || http_client().get(spin).send().unwrap().status());
    // Busy from 0.5 s to 1.3 s after the spinner started: across its timeout at 1 s.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = http_client().get(kvs.at("/busy/800")).send().unwrap();
    assert_eq!(
        (r.status(), r.text().unwrap()),
        (StatusCode::OK, "done".to_string())
    );
    assert_eq!(spinner.join().unwrap(), StatusCode::GATEWAY_TIMEOUT);
    kvs.stop();
}

#[test]
fn bad_wasm_modules_are_refused_with_the_documented_messages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_no_handshake"),
        dir.path().join("none.wasm"),
    )
    .unwrap();
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_wrong_major"),
        dir.path().join("future.wasm"),
    )
    .unwrap();
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_newer_minor"),
        dir.path().join("newer.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm at all").unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x01\0\0\0\x01\xff").unwrap();
    let catalog = Catalog::scan(dir.path()).unwrap();
    assert!(catalog.plugins.is_empty());
    let reason = |f: &str| {
        catalog
            .refused
            .iter()
            .find(|r| r.path.ends_with(f))
            .unwrap()
            .reason
            .clone()
    };
    assert!(
        reason("none.wasm").contains("no kvs_handshake export"),
        "{}",
        reason("none.wasm")
    );
    let future = reason("future.wasm");
    assert!(
        future.contains("plugin-api 2.0")
            && future.contains("rebuild the plug-in against plugin-api 1.x"),
        "{future}"
    );
    let newer = reason("newer.wasm");
    let (host, next) = (
        format!("plugin-api {API_MAJOR}.{API_MINOR}"),
        format!("plugin-api {API_MAJOR}.{}", API_MINOR + 1),
    );
    assert!(
        newer.contains(&next) && newer.contains(&host) && newer.contains("upgrade kvs"),
        "{newer}"
    );
    let junk = reason("junk.wasm");
    assert!(
        junk.contains("not a WebAssembly module") && junk.contains("wasm32-wasip1"),
        "{junk}"
    );
    let broken = reason("broken.wasm");
    assert!(
        broken.contains("not a loadable WebAssembly module"),
        "{broken}"
    );
}

#[test]
fn a_wasm_logger_without_a_granted_directory_fails_start_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "logger = \"wasm-log\"\nfrontends = [\"rest\"]\n[plugins.rest]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = Kvs::try_start(&path, &staged_plugins(), &[])
        .err()
        .expect("started without a grant");
    assert!(out.contains("data_dir"), "{out}");
}

#[test]
fn a_guest_replay_that_never_finishes_fails_start_up_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_stuck_replay"),
        dir.path().join("stuck.wasm"),
    )
    .unwrap();
    let catalog = Catalog::scan(dir.path()).unwrap();
    let plugin = catalog
        .find(kvs_plugin_api::PluginKind::LOGGER, "stuck-replay")
        .unwrap();
    for mode in ["same", "creep"] {
        let mut logger =
            kvs_host::lifecycle::open_logger(plugin, &format!("mode = {mode:?}")).unwrap();
        let map = kvs_host::store::Map::default();
        let started = std::time::Instant::now();
        let err = kvs_host::writer::replay(logger.as_mut(), &map).unwrap_err();
        assert!(
            err.message().contains("not making progress"),
            "{mode}: {err}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{mode}"
        );
    }
}

#[test]
fn unknown_keys_in_a_wasm_frontends_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "file", "wasm-rest", "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[plugins.wasm-rest]\n",
        "[plugins.wasm-rest]\ncolour = \"blue\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let out = Kvs::try_start(&path, &staged_plugins(), &[])
        .err()
        .expect("started with an unknown key");
    assert!(
        out.contains("unknown key(s) colour") && out.contains("sandbox settings"),
        "{out}"
    );
}

/// A WASM frontend that exports `kvs_http_configure` (the template) gets its own keys;
/// it refuses one it does not know, naming it, and kvs does not start.
#[test]
fn a_wasm_frontend_that_takes_a_config_gets_its_table_and_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    let template = wasm_module("kvs_wasm_template_frontend");
    std::fs::copy(&template, plugins.join("template-frontend.wasm")).unwrap();
    let table =
        |keys: &str| format!("[plugins.template-wasm-frontend]\nlisten = \"127.0.0.1:0\"\n{keys}");
    let path = config(dir.path(), "file", "rest", &table("prefix = \"/k/\"\n"));
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "frontends = [\"rest\"]",
        "frontends = [\"rest\", \"template-wasm-frontend\"]",
    );
    std::fs::write(&path, text).unwrap();
    let kvs = Kvs::start(&path, &plugins, &[]);
    let http = http_client();
    let r = http
        .put(format!("{}/v1/key/a%2Fb", kvs.endpoint("rest")))
        .body("configured")
        .send()
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let template = kvs.endpoint("template-wasm-frontend");
    // The configured prefix, a percent-encoded key, a query string dropped.
    let r = http.get(format!("{template}/k/a%2Fb?x=1")).send().unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.text().unwrap(), "configured");
    let r = http.get(format!("{template}/v1/key/a%2Fb")).send().unwrap();
    assert_eq!(
        r.status(),
        reqwest::StatusCode::NOT_FOUND,
        "the default prefix was used"
    );
    kvs.stop();

    let path = config(dir.path(), "file", "rest", &table("prefx = \"/k/\"\n"));
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "frontends = [\"rest\"]",
        "frontends = [\"rest\", \"template-wasm-frontend\"]",
    );
    std::fs::write(&path, text).unwrap();
    let out = Kvs::try_start(&path, &plugins, &[])
        .err()
        .expect("started with an unknown key");
    assert!(
        out.contains("[plugins.template-wasm-frontend]") && out.contains("prefx"),
        "{out}"
    );
}

/// Modules that try to stall discovery, as WebAssembly text: (file name, module, what
/// the refusal must say).
const STALLING_MODULES: [(&str, &str, &str); 8] = [
    (
        "start-loop.wasm",
        r#"(module (func $spin (loop $l (br $l))) (start $spin)
             (func (export "kvs_handshake") (result i32) i32.const 0))"#,
        "timeout",
    ),
    (
        "initialize-loop.wasm",
        r#"(module (func (export "_initialize") (loop $l (br $l)))
             (func (export "kvs_handshake") (result i32) i32.const 0))"#,
        "timeout",
    ),
    (
        "handshake-loop.wasm",
        r#"(module (func (export "kvs_handshake") (result i32) (loop $l (br $l)) i32.const 0))"#,
        "timeout",
    ),
    (
        "memory-hog.wasm",
        r#"(module (memory 1)
             (func (export "kvs_handshake") (result i32)
               (block $full (loop $more
                 (br_if $full (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
                 (br $more)))
               unreachable))"#,
        "oom",
    ),
    (
        "huge-memory.wasm",
        r#"(module (memory 60000) (func (export "kvs_handshake") (result i32) i32.const 0))"#,
        "oom",
    ),
    // Extism's kernel bookkeeping rewritten by the guest (store_u64): the handshake's
    // output length (the 92-byte module from the sandbox probe, which made kvs SIGSEGV),
    // and the length of a block handed to a host function.
    (
        "kernel-output-length.wasm",
        r#"(module (import "extism:host/env" "store_u64" (func $s (param i64 i64)))
             (func (export "kvs_handshake") (result i32)
               (call $s (i64.const 57) (i64.const 0x10000000)) (i32.const 0)))"#,
        "out of bounds",
    ),
    (
        "kernel-block-length.wasm",
        r#"(module
             (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
             (import "extism:host/env" "store_u64" (func $s (param i64 i64)))
             (import "extism:host/user" "kvs_log" (func $log (param i64)))
             (func (export "kvs_handshake") (result i32) (local $p i64)
               (local.set $p (call $alloc (i64.const 16)))
               (call $s (i64.sub (local.get $p) (i64.const 4)) (i64.const 0x10000000))
               (call $log (local.get $p))
               (i32.const 0)))"#,
        "out of bounds",
    ),
    (
        "future-import.wasm",
        r#"(module (import "extism:host/user" "kvs_from_the_future" (func))
             (func (export "kvs_handshake") (result i32) i32.const 0))"#,
        "upgrade kvs",
    ),
];

#[test]
fn modules_that_try_to_stall_discovery_are_refused_quickly_and_the_rest_listed() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    for (file, text, _) in STALLING_MODULES {
        std::fs::write(plugins.join(file), wat::parse_str(text).unwrap()).unwrap();
    }
    // Too big to be worth compiling: refused by its size, without being read.
    let big = std::fs::File::create(plugins.join("oversized.wasm")).unwrap();
    big.set_len(65 << 20).unwrap();

    let started = std::time::Instant::now();
    let (code, out, err) = crate::util::kvs_command(&[
        "--plugins-dir",
        plugins.to_str().unwrap(),
        "plugins",
        "list",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    // Eight modules, each stopped by a 1 s deadline at most, plus compiling everything.
    assert!(
        elapsed < std::time::Duration::from_secs(30),
        "took {elapsed:?}"
    );
    for name in ["wasm-rest", "wasm-log", "rest", "file"] {
        assert!(
            out.contains(&format!(" {name} ")),
            "{name} not listed:\n{out}"
        );
    }
    let refusal = |file: &str| {
        out.lines()
            .find(|l| l.contains(file) && l.contains(": "))
            .unwrap_or_else(|| panic!("{file} not refused:\n{out}"))
            .to_string()
    };
    for (file, _, why) in STALLING_MODULES {
        assert!(refusal(file).contains(why), "{file}: {}", refusal(file));
    }
    assert!(refusal("oversized.wasm").contains("larger than"), "{out}");

    // A serving kvs scans the same directory and serves beside them.
    let cfg = config(dir.path(), "file", "rest", "");
    let kvs = Kvs::start(&cfg, &plugins, &[]);
    let http = http_client();
    assert_eq!(
        crate::util::put_status(&http, kvs.at("/v1/key/beside%2Fhostile"), "modules"),
        StatusCode::CREATED
    );
    assert_reads_back(
        &http,
        &kvs,
        &[(b"beside/hostile".to_vec(), b"modules".to_vec())],
    );
    kvs.stop();
}

/// Context switches of kvs's extism ticker thread so far.
fn ticker_wakeups(pid: u32) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == "extism-ticker" {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            return status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
                .sum();
        }
    }
    panic!("no extism-ticker thread in kvs {pid}");
}

#[test]
fn an_idle_kvs_lets_the_wasm_timeout_ticker_sleep_and_a_call_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(dir.path(), "call_timeout_ms = 300\n");
    let http = http_client();
    assert_eq!(get_status(&http, kvs.at("/ok")), StatusCode::OK);
    // Idle for well over a second (100 ticks, more on a busy machine): the ticker goes
    // to sleep. Awake, it would switch about 100 times a second.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let before = ticker_wakeups(kvs.pid());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let woke = ticker_wakeups(kvs.pid()) - before;
    assert!(woke < 20, "the idle ticker woke {woke} times in a second");
    // The next call wakes it: a spinning guest is still stopped at its timeout.
    let started = std::time::Instant::now();
    let spin = http.get(kvs.at("/spin")).send().unwrap();
    assert_eq!(spin.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(get_status(&http, kvs.at("/ok")), StatusCode::OK);
    kvs.stop();
}

#[test]
fn requests_still_waiting_for_an_instance_at_shutdown_are_answered_503() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(dir.path(), "pool_size = 1\ncall_timeout_ms = 10000\n");
    let (busy_url, waiting_url) = (kvs.at("/busy/2500"), kvs.at("/ok"));
    let http = http_client();
    std::thread::scope(|s| {
        // The only instance is busy for 2.5 s; a second request queues for it.
        let busy = s.spawn(|| http.get(&busy_url).send().unwrap().status());
        std::thread::sleep(std::time::Duration::from_millis(300));
        let waiting = s.spawn(|| {
            let started = std::time::Instant::now();
            let status = http.get(&waiting_url).send().unwrap().status();
            (status, started.elapsed())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Shutdown: the queued request is answered at once, the running one finishes.
        kvs.stop();
        let (status, took) = waiting.join().unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            took < std::time::Duration::from_millis(1500),
            "waited {took:?}"
        );
        assert_eq!(busy.join().unwrap(), StatusCode::OK);
    });
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// kvs's resident memory now, and its peak since the last [`reset_peak`], in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    (
        status_kib(pid, "VmRSS") >> 10,
        status_kib(pid, "VmHWM") >> 10,
    )
}

/// Resets kvs's peak resident size (`VmHWM`) to its current one.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// One guest call putting 1 MiB values in a loop: without a bound it queued every one
/// of them (issue 38: 3,300 writes, 5.3 GB). With `call_max_write_mb` (default 64) the
/// call waits for its earlier writes once 64 MiB are queued, so its whole run adds at
/// most a few times that to kvs's peak memory, however many it writes; and an
/// unbounded run (the bound raised past the loop) shows the difference.
#[test]
fn a_guest_call_queuing_1_mib_writes_in_a_loop_is_held_to_its_write_bound() {
    const WRITES: usize = 1000;
    let mut peaks = Vec::new();
    for (label, keys) in [
        ("defaults (1024 writes / 64 MiB)", ""),
        (
            "bound raised past the loop (100000 writes / 4096 MiB)",
            // The writer's own overload bounds (256 MiB queued, shedding) raised too.
            "call_max_writes = 100000\ncall_max_write_mb = 4096\nmemory_budget_mb = 4096\n\
             [writer]\nqueue_max_bytes = 8589934592\nshed_delay_ms = 0\n",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let kvs = start_hostile(dir.path(), &format!("call_timeout_ms = 120000\n{keys}"));
        let http = http_client();
        // Warm: an instance that has already put one value, its memory grown.
        assert_eq!(get_status(&http, kvs.at("/put-loop/1")), StatusCode::OK);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (before, _) = rss_mib(kvs.pid());
        reset_peak(kvs.pid());
        let started = std::time::Instant::now();
        let r = http
            .get(kvs.at(&format!("/put-loop/{WRITES}")))
            .send()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(r.status(), StatusCode::OK, "{label}: {}", kvs.log());
        assert_eq!(r.text().unwrap(), format!("queued {WRITES}"));
        let (_, peak) = rss_mib(kvs.pid());
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (after, _) = rss_mib(kvs.pid());
        println!(
            "{label}: {WRITES} x 1 MiB puts in one call took {took:?}; kvs RSS {before} MiB \
             before, peak {peak} MiB (+{}), {after} MiB 2 s after (+{})",
            peak - before,
            after.saturating_sub(before)
        );
        peaks.push((peak - before, after.saturating_sub(before)));
        kvs.stop();
    }
    let (bounded, unbounded) = (peaks[0], peaks[1]);
    // The stated bound: the call's 64 MiB of queued writes, copied on their way (the
    // guest's input, the queued write, the logger's batch, the map's entry) — 320 MiB.
    assert!(
        bounded.0 < 320,
        "the bounded call added {} MiB at its peak",
        bounded.0
    );
    assert!(
        bounded.1 < 320,
        "{} MiB still held after the bounded call",
        bounded.1
    );
    assert!(
        unbounded.0 > 2 * bounded.0,
        "the bound made no difference: {unbounded:?} vs {bounded:?}"
    );
}

/// An HTTP frontend has `pool_size` instances at most: if they could not fit in
/// `memory_budget_mb`, kvs does not start.
#[test]
fn a_wasm_http_pool_larger_than_its_memory_budget_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "file", "wasm-rest", "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[plugins.wasm-rest]\n",
        "[plugins.wasm-rest]\npool_size = 20\nmemory_max_mb = 64\n",
    );
    std::fs::write(&path, text).unwrap();
    let out = Kvs::try_start(&path, &staged_plugins(), &[])
        .err()
        .expect("started with 20 x 64 MiB instances in a 1024 MiB budget");
    assert!(
        out.contains("1280 MiB") && out.contains("memory_budget_mb = 1024"),
        "{out}"
    );
}

/// A logger whose replay hands out a new event in every chunk, forever, passes every
/// local progress rule; `replay_timeout_ms` ends it: kvs exits with the reason.
#[test]
fn an_endless_replay_stops_start_up_within_replay_timeout_ms() {
    let dir = tempfile::tempdir().unwrap();
    let (path, plugins) = stuck_logger_config(dir.path(), "endless", "replay_timeout_ms = 2000\n");
    let started = std::time::Instant::now();
    let out = Kvs::try_start(&path, &plugins, &[])
        .err()
        .expect("an endless replay let kvs start");
    let took = started.elapsed();
    let reason = out
        .lines()
        .find(|l| l.contains("replay did not finish"))
        .unwrap_or_else(|| panic!("no reason given:\n{out}"));
    println!("endless replay: kvs exited after {took:?}: {reason}");
    assert!(
        reason.contains("replay_timeout_ms = 2000") && reason.contains("stuck-replay"),
        "{reason}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "start-up took {took:?}"
    );
}

/// The numbers in a `N guest log line(s) dropped` warning, summed.
fn dropped_lines(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split_once(" guest log line(s) dropped"))
        .filter_map(|(head, _)| head.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// `kvs_log` passes `log_lines_per_sec` lines a second per plug-in, counts the rest and
/// says how many when lines pass again, and cuts a line at `log_line_max_bytes`.
#[test]
fn a_guest_flooding_the_log_is_rate_limited_and_its_long_lines_cut() {
    const LINES: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_hostile(
        dir.path(),
        "call_timeout_ms = 60000\nlog_lines_per_sec = 50\nlog_line_max_bytes = 1000\n",
    );
    let http = http_client();
    let started = std::time::Instant::now();
    assert_eq!(
        get_status(&http, kvs.at(&format!("/log-flood/{LINES}"))),
        StatusCode::OK
    );
    let took = started.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The limit has lifted: this line passes, after the count of those dropped.
    assert_eq!(get_status(&http, kvs.at("/log-flood/1")), StatusCode::OK);
    assert_eq!(
        get_status(&http, kvs.at("/log-long/5000000")),
        StatusCode::OK
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = kvs.stop();
    let passed = log.lines().filter(|l| l.contains("flood line ")).count() as u64;
    let dropped = dropped_lines(&log);
    let long = log
        .lines()
        .find(|l| l.contains("yyyy"))
        .unwrap_or_else(|| panic!("the long line was not logged"));
    println!(
        "log flood: {LINES} lines in {took:?} + 1 after 1.1 s: {passed} logged, {dropped} \
         counted as dropped; a 5000000-byte line logged as {} bytes",
        long.len()
    );
    assert_eq!(passed + dropped, LINES + 1, "every line logged or counted");
    // The flood touches at most took + 2 one-second windows (it starts mid-window);
    // the single line sent 1.1 s later may fall in one more.
    let windows = took.as_secs() + 2;
    assert!(
        passed <= 50 * windows + 1,
        "{passed} lines passed in {windows} one-second windows and one line after"
    );
    assert!(
        long.len() < 1300 && long.contains("[4999000 bytes cut]"),
        "{}",
        &long[..long.len().min(300)]
    );
}

/// A guest can leave a (relative) symbolic link out of its `data_dir` (it cannot read
/// through it: wasi-common refuses to follow it out); kvs removes it when the plug-in next opens,
/// and keeps links that stay inside.
#[test]
fn symbolic_links_a_guest_leaves_out_of_its_data_dir_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("guest-data");
    let sandbox = format!("data_dir = {data:?}\n");
    let kvs = start_hostile(dir.path(), &sandbox);
    let r = http_client().get(kvs.at("/symlink")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().unwrap();
    println!("guest: {body}");
    kvs.stop();
    let link = data.join("passwd");
    // wasi-common refuses an absolute target, takes a relative one, and refuses to
    // follow it out.
    assert!(body.contains("absolute symlink: Err("), "{body}");
    assert!(body.contains("relative symlink: Ok(())"), "{body}");
    assert!(body.contains("read through it: Err"), "{body}");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../../../../../../../etc/passwd"),
        "the guest's link"
    );
    // Two more, made as a guest could: one inside (kept), one dangling (removed).
    std::fs::write(data.join("file"), "x").unwrap();
    std::os::unix::fs::symlink("file", data.join("inside")).unwrap();
    std::fs::create_dir(data.join("sub")).unwrap();
    std::os::unix::fs::symlink("../../elsewhere", data.join("sub/dangling")).unwrap();

    // `start_hostile` made its plugins dir already: start again by hand.
    let kvs = Kvs::start(
        &dir.path().join("config.toml"),
        &dir.path().join("plugins"),
        &[],
    );
    let log = kvs.stop();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the link out is still there"
    );
    assert!(std::fs::symlink_metadata(data.join("sub/dangling")).is_err());
    assert_eq!(std::fs::read_to_string(data.join("inside")).unwrap(), "x");
    let removed = log
        .lines()
        .filter(|l| l.contains("a symbolic link to") && l.contains("outside it"))
        .count();
    assert_eq!(removed, 2, "{log}");
}

/// kvs with the `stuck-replay` fixture logger in `mode`, with `extra` in its table.
fn stuck_logger_config(dir: &Path, mode: &str, extra: &str) -> (PathBuf, PathBuf) {
    let plugins = copy_of_staged_plugins(dir);
    std::fs::copy(
        wasm_module("kvs_wasm_fixture_stuck_replay"),
        plugins.join("stuck.wasm"),
    )
    .unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "logger = \"stuck-replay\"\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 2000\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.stuck-replay]\nmode = {mode:?}\n{extra}"
        ),
    )
    .unwrap();
    (path, plugins)
}

/// SIGTERM ends kvs within `shutdown_timeout_ms` whatever a guest logger does: here one
/// whose replay never ends (within a generous `replay_timeout_ms`), so start-up never
/// completes. Before, the signal was acted on only once start-up was done.
#[test]
fn sigterm_ends_kvs_within_its_shutdown_timeout_during_an_endless_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (config, plugins) =
        stuck_logger_config(dir.path(), "endless", "replay_timeout_ms = 600000\n");
    let kvs = Kvs::start_listening(&config, &plugins);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, took, log) = kvs.terminate();
    println!("SIGTERM during an endless replay: exit {status:?} after {took:?}");
    assert!(
        status.is_some(),
        "kvs still running 30 s after SIGTERM:\n{log}"
    );
    assert!(
        took < std::time::Duration::from_secs(4),
        "SIGTERM took {took:?} (shutdown_timeout_ms = 2000):\n{log}"
    );
    assert!(
        log.contains("did not stop within shutdown_timeout_ms"),
        "{log}"
    );
}

/// The same for a logger whose append sleeps (a WASI sleep, longer than the shutdown
/// timeout but within its own call timeout): a write is waiting on it when SIGTERM comes.
#[test]
fn sigterm_ends_kvs_within_its_shutdown_timeout_while_a_logger_append_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let (config, plugins) = stuck_logger_config(dir.path(), "sleepy", "call_timeout_ms = 30000\n");
    let kvs = Kvs::start(&config, &plugins, &[]);
    let url = kvs.at("/v1/key/k");
    let writer = std::thread::spawn(move || http_client().put(url).body("v").send());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, took, log) = kvs.terminate();
    println!("SIGTERM while an append sleeps: exit {status:?} after {took:?}");
    assert!(
        status.is_some(),
        "kvs still running 30 s after SIGTERM:\n{log}"
    );
    assert!(
        took < std::time::Duration::from_secs(4),
        "SIGTERM took {took:?} (shutdown_timeout_ms = 2000):\n{log}"
    );
    // The write was never acknowledged: its connection was cut or it was refused.
    if let Ok(r) = writer.join().unwrap() {
        assert_ne!(r.status(), StatusCode::CREATED, "{log}");
    }
}

/// Sends `request` as it is on a new connection and returns the status line and body.
fn raw_http(endpoint: &str, request: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A body the client garbled is its error (400) and one over the value limit is 413,
/// from the WASM edge as from native `rest` (a probe found the WASM edge answering 413
/// "value is larger than the limit" to a bad chunk size); neither stores anything.
#[test]
fn malformed_and_oversized_bodies_get_400_and_413_from_rest_and_wasm_rest_alike() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "file",
        "rest",
        "[limits]\nmax_value_bytes = 100\n",
    );
    let toml = std::fs::read_to_string(&cfg).unwrap();
    let toml = toml.replace(
        r#"frontends = ["rest"]"#,
        r#"frontends = ["rest", "wasm-rest"]"#,
    );
    std::fs::write(&cfg, toml).unwrap();
    let kvs = Kvs::start(&cfg, &staged_plugins(), &[]);
    let chunked = |body: &str| {
        format!(
            "PUT /v1/key/c HTTP/1.1\r\nHost: kvs\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\n\r\n{body}"
        )
    };
    let big = format!("{:x}\r\n{}\r\n0\r\n\r\n", 101, "x".repeat(101));
    let cases = [
        (
            "a bad chunk size",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "a chunk longer than it said",
            chunked("2\r\nhello\r\n0\r\n\r\n"),
            "400",
        ),
        ("101 bytes in chunks", chunked(&big), "413"),
        (
            "a Content-Length of 101",
            format!(
                "PUT /v1/key/c HTTP/1.1\r\nHost: kvs\r\nConnection: close\r\n\
                 Content-Length: 101\r\n\r\n{}",
                "x".repeat(101)
            ),
            "413",
        ),
    ];
    for frontend in ["rest", "wasm-rest"] {
        let endpoint = kvs.endpoint(frontend);
        for (what, request, want) in &cases {
            let (status, body) = raw_http(&endpoint, request.as_bytes());
            assert!(
                status.starts_with(&format!("HTTP/1.1 {want}")),
                "{frontend}, {what}: {status} {body}"
            );
            assert!(!body.trim().is_empty(), "{frontend}, {what}: says why");
            if *want == "413" {
                assert!(
                    body.contains("100"),
                    "{frontend}, {what}: names the limit: {body}"
                );
            }
        }
        let http = http_client();
        assert_eq!(
            get_status(&http, format!("{endpoint}/v1/key/c")),
            StatusCode::NOT_FOUND,
            "{frontend}: nothing stored"
        );
        // The edge still serves a well-formed chunked PUT.
        let (status, body) = raw_http(&endpoint, chunked("5\r\nhello\r\n0\r\n\r\n").as_bytes());
        assert!(
            status.starts_with("HTTP/1.1 201"),
            "{frontend}: {status} {body}"
        );
        assert_eq!(
            http.get(format!("{endpoint}/v1/key/c"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
            "hello"
        );
        http.delete(format!("{endpoint}/v1/key/c")).send().unwrap();
    }
    kvs.stop();
}
