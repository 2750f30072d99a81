//! `kvs-bench writes`: durable write throughput through the host's store and writer
//! (file and postgres loggers), replay time, and Redis `SET` with `appendfsync always`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kvs_host::config::{Config, Overrides, RawConfig};
use kvs_host::lifecycle;
use kvs_host::plugins::Catalog;
use kvs_host::write_request::Completion;
use kvs_testkit::pg::PgServer;

use crate::VALUE_BYTES;
use crate::redis::Redis;

fn file_config(plugins: &Path, data: &Path, sync: &str) -> Result<Config> {
    let toml = format!(
        "logger = \"file\"\nfrontends = []\n[plugins.file]\npath = {:?}\nsync = {sync:?}\n",
        data.join("kvs.log")
    );
    resolve(plugins, &toml)
}

fn postgres_config(plugins: &Path, pg: &PgServer, table: &str) -> Result<Config> {
    let toml = format!(
        "logger = \"postgres\"\nfrontends = []\n[plugins.postgres]\nurl = {:?}\ntable = {table:?}\n",
        pg.url()
    );
    resolve(plugins, &toml)
}

fn resolve(plugins: &Path, toml: &str) -> Result<Config> {
    Config::resolve(
        RawConfig::parse(toml)?,
        Overrides {
            plugins_dir: Some(plugins.to_path_buf()),
            ..Overrides::default()
        },
    )
}

/// Durable writes from `writers` threads for `duration`; returns (writes/s, mean batch).
fn durable_writes(
    catalog: &Catalog,
    config: &Config,
    writers: usize,
    duration: Duration,
) -> Result<(f64, f64)> {
    let running = lifecycle::start(config, catalog)?;
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers {
            let (store, stop, done) = (&running.store, &stop, &done);
            s.spawn(move || {
                let value = vec![b'v'; VALUE_BYTES];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (tx, rx) = mpsc::sync_channel(1);
                    let key = format!("bench-{t}-{}", i % 10_000).into_bytes();
                    store.put(
                        key,
                        value.clone(),
                        Completion::new(move |r| tx.send(r).unwrap()),
                    );
                    rx.recv().unwrap().expect("durable write failed");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = running.stop()?;
    let writes = done.load(Ordering::Relaxed) as f64;
    Ok((
        writes / elapsed,
        stats.writes as f64 / stats.batches.max(1) as f64,
    ))
}

pub(crate) fn writes(plugins: &Path) -> Result<()> {
    let catalog = Catalog::scan(plugins)?;
    let secs = Duration::from_secs(5);
    println!(
        "== durable writes: {VALUE_BYTES}-byte values, 10k keys per writer, {}s each\n   \
         file: sync = always; postgres: local server with fsync = on; Redis: appendfsync always\n   \
         (kvs measured in-process through Store + writer + logger; Redis over loopback TCP)",
        secs.as_secs()
    );
    let redis = Redis::start().ok();
    if redis.is_none() {
        println!(
            "   redis-server/redis-benchmark not found: `apt-get install redis-server redis-tools` for the side-by-side"
        );
    }
    let pg = postgres_server();
    println!(
        "{:>8}  {:>12}  {:>10}  {:>15}  {:>12}  {:>11}",
        "writers", "file/s", "mean batch", "postgres/s", "redis SET/s", "file/redis"
    );
    for writers in [1usize, 8, 32] {
        let data = tempfile::tempdir()?;
        let config = file_config(plugins, data.path(), "always")?;
        let (rate, batch) = durable_writes(&catalog, &config, writers, secs)?;
        let pg_rate = match &pg {
            Some(pg) => {
                let table = format!("bench_{writers}");
                Some(
                    durable_writes(
                        &catalog,
                        &postgres_config(plugins, pg, &table)?,
                        writers,
                        secs,
                    )?
                    .0,
                )
            }
            None => None,
        };
        let redis_rate = match &redis {
            Some(r) => Some(r.benchmark("set", writers, 20_000 * writers.min(8))?),
            None => None,
        };
        println!(
            "{writers:>8}  {rate:>12.0}  {batch:>10.1}  {:>15}  {:>12}  {:>11}",
            pg_rate.map_or("-".into(), |r| format!("{r:.0}")),
            redis_rate.map_or("-".into(), |r| format!("{r:.0}")),
            redis_rate.map_or("-".into(), |r| format!("{:.2}x", rate / r)),
        );
    }
    drop(redis);

    println!("\n== replay of {VALUE_BYTES}-byte records into the map");
    let data = tempfile::tempdir()?;
    replay(
        &catalog,
        &file_config(plugins, data.path(), "never")?,
        "file",
        1_000_000,
    )?;
    if let Some(pg) = &pg {
        replay(
            &catalog,
            &postgres_config(plugins, pg, "bench_replay")?,
            "postgres",
            200_000,
        )?;
    }
    Ok(())
}

/// Writes `n` records, restarts, and prints how long replay took.
fn replay(catalog: &Catalog, config: &Config, name: &str, n: u64) -> Result<()> {
    let running = lifecycle::start(config, catalog)?;
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let store = &running.store;
            s.spawn(move || {
                let mut pending = Vec::new();
                for i in (t..n).step_by(8) {
                    let (tx, rx) = mpsc::sync_channel(1);
                    store.put(
                        format!("replay-{i:08}").into_bytes(),
                        vec![b'r'; VALUE_BYTES],
                        Completion::new(move |r| tx.send(r).unwrap()),
                    );
                    pending.push(rx);
                    if pending.len() == 256 {
                        pending.drain(..).for_each(|rx| rx.recv().unwrap().unwrap());
                    }
                }
                pending.drain(..).for_each(|rx| rx.recv().unwrap().unwrap());
            });
        }
    });
    running.stop()?;
    let started = Instant::now();
    let again = lifecycle::start(config, catalog)?;
    let elapsed = started.elapsed();
    println!(
        "{name:>10}: {} events, {} keys: replay {:.0} ms ({:.2} M events/s)",
        again.replayed.events,
        again.store.len(),
        elapsed.as_secs_f64() * 1000.0,
        again.replayed.events as f64 / elapsed.as_secs_f64() / 1e6
    );
    again.stop()?;
    Ok(())
}

/// A throwaway durable PostgreSQL server, if its binaries are installed.
fn postgres_server() -> Option<PgServer> {
    match std::panic::catch_unwind(PgServer::start_durable) {
        Ok(pg) => Some(pg),
        Err(_) => {
            println!(
                "   no PostgreSQL server binaries: `apt-get install postgresql` for the postgres column"
            );
            None
        }
    }
}
