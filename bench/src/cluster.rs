//! `kvs-bench cluster`: kvs nodes on one etcd cluster (the `etcd` shared logger).
//! A 3-member etcd cluster on loopback; durable PUTs through 1 and through 3 kvs nodes
//! with 32 writers in all (wrk, REST), next to etcd's own put rate at the same
//! concurrency (32 etcd-client tasks putting one key at a time); and the local-read
//! GET rate of one node. Everything on this one 2-core machine: etcd, kvs and the
//! clients share it, so read the figures as relative.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kvs_testkit::etcd::EtcdCluster;

use crate::rest::{put_script, start_kvs_on};
use crate::{KillOnDrop, VALUE_BYTES, which};

const SECS: u64 = 5;

/// A kvs node with the etcd logger and REST on a free port.
fn node(plugins: &Path, endpoints: &[String]) -> Result<(KillOnDrop, u16, tempfile::TempDir)> {
    let table = format!("[plugins.etcd]\nendpoints = {endpoints:?}\nprefix = \"bench/\"\n");
    start_kvs_on(plugins, "etcd", &table, "rest", "")
}

/// `wrk -c CONNECTIONS` against `url` (with the PUT script if given); requests/s.
fn wrk(url: &str, script: Option<&Path>, connections: usize) -> Result<std::process::Child> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        "1",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{SECS}s"),
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    Ok(cmd.arg(url).stdout(Stdio::piped()).spawn()?)
}

fn rate(child: std::process::Child) -> Result<f64> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

/// etcd's own put rate: `clients` tasks, each putting one key at a time.
fn etcd_puts(endpoints: &[String], clients: usize) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = etcd_client::Client::connect(endpoints, None).await?;
        let done = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(SECS);
        let value = vec![b'x'; VALUE_BYTES];
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (mut kv, done, value) = (client.kv_client(), done.clone(), value.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while Instant::now() < until {
                        let key = format!("etcd-bench/k{}", (c as u64 * 1_000_003 + i) % 10_000);
                        if kv.put(key, value.clone(), None).await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok::<f64, anyhow::Error>(done.load(Ordering::Relaxed) as f64 / SECS as f64)
    })
}

pub(crate) fn cluster(plugins: &Path) -> Result<()> {
    which("wrk").context("wrk is needed: apt-get install wrk")?;
    which("etcd").context("etcd is needed: apt-get install etcd-server")?;
    let dir = tempfile::tempdir()?;
    let script = put_script(dir.path())?;
    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    println!(
        "== kvs nodes on a 3-member etcd cluster (loopback, one 2-core machine for etcd,\n   \
         kvs and clients alike): durable PUTs of {VALUE_BYTES}-byte values, 32 writers in all"
    );
    let etcd_rate = etcd_puts(&endpoints, 32)?;
    let nodes: Vec<(KillOnDrop, u16, tempfile::TempDir)> = (0..3)
        .map(|_| node(plugins, &endpoints))
        .collect::<Result<_>>()?;
    let one = rate(wrk(
        &format!("http://127.0.0.1:{}/v1/key/k", nodes[0].1),
        Some(&script),
        32,
    )?)?;
    // 32 writers spread over the three nodes (11 + 11 + 10).
    let runs: Vec<_> = nodes
        .iter()
        .zip([11, 11, 10])
        .map(|((_, port, _), c)| {
            wrk(
                &format!("http://127.0.0.1:{port}/v1/key/k"),
                Some(&script),
                c,
            )
        })
        .collect::<Result<_>>()?;
    let three: f64 = runs.into_iter().map(rate).sum::<Result<f64>>()?;
    let get = rate(wrk(
        &format!("http://127.0.0.1:{}/v1/key/k1", nodes[1].1),
        None,
        32,
    )?)?;
    println!("   etcd put, 32 clients one key at a time (etcd-client): {etcd_rate:>8.0} /s");
    println!(
        "   kvs durable PUT through 1 node (wrk -c 32):           {one:>8.0} /s  ({:.2}x etcd)",
        one / etcd_rate
    );
    println!(
        "   kvs durable PUT through 3 nodes (wrk -c 11+11+10):    {three:>8.0} /s  ({:.2}x etcd)",
        three / etcd_rate
    );
    println!("   kvs local-read GET on one node (wrk -c 32):           {get:>8.0} /s");
    Ok(())
}
