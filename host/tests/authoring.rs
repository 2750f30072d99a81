//! `kvs plugins new` as a new author uses it: in a temporary directory outside the
//! checkout, each of the five kinds is generated, built by cargo against the contract
//! crate kvs embeds, passes `kvs plugins check`, and serves in a real kvs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;

use crate::util::{Kvs, http_client, kvs_command};

/// (name, `kvs plugins new` flags, WASM?, table for `kvs plugins check`).
const KINDS: [(&str, &[&str], bool, &str); 5] = [
    (
        "hex-log",
        &["--kind", "logger"],
        false,
        "path = \"{tmp}/hex.log\"",
    ),
    (
        "read-http",
        &["--kind", "frontend"],
        false,
        "listen = \"127.0.0.1:0\"",
    ),
    ("wasm-hex-log", &["--kind", "logger", "--wasm"], true, ""),
    (
        "wasm-http",
        &["--kind", "frontend", "--wasm"],
        true,
        "listen = \"127.0.0.1:0\"",
    ),
    (
        "wasm-lines",
        &["--kind", "frontend", "--wasm", "--protocol", "stream"],
        true,
        "listen = \"127.0.0.1:0\"",
    ),
];

fn artifact(target: &Path, name: &str, wasm: bool) -> PathBuf {
    let stem = name.replace('-', "_");
    if wasm {
        target.join(format!("wasm32-wasip1/release/{stem}.wasm"))
    } else {
        target.join(format!("release/lib{stem}.so"))
    }
}

/// One line of the template's stream protocol, and its answer.
fn line(conn: &mut BufReader<TcpStream>, command: &str) -> String {
    conn.get_mut()
        .write_all(format!("{command}\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    conn.read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

#[test]
fn kvs_plugins_new_writes_crates_that_build_pass_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    // One target directory for the five builds: they share their dependencies.
    let target = dir.path().join("target");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for (name, flags, wasm, table) in KINDS {
        let mut args = vec!["plugins", "new", name];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--dir", dir.path().to_str().unwrap()]);
        let (code, out, err) = kvs_command(&args);
        assert_eq!(code, 0, "kvs plugins new {name}: {out}{err}");
        assert!(out.contains("cargo build --release"), "{out}");
        let crate_dir = dir.path().join(name);
        let built = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet"])
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "cargo build of the new {name} failed:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let file = artifact(&target, name, wasm);
        let (code, out, err) = kvs_command(&[
            "plugins",
            "check",
            file.to_str().unwrap(),
            "--config",
            table,
        ]);
        assert_eq!(code, 0, "kvs plugins check {name}:\n{out}{err}");
        assert!(out.contains("all ") && !out.contains("FAIL"), "{out}");
        std::fs::copy(&file, plugins.join(file.file_name().unwrap())).unwrap();
    }
    // A second crate of the same name is refused, not overwritten.
    let (code, _, err) = kvs_command(&[
        "plugins",
        "new",
        "hex-log",
        "--kind",
        "logger",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    // Each logger under the three frontends: written through the stream protocol,
    // read back over both HTTP frontends, and still there after a restart.
    for logger in ["hex-log", "wasm-hex-log"] {
        let config = dir.path().join(format!("{logger}.toml"));
        let data = dir.path().join(format!("{logger}-data"));
        std::fs::write(
            &config,
            format!(
                "logger = {logger:?}\n\
                 frontends = [\"wasm-lines\", \"read-http\", \"wasm-http\"]\n\
                 [plugins.hex-log]\npath = {:?}\n\
                 [plugins.wasm-hex-log]\ndata_dir = {data:?}\n\
                 [plugins.wasm-lines]\nlisten = \"127.0.0.1:0\"\n\
                 [plugins.read-http]\nlisten = \"127.0.0.1:0\"\n\
                 [plugins.wasm-http]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("hex.log")
            ),
        )
        .unwrap();
        for round in 0..2 {
            let kvs = Kvs::start(&config, &plugins, &[]);
            let lines = kvs.endpoint("wasm-lines");
            let lines = lines.strip_prefix("tcp://").unwrap_or(&lines);
            let mut conn = BufReader::new(TcpStream::connect(lines).unwrap());
            let key = format!("k-{logger}");
            if round == 0 {
                assert_eq!(
                    line(&mut conn, &format!("SET {key} from the new crates")),
                    "OK"
                );
            }
            assert_eq!(
                line(&mut conn, &format!("GET {key}")),
                "VALUE from the new crates"
            );
            assert_eq!(line(&mut conn, "GET missing"), "NONE");
            assert!(line(&mut conn, "FROB").starts_with("ERR"));
            assert_eq!(line(&mut conn, "QUIT"), "BYE");
            let http = http_client();
            for frontend in ["read-http", "wasm-http"] {
                let url = format!("{}/v1/key/{key}", kvs.endpoint(frontend));
                let r = http.get(&url).send().unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{frontend} under {logger}");
                assert_eq!(r.text().unwrap(), "from the new crates");
            }
            kvs.stop();
        }
    }
}
