//! The 1.x promise, end to end: this host loads loggers and frontends built against
//! every released minor (the `compat/` fixtures, native and WASM, built by `cargo xtask
//! build` against each crate in `compat/releases/`), each works through a real `kvs`
//! process and keeps its data across a restart; 1.1+ ones log through the host and
//! carry request contexts, 1.3 ones read the store's stats.

use std::path::{Path, PathBuf};

use crate::util::{
    Kvs, Line, http_client, lib, minor_of, put_status, released_minors, wasm_module,
};

/// A plugins dir holding every compat fixture of every released minor.
fn compat_plugins(dir: &Path, native: bool) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for v in released_minors() {
        let v = v.replace('-', "_");
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

/// (logger, frontend) minors to run together: each released minor with itself, and
/// the oldest with newer ones both ways.
fn combinations() -> Vec<(String, String)> {
    let minors = released_minors();
    let mut pairs: Vec<(String, String)> = minors.iter().map(|v| (v.clone(), v.clone())).collect();
    for (logger, frontend) in [
        ("1-0", "1-1"),
        ("1-1", "1-0"),
        ("1-0", "1-2"),
        ("1-0", "1-3"),
        ("1-3", "1-0"),
        ("1-0", "1-4"),
        ("1-4", "1-0"),
        ("1-3", "1-4"),
        ("1-4", "1-3"),
        ("1-0", "1-5"),
        ("1-4", "1-5"),
        ("1-5", "1-4"),
    ] {
        assert!(minors.iter().any(|v| v == frontend) && minors.iter().any(|v| v == logger));
        pairs.push((logger.to_string(), frontend.to_string()));
    }
    pairs
}

#[test]
fn native_loggers_and_frontends_of_every_1x_minor_work_end_to_end() {
    for (logger, frontend) in combinations() {
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
        // A 1.3 frontend's store answers stats; older ones have no such call.
        let stats = line.ask("STATS");
        if minor_of(&frontend) >= 3 {
            assert_eq!(stats, "KEYS 1", "{frontend}");
        } else {
            assert!(
                stats.starts_with("ERR unknown command"),
                "{frontend}: {stats}"
            );
        }
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
    for (logger, frontend) in combinations() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = compat_plugins(dir.path(), false);
        let (logger, frontend) = (
            format!("compat-wasm-logger-{logger}"),
            format!("compat-wasm-frontend-{frontend}"),
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
        assert_eq!(put.status(), 201, "{logger} + {frontend}");
        // A 1.1 guest sees the context the host carried in; a 1.0 guest cannot ask.
        let seen = put
            .headers()
            .get("x-seen-traceparent")
            .map(|h| h.to_str().unwrap().to_string());
        assert_eq!(
            seen.as_deref(),
            (minor_of(&frontend) >= 1).then_some(traceparent),
            "{frontend}"
        );
        assert_eq!(put_status(&http, format!("{base}/k/b"), "two"), 201);
        assert_eq!(
            http.delete(format!("{base}/k/b")).send().unwrap().status(),
            200
        );
        // A 1.3 guest asks the host for stats (`kvs_stats`); older ones answer 404.
        let stats = http.get(format!("{base}/stats")).send().unwrap();
        if minor_of(&frontend) >= 3 {
            assert_eq!(stats.status(), 200, "{frontend}");
            assert_eq!(stats.text().unwrap(), "1", "{frontend}");
        } else {
            assert_eq!(stats.status(), 404, "{frontend}");
        }
        let log = kvs.stop();
        let logged = log.contains("compat wasm logger opened") && log.contains(&logger);
        assert_eq!(logged, minor_of(&logger) >= 1, "{logger}:\n{log}");

        let kvs = Kvs::start(&config, &plugins, &[]);
        let base = kvs.endpoint(&frontend);
        let got = http.get(format!("{base}/k/a")).send().unwrap();
        assert_eq!(got.status(), 200, "{logger} replay");
        assert_eq!(got.text().unwrap(), "one");
        assert_eq!(
            http.get(format!("{base}/k/b")).send().unwrap().status(),
            404
        );
        kvs.stop();
    }
}

/// A code a frontend's minor does not know never reaches it: over its rate limit, a
/// 1.5 frontend (native or WASM) gets `rate limited` (10), a 1.4 one `unavailable` (4)
/// with the same message, never a code it would read as `internal`.
#[test]
fn frontends_older_than_1_5_get_rate_limits_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = compat_plugins(dir.path(), true);
    let wasm = compat_plugins(&dir.path().join("wasm"), false);
    for entry in std::fs::read_dir(&wasm).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), plugins.join(entry.file_name())).unwrap();
    }
    let frontends = [
        "compat-frontend-1-4",
        "compat-frontend-1-5",
        "compat-wasm-frontend-1-4",
        "compat-wasm-frontend-1-5",
    ];
    let mut config = format!(
        "logger = \"file\"\nfrontends = {frontends:?}\n\
         [rate_limit]\nper_client = 0.5\nburst = 1\n\
         [plugins.file]\npath = {:?}\n",
        dir.path().join("kvs.log")
    );
    for f in frontends {
        config.push_str(&format!("[plugins.{f}]\nlisten = \"127.0.0.1:0\"\n"));
    }
    let file = lib("kvs_plugin_file");
    std::fs::copy(&file, plugins.join(file.file_name().unwrap())).unwrap();
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let kvs = Kvs::start(&dir.path().join("config.toml"), &plugins, &[]);
    // Every fixture's calls carry the client's address (127.0.0.1): one bucket, whose
    // one token the first write takes.
    let mut v15 = Line::connect(&kvs.endpoint("compat-frontend-1-5"));
    let mut v14 = Line::connect(&kvs.endpoint("compat-frontend-1-4"));
    assert_eq!(v15.ask("PUT a one"), "OK");
    let refused = v15.ask("PUT b two");
    assert!(
        refused.contains("over its rate limit") && refused.ends_with("(code 10)"),
        "{refused}"
    );
    let refused = v14.ask("PUT b two");
    assert!(
        refused.contains("over its rate limit") && refused.ends_with("(code 4)"),
        "{refused}"
    );
    let http = http_client();
    for (frontend, code) in [
        ("compat-wasm-frontend-1-5", "10"),
        ("compat-wasm-frontend-1-4", "4"),
    ] {
        let answer = http
            .put(format!("{}/k/b", kvs.endpoint(frontend)))
            .body("two")
            .send()
            .unwrap();
        let seen = answer.headers()["x-error-code"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(seen, code, "{frontend}");
        assert!(answer.text().unwrap().contains("over its rate limit"));
    }
    drop((v14, v15));
    kvs.stop();
}

/// A logger built against an older minor (here 1.3, which has no `log:expiry`) serves
/// conditions and counters through a current frontend, and refuses a deadline saying
/// why rather than make the key permanent.
#[test]
fn an_older_logger_serves_conditions_and_refuses_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = compat_plugins(dir.path(), true);
    let rest = lib("kvs_plugin_rest");
    std::fs::copy(&rest, plugins.join(rest.file_name().unwrap())).unwrap();
    let logger = "compat-logger-1-3";
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "logger = {logger:?}\nfrontends = [\"rest\"]\n\
             [plugins.{logger}]\npath = {:?}\n[plugins.rest]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("compat.log")
        ),
    )
    .unwrap();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let client = http_client();
    let url = kvs.at("/v1/key/k");
    let put = |headers: &[(&str, &str)]| {
        let mut request = client.put(&url).body("v");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().unwrap()
    };
    assert_eq!(put(&[("if-none-match", "*")]).status(), 201);
    assert_eq!(put(&[("if-none-match", "*")]).status(), 412);
    let refused = put(&[("kvs-ttl-ms", "5000")]);
    assert_eq!(refused.status(), 400);
    let why = refused.text().unwrap();
    assert!(
        why.contains("cannot store expiry deadlines") && why.contains(logger),
        "{why}"
    );
    let got = client.get(&url).send().unwrap();
    assert!(
        !got.headers().contains_key("kvs-ttl-ms"),
        "nothing was made to expire"
    );
    let etag = got.headers()["etag"].clone();
    kvs.stop();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let got = client.get(kvs.at("/v1/key/k")).send().unwrap();
    assert_eq!(got.headers()["etag"], etag, "the revision is replayed");
    kvs.stop();
}

/// A frontend built against the released 1.6 makes transactions (`Store::transact_with`):
/// `MSETNX` over the file logger sets every key or none, and replays so; over a logger
/// of 1.5 (no `log:atomic_batch`) a transaction of two keys is refused saying why and
/// writes nothing, while one of one key is made.
#[test]
fn a_1_6_frontend_makes_transactions_where_the_logger_appends_batches_whole() {
    for (logger, atomic) in [("file", true), ("compat-logger-1-5", false)] {
        let dir = tempfile::tempdir().unwrap();
        let plugins = compat_plugins(dir.path(), true);
        let file = lib("kvs_plugin_file");
        std::fs::copy(&file, plugins.join(file.file_name().unwrap())).unwrap();
        let frontend = "compat-frontend-1-6";
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "logger = {logger:?}\nfrontends = [{frontend:?}]\n\
                 [plugins.{logger}]\npath = {:?}\n\
                 [plugins.{frontend}]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("kvs.log")
            ),
        )
        .unwrap();
        let kvs = Kvs::start(&config, &plugins, &[]);
        let mut line = Line::connect(&kvs.endpoint(frontend));
        let two = line.ask("MSETNX a 1 b 2");
        if atomic {
            assert_eq!(two, "SET 1", "{logger}");
            assert_eq!(line.ask("MSETNX b 3 c 4"), "SET 0", "{logger}");
            assert_eq!(line.ask("GET c"), "NONE", "{logger}");
        } else {
            assert!(
                two.contains("cannot append a batch all or none") && two.contains(logger),
                "{two}"
            );
            assert_eq!(line.ask("GET a"), "NONE", "{logger}: nothing written");
            assert_eq!(line.ask("MSETNX a 1"), "SET 1", "{logger}: one key");
        }
        drop(line);
        kvs.stop();
        let kvs = Kvs::start(&config, &plugins, &[]);
        let mut line = Line::connect(&kvs.endpoint(frontend));
        assert_eq!(line.ask("GET a"), "VALUE 1", "{logger}: replayed");
        let b = if atomic { "VALUE 2" } else { "NONE" };
        assert_eq!(line.ask("GET b"), b, "{logger}: replayed");
        drop(line);
        kvs.stop();
    }
}

/// A frontend built against the released 1.7 declaring `frontend:commits` has its writes
/// committed on its own thread (its blocking calls commit before they wait), one of 1.6
/// by the writer thread as before, and with `[writer] frontend_commits = false` every
/// write is the writer thread's again; all of them are written and read back.
#[test]
fn a_1_7_frontend_commits_its_own_writes_and_older_ones_are_committed_as_before() {
    for (frontend, allowed, by_frontend) in [
        ("compat-frontend-1-7", true, true),
        ("compat-frontend-1-6", true, false),
        ("compat-frontend-1-7", false, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plugins = compat_plugins(dir.path(), true);
        let file = lib("kvs_plugin_file");
        std::fs::copy(&file, plugins.join(file.file_name().unwrap())).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "logger = \"file\"\nfrontends = [{frontend:?}]\n\
                 [writer]\nfrontend_commits = {allowed}\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n\
                 [plugins.file]\npath = {:?}\n\
                 [plugins.{frontend}]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("kvs.log")
            ),
        )
        .unwrap();
        let kvs = Kvs::start(&config, &plugins, &[]);
        let mut line = Line::connect(&kvs.endpoint(frontend));
        for i in 0..20 {
            assert_eq!(line.ask(&format!("PUT k{i} v{i}")), "OK", "{frontend}");
        }
        assert_eq!(line.ask("MSETNX m 1 n 2"), "SET 1", "{frontend}");
        assert_eq!(line.ask("DEL k0"), "OK", "{frontend}");
        assert_eq!(line.ask("GET k19"), "VALUE v19", "{frontend}");
        assert_eq!(line.ask("GET k0"), "NONE", "{frontend}");
        let batches = |by: &str| kvs.writer_batches(by);
        let what = format!("{frontend}, frontend_commits = {allowed}");
        if by_frontend {
            // One write at a time, each its own batch: on the frontend's thread, but for
            // any the writer thread took first (the first deferred write after a quiet
            // spell wakes it).
            let (frontend, writer) = (batches("frontend"), batches("writer"));
            assert_eq!(frontend + writer, 22, "{what}");
            assert!(
                frontend >= 11,
                "{what}: {frontend} by the frontend, {writer} by the writer"
            );
        } else {
            assert_eq!(batches("frontend"), 0, "{what}");
            assert!(batches("writer") >= 22, "{what}");
        }
        drop(line);
        kvs.stop();
    }
}
