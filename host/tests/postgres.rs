//! The `postgres` logger against a real PostgreSQL server (see `pg.rs`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::util::{Kvs, assert_reads_back, encode_key, get_status, http_client, staged_plugins};
use kvs_testkit::pg::{PASSWORD, PgServer};

const ENV: &[(&str, &str)] = &[("KVS_POSTGRES_PASSWORD", PASSWORD)];

fn write_pg_config(dir: &std::path::Path, url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "logger = \"postgres\"\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 5000\n\n\
             [plugins.postgres]\nurl = {url:?}\ntable = \"kvs_events\"\n{extra}\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    path
}

fn start(config: &std::path::Path) -> Kvs {
    Kvs::try_start_env(config, &staged_plugins(), &[], ENV).unwrap_or_else(|out| panic!("{out}"))
}

#[test]
fn odd_bytes_round_trip_through_a_table_it_creates() {
    let pg = PgServer::start();
    assert_eq!(pg.psql_kvs("SELECT to_regclass('kvs_events') IS NULL"), "t");
    let dir = tempfile::tempdir().unwrap();
    let config = write_pg_config(
        dir.path(),
        &pg.url(),
        "compact_interval_ms = 100\ncompact_batch = 7\n",
    );
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"tab\tkey".to_vec(), b"new\nline".to_vec()),
        (b"nul\0key".to_vec(), b"".to_vec()),
        (b"\xff\xfe".to_vec(), vec![0, 1, 2, 255]),
        ("ключ/🔑".as_bytes().to_vec(), vec![7; 100_000]),
    ];
    let http = http_client();
    let kvs = start(&config);
    for (k, v) in &cases {
        let r = http
            .put(kvs.at(&format!("/v1/key/{}", encode_key(k))))
            .body(v.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", kvs.log());
    }
    let r = http.delete(kvs.at("/v1/key/gone")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Overwrites leave superseded rows, which background compaction deletes in batches.
    for i in 0..30 {
        let r = http
            .put(kvs.at("/v1/key/hot"))
            .body(format!("v{i}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let started = Instant::now();
    while pg.psql_kvs("SELECT count(*) FROM kvs_events WHERE key = 'hot'") != "1" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "superseded rows never compacted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        http.get(kvs.at("/v1/key/hot"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "v29"
    );
    kvs.stop();
    // The book's table shape, with the book's event numbering and a schema version.
    assert_eq!(pg.psql_kvs("SELECT count(*) FROM kvs_events"), "6");
    assert_eq!(
        pg.psql_kvs("SELECT event_type FROM kvs_events WHERE key = 'gone'"),
        "1"
    );
    assert_eq!(
        pg.psql_kvs("SELECT version FROM kvs_schema WHERE table_name = 'kvs_events'"),
        "1"
    );

    let kvs = start(&config);
    assert_reads_back(&http, &kvs, &cases);
    kvs.stop();
}

#[test]
fn credentials_errors_name_the_setting_to_fix() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_pg_config(dir.path(), &pg.url(), "");
    let out = Kvs::try_start_env(
        &config,
        &staged_plugins(),
        &[],
        &[("KVS_POSTGRES_PASSWORD", "wrong")],
    )
    .err()
    .expect("started with a wrong password");
    assert!(
        out.contains("password authentication failed") && out.contains("KVS_POSTGRES_PASSWORD"),
        "{out}"
    );

    let with_password = pg.url().replace("kvs@", &format!("kvs:{PASSWORD}@"));
    let config = write_pg_config(dir.path(), &with_password, "");
    let out = Kvs::try_start_env(&config, &staged_plugins(), &[], ENV)
        .err()
        .unwrap();
    assert!(
        out.contains("password in the config file is refused")
            && out.contains("KVS_POSTGRES_PASSWORD"),
        "{out}"
    );
    let config = write_pg_config(dir.path(), &pg.url(), "password = \"x\"");
    let out = Kvs::try_start_env(&config, &staged_plugins(), &[], ENV)
        .err()
        .unwrap();
    assert!(
        out.contains("password in the config file is refused"),
        "{out}"
    );
}

#[test]
fn a_database_outage_fails_fast_then_recovers_without_restarting_kvs() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_pg_config(
        dir.path(),
        &pg.url(),
        "retry_budget_ms = 300\nbreaker_probe_ms = 200\n",
    );
    let kvs = start(&config);
    let acked = Mutex::new(Vec::new());
    let (stop, refused, fast_refusals) =
        (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let acked_after_recovery = AtomicU64::new(0);
    let recovered = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (kvs, acked, stop, refused, fast, after, recovered) = (
                &kvs,
                &acked,
                &stop,
                &refused,
                &fast_refusals,
                &acked_after_recovery,
                &recovered,
            );
            s.spawn(move || {
                let http = http_client();
                let mut i = 0;
                while !stop.load(Ordering::Acquire) {
                    let key = format!("w{t}-{i}");
                    i += 1;
                    let sent = Instant::now();
                    let r = http
                        .put(kvs.at(&format!("/v1/key/{key}")))
                        .body(key.clone())
                        .send()
                        .unwrap();
                    match r.status() {
                        StatusCode::CREATED => {
                            acked.lock().unwrap().push(key);
                            if recovered.load(Ordering::Acquire) {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            if sent.elapsed() < Duration::from_millis(100) {
                                fast.fetch_add(1, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        other => panic!("unexpected {other}: {}", r.text().unwrap()),
                    }
                }
            });
        }
        let http = http_client();
        std::thread::sleep(Duration::from_millis(700));
        pg.stop_fast();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            get_status(&http, kvs.at("/readyz")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        pg.start_again();
        let back = Instant::now();
        while get_status(&http, kvs.at("/readyz")) != StatusCode::OK {
            assert!(
                back.elapsed() < Duration::from_secs(20),
                "never ready again:\n{}",
                kvs.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        recovered.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Release);
    });
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the outage was never noticed"
    );
    assert!(
        fast_refusals.load(Ordering::Relaxed) > 0,
        "no write failed fast while the circuit was open"
    );
    assert!(
        acked_after_recovery.load(Ordering::Relaxed) > 0,
        "writes did not resume after recovery"
    );
    // The logger said so in kvs's own log, tagged with its name (plugin-api 1.1).
    let log = kvs.stop();
    for said in ["circuit breaker open", "circuit breaker closed"] {
        assert!(
            log.lines()
                .any(|l| l.contains(said) && l.contains("plugin=\"postgres\"")),
            "{said}:\n{log}"
        );
    }

    // Every acknowledged write is in the database and replays.
    let acked = acked.into_inner().unwrap();
    let kvs = start(&config);
    let http = http_client();
    for key in &acked {
        let r = http.get(kvs.at(&format!("/v1/key/{key}"))).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged {key} lost");
    }
    kvs.stop();
}

/// Acknowledged means committed: kvs says at start when the server's settings make a
/// commit less than durable (the test server runs with fsync = off; then
/// synchronous_commit is turned off for the database too).
#[test]
fn settings_that_weaken_commits_are_warned_about_at_start() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_pg_config(dir.path(), &pg.url(), "");
    let kvs = start(&config);
    let log = kvs.stop();
    assert!(log.contains("fsync = off"), "{log}");
    assert!(!log.contains("synchronous_commit is off"), "{log}");
    pg.psql("ALTER DATABASE kvs SET synchronous_commit = off");
    let kvs = start(&config);
    let log = kvs.stop();
    assert!(log.contains("synchronous_commit is off"), "{log}");
}
