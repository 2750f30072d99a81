//! The 1.x promise, end to end: this host loads loggers and frontends built against
//! every earlier minor (the `compat/` fixtures, native and WASM), each works through a
//! real `kvs` process and keeps its data across a restart; 1.1 ones log through the
//! host and carry request contexts.

use std::path::{Path, PathBuf};

use crate::util::{Kvs, Line, http_client, lib, put_status, wasm_module};

/// A plugins dir holding every compat fixture of both versions.
fn compat_plugins(dir: &Path, native: bool) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for v in ["1_0", "1_1", "1_2"] {
        let files = if native {
            [
                lib(&format!("kvs_compat_native_logger_{v}")),
                lib(&format!("kvs_compat_native_frontend_{v}")),
            ]
        } else {
            [
                wasm_module(&format!("kvs_compat_wasm_logger_{v}")),
                wasm_module(&format!("kvs_compat_wasm_frontend_{v}")),
            ]
        };
        for f in files {
            std::fs::copy(&f, plugins.join(f.file_name().unwrap())).unwrap();
        }
    }
    plugins
}

#[test]
fn native_loggers_and_frontends_of_every_1x_minor_work_end_to_end() {
    for (logger, frontend) in [
        ("1-0", "1-0"),
        ("1-1", "1-1"),
        ("1-0", "1-1"),
        ("1-1", "1-0"),
        ("1-2", "1-2"),
        ("1-0", "1-2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plugins = compat_plugins(dir.path(), true);
        let (logger, frontend) = (
            format!("compat-logger-{logger}"),
            format!("compat-frontend-{frontend}"),
        );
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "logger = {logger:?}\nfrontends = [{frontend:?}]\n\
                 [plugins.{logger}]\npath = {:?}\n[plugins.{frontend}]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("compat.log")
            ),
        )
        .unwrap();

        let kvs = Kvs::start(&config, &plugins, &[]);
        let mut line = Line::connect(&kvs.endpoint(&frontend));
        assert_eq!(line.ask("PUT a one"), "OK", "{logger} + {frontend}");
        assert_eq!(line.ask("PUT b two"), "OK");
        assert_eq!(line.ask("DEL b"), "OK");
        assert_eq!(line.ask("GET a"), "VALUE one");
        drop(line);
        let log = kvs.stop();
        // A 1.1 logger's messages are host events with its name; a 1.0 one has no channel.
        let logged = log.contains("compat logger opened") && log.contains(&logger);
        assert_eq!(logged, !logger.ends_with("1-0"), "{logger}:\n{log}");

        let kvs = Kvs::start(&config, &plugins, &[]);
        let mut line = Line::connect(&kvs.endpoint(&frontend));
        assert_eq!(line.ask("GET a"), "VALUE one", "{logger} replay");
        assert_eq!(line.ask("GET b"), "NONE");
        drop(line);
        kvs.stop();
    }
}

#[test]
fn wasm_loggers_and_frontends_of_every_1x_minor_work_end_to_end() {
    let http = http_client();
    for v in ["1-0", "1-1", "1-2"] {
        let dir = tempfile::tempdir().unwrap();
        let plugins = compat_plugins(dir.path(), false);
        let (logger, frontend) = (
            format!("compat-wasm-logger-{v}"),
            format!("compat-wasm-frontend-{v}"),
        );
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "logger = {logger:?}\nfrontends = [{frontend:?}]\n\
                 [plugins.{logger}]\ndata_dir = {:?}\n[plugins.{frontend}]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("data")
            ),
        )
        .unwrap();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

        let kvs = Kvs::start(&config, &plugins, &[]);
        let base = kvs.endpoint(&frontend);
        let put = http
            .put(format!("{base}/k/a"))
            .header("traceparent", traceparent)
            .body("one")
            .send()
            .unwrap();
        assert_eq!(put.status(), 201, "{v}");
        // A 1.1 guest sees the context the host carried in; a 1.0 guest cannot ask.
        let seen = put
            .headers()
            .get("x-seen-traceparent")
            .map(|h| h.to_str().unwrap().to_string());
        assert_eq!(seen.as_deref(), (v != "1-0").then_some(traceparent), "{v}");
        assert_eq!(put_status(&http, format!("{base}/k/b"), "two"), 201);
        assert_eq!(
            http.delete(format!("{base}/k/b")).send().unwrap().status(),
            200
        );
        let log = kvs.stop();
        let logged = log.contains("compat wasm logger opened") && log.contains(&logger);
        assert_eq!(logged, v != "1-0", "{v}:\n{log}");

        let kvs = Kvs::start(&config, &plugins, &[]);
        let base = kvs.endpoint(&frontend);
        let got = http.get(format!("{base}/k/a")).send().unwrap();
        assert_eq!(got.status(), 200, "{v} replay");
        assert_eq!(got.text().unwrap(), "one");
        assert_eq!(
            http.get(format!("{base}/k/b")).send().unwrap().status(),
            404
        );
        kvs.stop();
    }
}
