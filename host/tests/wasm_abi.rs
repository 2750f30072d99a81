//! The WASM contract as docs/wasm-abi.md specifies it, proven by guests written from
//! that document alone: `wasm-plugins/c` (the logger `c-logger`, C) and
//! `wasm-plugins/assemblyscript` (the HTTP frontend `as-rest`, AssemblyScript). `cargo
//! xtask build` builds them into `<target>/wasm-abi/` (not staged). They pass `kvs plugins
//! check`, reproduce the spec's worked examples, and serve through a real kvs.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;

use crate::util::{
    Kvs, assert_reads_back, copy_of_staged_plugins, encode_key, get_status, http_client,
    profile_dir, put_status,
};

/// A guest `cargo xtask build` built into `<target>/wasm-abi/`.
fn abi_guest(file: &str) -> PathBuf {
    let path = profile_dir().parent().unwrap().join("wasm-abi").join(file);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

const C_LOGGER: &str = "kvs_c_logger.wasm";
const AS_FRONTEND: &str = "kvs_as_rest.wasm";

/// `dir/plugins` with the staged plug-ins and both guests.
fn plugins_with_guests(dir: &Path) -> PathBuf {
    let plugins = copy_of_staged_plugins(dir);
    for file in [C_LOGGER, AS_FRONTEND] {
        std::fs::copy(abi_guest(file), plugins.join(file)).unwrap();
    }
    plugins
}

fn config(dir: &Path, logger: &str, frontend: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "logger = {logger:?}\nfrontends = [{frontend:?}]\nshutdown_timeout_ms = 5000\n\
             [plugins.c-logger]\ndata_dir = {:?}\n\
             [plugins.file]\npath = {:?}\n\
             [plugins.as-rest]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("data"),
            dir.join("data").join("kvs.log")
        ),
    )
    .unwrap();
    path
}

fn check(file: &Path, table: &str) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["plugins", "check"])
        .arg(file)
        .args(["--config", table])
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
fn the_c_and_assemblyscript_guests_pass_kvs_plugins_check() {
    let (code, out) = check(&abi_guest(C_LOGGER), "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("wasm logger c-logger (plugin-api 1.1)"),
        "{out}"
    );
    let (code, out) = check(&abi_guest(AS_FRONTEND), "listen = \"127.0.0.1:0\"");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("wasm frontend as-rest (plugin-api 1.2)"),
        "{out}"
    );
    assert!(out.contains("(protocol:kvs-rest)"), "{out}");
}

/// `wasm-plugins/abi-vectors.mjs`: each guest, on a minimal Extism kernel in node, reads
/// the inputs of the spec's worked examples and writes its outputs byte for byte (the
/// examples are held to the host's codec by `plugin-api/tests/wasm_abi_doc.rs`).
#[test]
fn the_guests_read_and_write_the_specification_s_worked_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    abi_guest(AS_FRONTEND);
    let out = std::process::Command::new("node")
        .arg("--no-warnings")
        .arg(root.join("wasm-plugins/abi-vectors.mjs"))
        .arg(abi_guest(C_LOGGER).parent().unwrap())
        .arg(root.join("docs/wasm-abi.md"))
        .output()
        .expect("node (Debian package nodejs; cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_c_logger_and_the_assemblyscript_frontend_serve_and_keep_data_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with_guests(dir.path());
    let cfg = config(dir.path(), "c-logger", "as-rest");
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"a/b c".to_vec(), b"tab\there".to_vec()),
        (b"nul\0\n".to_vec(), b"".to_vec()),
        ("ключ".as_bytes().to_vec(), vec![0xff; 70_000]),
        // The largest value kvs takes by default (limits.max_value_bytes).
        (
            b"big".to_vec(),
            (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect(),
        ),
    ];
    let http = http_client();
    let kvs = Kvs::start(&cfg, &plugins, &[]);
    for (k, v) in &cases {
        let r = http
            .put(kvs.at(&format!("/v1/key/{}", encode_key(k))))
            .body(v.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", kvs.log());
    }
    assert_reads_back(&http, &kvs, &cases);
    let r = http.put(kvs.at("/v1/key/gone")).body("x").send().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http.delete(kvs.at("/v1/key/gone")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get_status(&http, kvs.at("/v1/key/gone")),
        StatusCode::NOT_FOUND
    );
    // Deleting a missing key is not an error; a query is not part of the key.
    let r = http.delete(kvs.at("/v1/key/missing")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(kvs.at("/v1/key/a%2Fb%20c?x=1")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "tab\there");
    let r = http.post(kvs.at("/v1/key/x")).send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers()["allow"].to_str().unwrap().contains("PUT"));
    assert_eq!(
        get_status(&http, kvs.at("/v1/key/")),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(get_status(&http, kvs.at("/other")), StatusCode::NOT_FOUND);
    // The rest of the book's curl session (process.rs): overwrite, delete twice, the
    // short form /v1/{key}.
    let url = kvs.at("/v1/key/key-a");
    assert_eq!(put_status(&http, &url, "Hello"), StatusCode::CREATED);
    assert_eq!(put_status(&http, &url, "overwritten"), StatusCode::CREATED);
    assert_eq!(
        http.get(&url).send().unwrap().text().unwrap(),
        "overwritten"
    );
    assert_eq!(http.delete(&url).send().unwrap().status(), StatusCode::OK);
    assert_eq!(get_status(&http, &url), StatusCode::NOT_FOUND);
    assert_eq!(http.delete(&url).send().unwrap().status(), StatusCode::OK);
    assert_eq!(
        put_status(&http, kvs.at("/v1/short"), "s"),
        StatusCode::CREATED
    );
    assert_eq!(
        http.get(kvs.at("/v1/short"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "s"
    );
    assert_eq!(get_status(&http, kvs.at("/healthz")), StatusCode::OK);
    // The host answers the probes itself.
    assert_eq!(get_status(&http, kvs.at("/readyz")), StatusCode::OK);
    let log = kvs.stop();
    // The C logger's kvs_log record, through the host's log.
    assert!(log.contains("opened with 0 records"), "{log}");

    let kvs = Kvs::start(&cfg, &plugins, &[]);
    assert_reads_back(&http, &kvs, &cases);
    assert_eq!(
        get_status(&http, kvs.at("/v1/key/gone")),
        StatusCode::NOT_FOUND
    );
    kvs.stop();
}

#[test]
fn the_guests_mix_with_native_plug_ins_both_ways() {
    for (logger, frontend) in [("file", "as-rest"), ("c-logger", "rest")] {
        let dir = tempfile::tempdir().unwrap();
        let plugins = plugins_with_guests(dir.path());
        let cfg = config(dir.path(), logger, frontend);
        let http = http_client();
        let kvs = Kvs::start(&cfg, &plugins, &[]);
        let r = http
            .put(kvs.at("/v1/key/mixed"))
            .body(logger)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{logger}+{frontend}");
        kvs.stop();
        let kvs = Kvs::start(&cfg, &plugins, &[]);
        assert_eq!(
            http.get(kvs.at("/v1/key/mixed"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
            logger
        );
        kvs.stop();
    }
}
