//! `kvs backup`, `kvs restore` and `kvs migrate` on real kvs processes under a steady
//! write load: what was acknowledged is what comes back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::util::{Kvs, http_client, kvs_command, staged_plugins};
use kvs_testkit::pg::{PASSWORD, PgServer};

const WRITERS: usize = 4;

/// Clients writing `w{t}-{n}` then `c{t}` = n, for n = 0, 1, ... each writer `t`; each
/// notes the last n whose two writes were acknowledged, and the slowest write.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Vec<AtomicI64>>,
    slowest_us: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Vec<AtomicI64>> =
            Arc::new((0..WRITERS).map(|_| AtomicI64::new(-1)).collect());
        let slowest_us = Arc::new(AtomicU64::new(0));
        let threads = (0..WRITERS)
            .map(|t| {
                let (stop, acked, slowest, base) = (
                    stop.clone(),
                    acked.clone(),
                    slowest_us.clone(),
                    base.to_string(),
                );
                std::thread::spawn(move || {
                    let http = http_client();
                    let mut n = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        for (key, value) in [
                            (format!("w{t}-{n}"), format!("v{n}")),
                            (format!("c{t}"), n.to_string()),
                        ] {
                            let started = Instant::now();
                            let r = http.put(format!("{base}/v1/key/{key}")).body(value).send();
                            let status = r.map(|r| r.status());
                            assert!(
                                matches!(status, Ok(StatusCode::CREATED)),
                                "writer {t}: PUT {key}: {status:?}"
                            );
                            slowest
                                .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                        acked[t].store(n, Ordering::SeqCst);
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            slowest_us,
            threads,
        }
    }

    /// The slowest write since the last call, and starts the next window.
    fn slowest_since(&self) -> Duration {
        Duration::from_micros(self.slowest_us.swap(0, Ordering::Relaxed))
    }

    fn acked(&self) -> Vec<i64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    fn stop(self) -> (Vec<i64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a writer failed");
        }
        let acked = self
            .acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect();
        (
            acked,
            Duration::from_micros(self.slowest_us.load(Ordering::Relaxed)),
        )
    }
}

/// Every key and value of a snapshot file, read with the format's own reader.
fn snapshot_contents(file: &Path) -> (kvs_snapshot::Header, BTreeMap<Vec<u8>, Vec<u8>>) {
    let f = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let (mut reader, header) = kvs_snapshot::Reader::new(f).unwrap();
    let mut all = BTreeMap::new();
    while let Some(block) = reader.next_block().unwrap() {
        for r in block.records() {
            assert!(
                all.insert(r.key.to_vec(), r.value.to_vec()).is_none(),
                "a key twice"
            );
        }
    }
    assert_eq!(all.len() as u64, header.keys);
    (header, all)
}

fn with_admin(dir: &Path) -> PathBuf {
    crate::util::write_config(dir, "[admin]\nlisten = \"127.0.0.1:0\"\n")
}

fn kvs_at(config: &Path, args: &[&str]) -> (i32, String, String) {
    let plugins = staged_plugins();
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--plugins-dir",
        plugins.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    kvs_command(&all)
}

#[test]
fn a_backup_under_load_is_the_store_at_its_point_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_admin(dir.path());
    // Enough keys that the backup spans many blocks while the writers go on.
    preload_file_log(&dir.path().join("data").join("kvs.log"));
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let load = Load::start(&kvs.url);
    // And one client changing the preloaded keys in order, so that the backup meets
    // overwrites and deletes of keys it has not copied yet: pre{i} becomes q{i} (even i)
    // or is deleted (odd i).
    let churned = Arc::new(AtomicI64::new(-1));
    let churn = {
        let (url, churned, stop) = (kvs.url.clone(), churned.clone(), load.stop.clone());
        std::thread::spawn(move || {
            let http = http_client();
            for i in 0..PRELOADED_FILE as i64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let url = format!("{url}/v1/key/pre{i}");
                let status = if i % 2 == 0 {
                    http.put(url).body(format!("q{i}")).send().unwrap().status()
                } else {
                    http.delete(url).send().unwrap().status()
                };
                assert!(status.is_success(), "churn {i}: {status}");
                churned.store(i, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = load.acked();
    let churned_before = churned.load(Ordering::SeqCst);
    let file = dir.path().join("kvs.snap");
    let (code, out, err) =
        kvs_command(&["backup", file.to_str().unwrap(), "--admin", &kvs.admin()]);
    assert_eq!(code, 0, "{out}{err}\n{}", kvs.log());
    let after = load.acked();
    let churned_after = churned.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    let (_, slowest) = load.stop();
    churn.join().unwrap();
    println!("{}", out.trim());
    println!("slowest write during the backup: {slowest:?}");
    let (header, snap) = snapshot_contents(&file);
    for t in 0..WRITERS {
        let ws = snap
            .keys()
            .filter(|k| k.starts_with(format!("w{t}-").as_bytes()))
            .count() as i64;
        // A prefix of writer t's keys: w{t}-n is written only after w{t}-(n-1) was acked.
        for n in 0..ws {
            assert_eq!(
                snap[format!("w{t}-{n}").as_bytes()],
                format!("v{n}").into_bytes()
            );
        }
        assert!(
            ws > before[t],
            "writer {t}: acked {} before the backup, snapshot has {ws}",
            before[t]
        );
        assert!(
            ws - 1 <= after[t] + 1,
            "writer {t}: snapshot has {ws}, more than was written"
        );
        // One point in the write order: c{t} = n is written after w{t}-n.
        let c: i64 = String::from_utf8(snap[format!("c{t}").as_bytes()].clone())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            c == ws - 1 || c == ws - 2,
            "writer {t}: w{t}-* up to {} but c{t} = {c}",
            ws - 1
        );
    }
    // The churn is a prefix too: every pre{i} before some m changed, none from m on.
    let original =
        |i: u64| snap.get(format!("pre{i}").as_bytes()) == Some(&format!("p{i}").into_bytes());
    let m = (0..PRELOADED_FILE)
        .find(|&i| original(i))
        .unwrap_or(PRELOADED_FILE);
    for i in 0..PRELOADED_FILE {
        let got = snap.get(format!("pre{i}").as_bytes());
        let want = match (i < m, i % 2 == 0) {
            (false, _) => Some(format!("p{i}").into_bytes()),
            (true, true) => Some(format!("q{i}").into_bytes()),
            (true, false) => None,
        };
        assert_eq!(
            got,
            want.as_ref(),
            "pre{i}: the churn reached {m} in the snapshot"
        );
    }
    assert!(
        m as i64 > churned_before && m as i64 <= churned_after + 1,
        "churned {churned_before} before the backup and {churned_after} after; the snapshot \
         has {m}"
    );
    println!(
        "snapshot: {} keys as of position {}",
        header.keys, header.point
    );

    // Damaged copies are refused before anything is written, naming the damage.
    let bytes = std::fs::read(&file).unwrap();
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_config = with_admin(restored_dir.path());
    let cut = dir.path().join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = dir.path().join("flipped.snap");
    let mut flip = bytes.clone();
    flip[bytes.len() / 3] ^= 0x10;
    std::fs::write(&flipped, &flip).unwrap();
    for (damaged, names) in [(&cut, "truncated"), (&flipped, "checksum")] {
        let (code, out, err) = kvs_at(
            &restored_config,
            &["restore", damaged.to_str().unwrap(), "--logger", "file"],
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(names) && err.contains("nothing was written"),
            "{err}"
        );
    }
    // So the first real restore finds the logger empty.
    let (code, out, err) = kvs_at(
        &restored_config,
        &["restore", file.to_str().unwrap(), "--logger", "file"],
    );
    assert_eq!(code, 0, "{out}{err}");
    println!("{}", out.trim());
    let (code, _, err) = kvs_at(&restored_config, &["restore", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds"), "{err}");

    // The restored store is the snapshot: back it up again and compare.
    let restored = Kvs::start(&restored_config, &staged_plugins(), &[]);
    let again = dir.path().join("again.snap");
    let (code, out, err) = kvs_command(&[
        "backup",
        again.to_str().unwrap(),
        "--admin",
        &restored.admin(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(snapshot_contents(&again).1, snap);
    // Revisions continue after the restored keys: a new write gets a higher one.
    let http = http_client();
    let r = http
        .put(restored.at("/v1/key/after"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = http
        .get(restored.at("/v1/key/after"))
        .send()
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .parse::<u64>()
        .unwrap();
    assert!(etag > header.point + header.keys, "etag {etag}");
    restored.stop();
    kvs.stop();
}

/// A config naming `logger`, with tables for the file logger (under `dir/file`),
/// wasm-log (`dir/wasm`) and postgres (`pg`: its URL and table, if given).
fn migration_config(dir: &Path, logger: &str, pg: Option<(&str, &str)>) -> PathBuf {
    let path = dir.join("config.toml");
    let postgres = pg
        .map(|(url, table)| format!("[plugins.postgres]\nurl = {url:?}\ntable = {table:?}\n"))
        .unwrap_or_default();
    std::fs::create_dir_all(dir.join("wasm")).unwrap();
    std::fs::write(
        &path,
        format!(
            "logger = {logger:?}\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 5000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.file]\npath = {:?}\n\
             [plugins.wasm-log]\ndata_dir = {:?}\n{postgres}\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("file").join("kvs.log"),
            dir.join("wasm"),
        ),
    )
    .unwrap();
    path
}

/// Keys `pre{i}` = `p{i}` a store holds before its migration: written straight into the
/// file logger's log when that is where it starts, else through REST.
const PRELOADED_FILE: u64 = 100_000;
const PRELOADED_REST: u64 = 500;

fn preload_file_log(path: &Path) {
    use kvs_plugin_api::{Event, TransactionLogger};
    use kvs_plugin_file::{Config, FileLogger};
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut logger =
        FileLogger::open(Config::parse(&format!("path = {path:?}\nsync = \"never\"")).unwrap())
            .unwrap();
    logger.replay(&mut |_| Ok(())).unwrap();
    let kv: Vec<(Vec<u8>, Vec<u8>)> = (0..PRELOADED_FILE)
        .map(|i| (format!("pre{i}").into_bytes(), format!("p{i}").into_bytes()))
        .collect();
    for (n, chunk) in kv.chunks(10_000).enumerate() {
        let batch: Vec<Event<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Event::put((n * 10_000 + i) as u64 + 1, k, v))
            .collect();
        logger.append(&batch).unwrap();
    }
    logger.close().unwrap();
}

/// Starts kvs on `from`, loads it, migrates to `to` under load, and checks after a
/// restart on `to` that every acknowledged write is there.
fn migrate_under_load(from: &str, to: &str, pg: Option<(&str, &str)>) {
    let env: &[(&str, &str)] = &[("KVS_POSTGRES_PASSWORD", PASSWORD)];
    let dir = tempfile::tempdir().unwrap();
    let config = migration_config(dir.path(), from, pg);
    let preloaded = if from == "file" {
        preload_file_log(&dir.path().join("file").join("kvs.log"));
        PRELOADED_FILE
    } else {
        PRELOADED_REST
    };
    let kvs =
        Kvs::try_start_env(&config, &staged_plugins(), &[], env).unwrap_or_else(|l| panic!("{l}"));
    let http = http_client();
    if from != "file" {
        for i in 0..PRELOADED_REST {
            let r = http
                .put(kvs.at(&format!("/v1/key/pre{i}")))
                .body(format!("p{i}"))
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    }
    let load = Load::start(&kvs.url);
    std::thread::sleep(Duration::from_millis(300));
    // The config does not name `to` yet: refused, nothing changes.
    let (code, out, err) = kvs_command(&["migrate", "--to", to, "--admin", &kvs.admin()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("set logger = \"{to}\"")),
        "{out}{err}"
    );
    migration_config(dir.path(), to, pg);
    let before = load.slowest_since();
    let started = Instant::now();
    let (code, out, err) = kvs_command(&["migrate", "--to", to, "--admin", &kvs.admin()]);
    let took = started.elapsed();
    let during = load.slowest_since();
    assert_eq!(code, 0, "{out}{err}\n{}", kvs.log());
    std::thread::sleep(Duration::from_millis(300));
    let (acked, _) = load.stop();
    println!("{from} -> {to}: {}", out.trim());
    println!(
        "{from} -> {to}: {preloaded} keys preloaded; the migration took {took:?}; the slowest client \
         write during it took {during:?} (before it: {before:?}); writes acked per client {acked:?}"
    );
    assert!(out.contains(&format!("migrated from {from}")), "{out}");
    kvs.stop();
    // Started again, on the logger the config now names: everything acknowledged, and
    // nothing else (read whole, through a backup).
    let kvs =
        Kvs::try_start_env(&config, &staged_plugins(), &[], env).unwrap_or_else(|l| panic!("{l}"));
    assert!(
        kvs.log().contains(&format!("replayed the {to} log")),
        "{}",
        kvs.log()
    );
    let file = dir.path().join("after.snap");
    let (code, out, err) =
        kvs_command(&["backup", file.to_str().unwrap(), "--admin", &kvs.admin()]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, snap) = snapshot_contents(&file);
    for i in 0..preloaded {
        assert_eq!(
            snap.get(format!("pre{i}").as_bytes()),
            Some(&format!("p{i}").into_bytes()),
            "pre{i} lost"
        );
    }
    let mut expected = preloaded as usize;
    for (t, last) in acked.iter().enumerate() {
        assert_eq!(
            snap[format!("c{t}").as_bytes()],
            last.to_string().into_bytes()
        );
        // The one unacknowledged write a writer may have had in flight when stopped.
        let extra = snap.contains_key(format!("w{t}-{}", last + 1).as_bytes()) as usize;
        for n in 0..=*last {
            assert_eq!(
                snap.get(format!("w{t}-{n}").as_bytes()),
                Some(&format!("v{n}").into_bytes()),
                "writer {t}: w{t}-{n} lost"
            );
        }
        expected += *last as usize + 2 + extra;
    }
    assert_eq!(snap.len(), expected, "keys nobody wrote");
    kvs.stop();
}

#[test]
fn file_to_postgres_and_back_under_load_loses_nothing() {
    let pg = PgServer::start();
    migrate_under_load("file", "postgres", Some((&pg.url(), "kvs_to")));
    migrate_under_load("postgres", "file", Some((&pg.url(), "kvs_from")));
}

#[test]
fn file_to_wasm_log_under_load_loses_nothing() {
    migrate_under_load("file", "wasm-log", None);
}

/// `kvs backup` never renames its snapshot over a device, a directory or a symbolic
/// link (an outside probe had it replace /dev/null); `kvs restore` into the log of a
/// running kvs is refused (the file logger's lock) instead of being lost at the next
/// start; HEAD /backup does not run a backup.
#[test]
fn backups_replace_only_regular_files_and_restores_never_write_under_a_running_kvs() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_admin(dir.path());
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let http = http_client();
    let r = http.put(kvs.at("/v1/key/a")).body("1").send().unwrap();
    assert!(r.status().is_success());
    let admin = kvs.admin();
    let target = dir.path().join("target");
    std::fs::write(&target, "keep me").unwrap();
    let link = dir.path().join("link.snap");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, _, err) = kvs_command(&["backup", link.to_str().unwrap(), "--admin", &admin]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let folder = dir.path().join("folder.snap");
    std::fs::create_dir(&folder).unwrap();
    let (code, _, err) = kvs_command(&["backup", folder.to_str().unwrap(), "--admin", &admin]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!dir.path().join("folder.snap.partial").exists());

    let r = http.head(format!("{admin}/backup")).send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    let file = dir.path().join("ok.snap");
    let (code, out, err) = kvs_command(&["backup", file.to_str().unwrap(), "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kvs_at(&config, &["restore", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("is in use"), "{err}");
    // Nothing was added to the running kvs's log: a restart replays its one key.
    kvs.stop();
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    assert!(kvs.log().contains("keys=1"), "{}", kvs.log());
    kvs.stop();
}
