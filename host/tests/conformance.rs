//! `kvs plugins check` on every shipped plug-in, every template, and plug-ins that
//! break the contract on purpose.

use std::path::{Path, PathBuf};

use crate::util::{lib, released_minors, staged_plugins, wasm_module};

fn check(file: &Path, table: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["plugins", "check"])
        .arg(file)
        .args(["--config", table])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn shipped_plug_ins_and_templates_pass() {
    let staged = staged_plugins();
    let listen = "listen = \"127.0.0.1:0\"";
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            staged.join("libkvs_plugin_file.so"),
            "path = \"{tmp}/kvs.log\"",
        ),
        (staged.join("libkvs_plugin_rest.so"), listen),
        (staged.join("libkvs_plugin_grpc.so"), listen),
        (staged.join("kvs_wasm_logger.wasm"), ""),
        (staged.join("kvs_wasm_rest.wasm"), listen),
        (staged.join("libkvs_plugin_resp.so"), listen),
        (staged.join("kvs_wasm_resp.wasm"), listen),
        (
            lib("kvs_template_native_logger"),
            "path = \"{tmp}/template.log\"",
        ),
        (lib("kvs_template_native_frontend"), listen),
        (wasm_module("kvs_wasm_template_logger"), ""),
        (wasm_module("kvs_wasm_template_frontend"), listen),
        (wasm_module("kvs_wasm_template_stream"), listen),
        // A third party's frontend with its own line protocol over TCP.
        (lib("kvs_compat_native_frontend_1_1"), listen),
        (lib("kvs_compat_native_frontend_1_3"), listen),
    ];
    for (file, table) in cases {
        let (code, out) = check(&file, table, &[]);
        assert_eq!(code, 0, "{}:\n{out}", file.display());
        assert!(out.contains("all ") && !out.contains("FAIL"), "{out}");
        if file.ends_with("libkvs_plugin_grpc.so") {
            // Any protocol: the check connects, it does not speak HTTP at a gRPC port,
            // and says it did not try a round trip.
            assert!(
                out.contains("PASS  accepts connections at grpc://"),
                "{out}"
            );
            assert!(
                out.contains("SKIP  a round trip through its protocol"),
                "{out}"
            );
        }
        if file.ends_with("libkvs_plugin_resp.so") || file.ends_with("kvs_wasm_resp.wasm") {
            // protocol:resp: a binary key through SET/GET/DEL/GET in one pipeline.
            assert!(out.contains("PASS  serves SET/GET/DEL"), "{out}");
        }
        if file.ends_with("libkvs_plugin_rest.so") || file.ends_with("kvs_wasm_rest.wasm") {
            // Both declare protocol:kvs-rest: a key goes through them into the store.
            assert!(out.contains("PASS  serves PUT/GET/DELETE"), "{out}");
        }
    }
}

#[test]
fn loggers_built_against_every_1x_contract_load_and_pass() {
    for v in released_minors() {
        let lib_name = format!("kvs_compat_native_logger_{}", v.replace('-', "_"));
        let declared = format!("compat-logger-{v} (plugin-api {})", v.replace('-', "."));
        let (code, out) = check(&lib(&lib_name), "path = \"{tmp}/compat.log\"", &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&declared), "{out}");
    }
}

#[test]
fn the_postgres_logger_passes_against_a_real_server() {
    let pg = kvs_testkit::pg::PgServer::start();
    let table = format!("url = {:?}\ntable = \"conformance\"", pg.url());
    let (code, out) = check(
        &staged_plugins().join("libkvs_plugin_postgres.so"),
        &table,
        &[("KVS_POSTGRES_PASSWORD", kvs_testkit::pg::PASSWORD)],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn broken_plug_ins_fail_the_check_that_catches_them() {
    let memory = lib("kvs_fixture_memory_logger");
    let cases = [
        (
            "namespace = \"reorder\"\nreorder_replay = true",
            "FAIL  close, reopen: replay returns every event in order",
        ),
        (
            "namespace = \"drop\"\ndrop_empty_values = true",
            "FAIL  close, reopen: replay returns every event in order",
        ),
    ];
    for (table, says) in cases {
        let (code, out) = check(&memory, table, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(says) && out.contains("event 0 differs"),
            "{out}"
        );
    }
    // Without a config a native logger is not opened: the check must not write test
    // events wherever the logger's defaults point (e.g. a real data/kvs.log).
    let (code, out) = check(&staged_plugins().join("libkvs_plugin_file.so"), "", &[]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  open: no --config"), "{out}");
    let (code, out) = check(&lib("kvs_fixture_wrong_major"), "", &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL  handshake") && out.contains("plugin-api 2.0"),
        "{out}"
    );
    let (code, out) = check(&lib("kvs_fixture_newer_minor"), "", &[]);
    assert_eq!(code, 1);
    assert!(out.contains("upgrade kvs"), "{out}");
}

/// A frontend's own protocol, checked with `--send`/`--expect`: the stream template
/// answers as told; a wrong expectation, and a guest that traps on its input, fail
/// naming what happened. Unexpected bytes are fed to every stream guest.
#[test]
fn send_and_expect_exercise_a_frontends_own_protocol() {
    let listen = "listen = \"127.0.0.1:0\"";
    let run = |file: &Path, send: &str, expect: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["plugins", "check"])
            .arg(file)
            .args(["--config", listen, "--send", send, "--expect", expect])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let template = wasm_module("kvs_wasm_template_stream");
    let (code, out) = run(&template, "SET k v\\nGET k\\n", "OK\\nVALUE v\\n");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS  answers SET k v\\nGET k\\n with OK\\nVALUE v\\n"),
        "{out}"
    );
    assert!(out.contains("PASS  takes unexpected bytes"), "{out}");
    let (code, out) = run(&template, "GET k\\n", "VALUE x\\n");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(r#"it answered "NONE\n", expected "VALUE x\n""#),
        "{out}"
    );
    // A guest that traps on what it is sent (the fixture traps on `TRAP`).
    let trap = wasm_module("kvs_wasm_fixture_stream_trap");
    let (code, out) = run(&trap, "TRAP\\n", "anything");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("closed without an answer: the guest probably trapped"),
        "{out}"
    );
    let (code, out) = run(&trap, "hello\\n", "1 hello\\n");
    assert_eq!(code, 0, "{out}");
}

/// The native logger template follows the guide: unknown keys refused by name, and the
/// `repair = true` that `kvs --repair-log` adds to a logger's table accepted.
#[test]
fn the_logger_template_refuses_unknown_keys_and_accepts_repair() {
    let template = lib("kvs_template_native_logger");
    let (code, out) = check(&template, "path = \"{tmp}/t.log\"\nrepair = true", &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&template, "path = \"{tmp}/t.log\"\npth = \"x\"", &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("pth"), "{out}");
}
