//! The store and its writer, through the host library, with fixture loggers.

use std::collections::BTreeMap;
use std::sync::mpsc;

use kvs_host::lifecycle::{self, open_logger};
use kvs_host::plugins::Catalog;
use kvs_host::store::Store;
use kvs_host::write_request::Completion;
use kvs_plugin_api::{ErrorCode, PluginError, PluginKind};

use crate::util::{config, namespace, plugin_dir};

fn put(store: &Store, key: &[u8], value: &[u8]) -> Result<(), PluginError> {
    let (tx, rx) = mpsc::channel();
    store.put(
        key.to_vec(),
        value.to_vec(),
        Completion::new(move |r| tx.send(r).unwrap()),
    );
    rx.recv().unwrap()
}

fn delete(store: &Store, key: &[u8]) -> Result<(), PluginError> {
    let (tx, rx) = mpsc::channel();
    store.delete(key.to_vec(), Completion::new(move |r| tx.send(r).unwrap()));
    rx.recv().unwrap()
}

fn memory_config(ns: &str, extra: &str) -> String {
    format!("[plugins.memory]\nnamespace = {ns:?}\n{extra}\n")
}

#[test]
fn concurrent_writers_keep_map_order_equal_to_log_order() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let ns = namespace("order");
    // A slow append makes writes pile up, so batches must form (group commit).
    let cfg = config(
        dir.path(),
        "memory",
        &memory_config(&ns, "append_delay_ms = 2"),
    );
    let running = lifecycle::start(&cfg, &catalog).unwrap();
    let store = running.store.clone();

    const THREADS: usize = 16;
    const WRITES: usize = 200;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                for i in 0..WRITES {
                    // Few keys, many writers: the final value of each key depends on order.
                    let key = format!("key-{}", (t * 7 + i) % 13);
                    if i % 5 == 4 {
                        delete(store, key.as_bytes()).unwrap();
                    } else {
                        put(store, key.as_bytes(), format!("{t}:{i}").as_bytes()).unwrap();
                    }
                }
            });
        }
    });
    let live = store.snapshot();
    let stats = running.stop().unwrap();
    assert_eq!(stats.writes, (THREADS * WRITES) as u64);
    assert!(
        stats.batches * 2 <= stats.writes,
        "no group commit: {} batches for {} writes",
        stats.batches,
        stats.writes
    );

    // Replaying the log from scratch must give exactly the map the writer built.
    let memory = catalog.find(PluginKind::LOGGER, "memory").unwrap();
    let mut logger = open_logger(memory, &format!("namespace = {ns:?}")).unwrap();
    let map = kvs_host::store::Map::default();
    let replayed = kvs_host::writer::replay(logger.as_mut(), &map).unwrap();
    assert_eq!(replayed.events, (THREADS * WRITES) as u64);
    assert_eq!(
        replayed.last_sequence,
        (THREADS * WRITES) as u64,
        "sequence numbers are 1..=n"
    );
    let mut from_log: Vec<(Vec<u8>, Vec<u8>)> = map
        .iter()
        .map(|e| (e.key().to_vec(), e.value().to_vec()))
        .collect();
    from_log.sort();
    assert_eq!(from_log, live);
}

#[test]
fn replay_restores_the_state_after_a_restart() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let ns = namespace("replay");
    let cfg = config(dir.path(), "memory", &memory_config(&ns, ""));

    let running = lifecycle::start(&cfg, &catalog).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..100u32 {
        let key = format!("k{}", i % 30).into_bytes();
        let value = i.to_le_bytes().to_vec();
        put(&running.store, &key, &value).unwrap();
        expected.insert(key, value);
    }
    for i in 0..10 {
        let key = format!("k{i}").into_bytes();
        delete(&running.store, &key).unwrap();
        expected.remove(&key);
    }
    delete(&running.store, b"never-existed").unwrap();
    running.stop().unwrap();

    let again = lifecycle::start(&cfg, &catalog).unwrap();
    assert_eq!(again.replayed.events, 111);
    let expected: Vec<(Vec<u8>, Vec<u8>)> = expected.into_iter().collect();
    assert_eq!(again.store.snapshot(), expected);
    // New writes continue the sequence instead of reusing numbers.
    put(&again.store, b"after", b"restart").unwrap();
    again.stop().unwrap();
    let third = lifecycle::start(&cfg, &catalog).unwrap();
    assert_eq!(third.replayed.last_sequence, 112);
    assert_eq!(
        third.store.get(b"after").unwrap(),
        Some(b"restart".to_vec())
    );
    third.stop().unwrap();
}

#[test]
fn a_refused_batch_is_reported_and_not_applied() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let cfg = config(
        dir.path(),
        "memory",
        &memory_config(&namespace("fail"), "fail_writes = true"),
    );
    let running = lifecycle::start(&cfg, &catalog).unwrap();
    let err = put(&running.store, b"k", b"v").unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNAVAILABLE);
    assert_eq!(
        running.store.get(b"k").unwrap(),
        None,
        "applied without being logged"
    );
    running.stop().unwrap();
}

#[test]
fn sequence_numbers_of_a_refused_batch_are_never_reused() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let ns = namespace("gaps");
    let cfg = config(
        dir.path(),
        "memory",
        &memory_config(&ns, "fail_keys_with_prefix = \"refuse\""),
    );
    let running = lifecycle::start(&cfg, &catalog).unwrap();
    put(&running.store, b"first", b"1").unwrap();
    let refused = put(&running.store, b"refuse-me", b"2").unwrap_err();
    assert_eq!(refused.code(), ErrorCode::UNAVAILABLE);
    put(&running.store, b"third", b"3").unwrap();
    running.stop().unwrap();

    // Two events, the last numbered 3: the refused batch's number 2 was skipped, not
    // handed to the next write, so a partly written batch can never pass for a later one.
    let memory = catalog.find(PluginKind::LOGGER, "memory").unwrap();
    let mut logger = open_logger(memory, &format!("namespace = {ns:?}")).unwrap();
    let map = kvs_host::store::Map::default();
    let replayed = kvs_host::writer::replay(logger.as_mut(), &map).unwrap();
    assert_eq!((replayed.events, replayed.last_sequence), (2, 3));
    let _ = logger.close();

    // After a restart the numbering continues past the gap.
    let again = lifecycle::start(&cfg, &catalog).unwrap();
    assert_eq!(again.replayed.last_sequence, 3);
    put(&again.store, b"fourth", b"4").unwrap();
    again.stop().unwrap();
    let third = lifecycle::start(&cfg, &catalog).unwrap();
    assert_eq!(third.replayed.last_sequence, 4);
    third.stop().unwrap();
}

#[test]
fn limits_are_typed_errors() {
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let toml = format!(
        "[limits]\nmax_key_bytes = 8\nmax_value_bytes = 16\n{}",
        memory_config(&namespace("limits"), "")
    );
    let cfg = config(dir.path(), "memory", &toml);
    let running = lifecycle::start(&cfg, &catalog).unwrap();
    let store = &running.store;
    assert_eq!(
        put(store, b"", b"v").unwrap_err().code(),
        ErrorCode::INVALID_INPUT
    );
    assert_eq!(
        put(store, b"123456789", b"v").unwrap_err().code(),
        ErrorCode::TOO_LARGE
    );
    assert_eq!(
        put(store, b"k", &[0; 17]).unwrap_err().code(),
        ErrorCode::TOO_LARGE
    );
    assert_eq!(store.get(b"").unwrap_err().code(), ErrorCode::INVALID_INPUT);
    // At the limits exactly, and odd bytes, are fine.
    put(store, b"\0\t\n /\xff\x80k", &[7; 16]).unwrap();
    put(store, b"empty", b"").unwrap();
    assert_eq!(store.get(b"empty").unwrap(), Some(Vec::new()));
    running.stop().unwrap();
}

#[test]
fn a_panicking_plugin_becomes_an_error_and_the_host_survives() {
    let dir = plugin_dir(&["kvs_fixture_panicky"]);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let panicky = catalog.find(PluginKind::LOGGER, "panicky").unwrap();
    let err = match open_logger(panicky, "panic_on_open = true") {
        Ok(_) => panic!("open should have failed"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("panicked in open_logger"), "{err}");

    let cfg = config(dir.path(), "panicky", "");
    let running = lifecycle::start(&cfg, &catalog).unwrap();
    put(&running.store, b"fine", b"1").unwrap();
    let err = put(&running.store, b"panic", b"1").unwrap_err();
    assert_eq!(err.code(), ErrorCode::INTERNAL);
    assert!(err.message().contains("panicked in append"), "{err:?}");
    // The logger is never trusted again, but the host keeps serving reads.
    let err = put(&running.store, b"fine", b"2").unwrap_err();
    assert!(
        err.message().contains("unusable after an earlier panic"),
        "{err:?}"
    );
    assert_eq!(running.store.get(b"fine").unwrap(), Some(b"1".to_vec()));
    assert_eq!(running.store.get(b"panic").unwrap(), None);
    assert!(
        running.stop().is_err(),
        "close of a panicked logger must report it"
    );
}

#[test]
fn a_rest_request_past_its_timeout_is_answered_504() {
    use crate::util::staged_plugins;
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    std::fs::copy(
        staged_plugins().join("libkvs_plugin_rest.so"),
        dir.path().join("librest.so"),
    )
    .unwrap();
    let toml = format!(
        "frontends = [\"rest\"]\n{}\n[plugins.rest]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = 100\n",
        memory_config(&namespace("timeout"), "append_delay_ms = 400")
    );
    let cfg = config(dir.path(), "memory", &toml);
    let catalog = Catalog::scan(dir.path()).unwrap();
    let running = lifecycle::start(&cfg, &catalog).unwrap();
    let url = running.endpoints()[0].1[0].clone();
    let http = crate::util::http_client();
    let started = std::time::Instant::now();
    let r = http
        .put(format!("{url}/v1/key/slow"))
        .body("v")
        .send()
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert!(r.text().unwrap().contains("timed out"));
    // Reads are fast and unaffected.
    let r = http.get(format!("{url}/v1/key/other")).send().unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    running.stop().unwrap();
}
