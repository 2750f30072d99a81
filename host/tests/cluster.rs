//! Many kvs nodes on one etcd cluster (the `etcd` shared logger): real etcd members
//! (Debian's etcd-server) and real kvs processes, all on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs_testkit::etcd::EtcdCluster;

use crate::util::{Kvs, get_status, http_client, staged_plugins};

/// A node's config: the etcd logger on `cluster` under `prefix`, rest on a free port.
fn node_config(
    dir: &Path,
    name: &str,
    cluster: &EtcdCluster,
    prefix: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "logger = \"etcd\"\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 5000\n{extra}\n\
             [plugins.etcd]\nendpoints = {:?}\nprefix = {prefix:?}\ntimeout_ms = 1000\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n",
            cluster.endpoints()
        ),
    )
    .unwrap();
    path
}

/// The value under `key` on the node at `url`, `None` if missing.
fn get(http: &reqwest::blocking::Client, url: &str, key: &str) -> Option<String> {
    let r = http.get(format!("{url}/v1/key/{key}")).send().unwrap();
    match r.status().as_u16() {
        200 => Some(r.text().unwrap()),
        404 => None,
        other => panic!("GET {key} on {url}: {other}"),
    }
}

/// Waits until `check` holds, or fails with what it last said.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn three_nodes_share_one_log_through_a_node_crash_and_a_member_stop() {
    let mut etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let configs: Vec<PathBuf> = (1..=3)
        .map(|n| node_config(dir.path(), &format!("node{n}"), &etcd, "t1/", ""))
        .collect();
    let mut nodes: Vec<Option<Kvs>> = configs
        .iter()
        .map(|c| Some(Kvs::start(c, &plugins, &[])))
        .collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().url.clone())
        .collect();

    // Writers on every node: keys of their own (every acknowledged one must survive)
    // and keys all nodes write (the last write in etcd's order must win everywhere).
    let acked: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let writers: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(n, url)| {
            let (url, acked) = (url.clone(), acked.clone());
            std::thread::spawn(move || {
                let http = http_client();
                for i in 0..120 {
                    for key in [format!("own-{n}-{i}"), format!("shared-{}", i % 7)] {
                        let value = format!("node{n}-{i}");
                        match http
                            .put(format!("{url}/v1/key/{key}"))
                            .body(value.clone())
                            .send()
                        {
                            Ok(r) if r.status() == 201 => acked.lock().unwrap().push((key, value)),
                            Ok(_) => {} // refused (e.g. 503 during the member stop): not acknowledged
                            Err(_) => return, // this node was killed
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    nodes[2].as_ref().unwrap().kill9();
    etcd.stop(1);
    for w in writers {
        w.join().unwrap();
    }
    nodes[2] = None;
    // The crashed node comes back and catches up from etcd.
    let restarted = Kvs::start(&configs[2], &plugins, &[]);
    let urls = [urls[0].clone(), urls[1].clone(), restarted.url.clone()];
    nodes[2] = Some(restarted);

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 200,
        "too few writes acknowledged: {}",
        acked.len()
    );
    let http = http_client();
    // Every acknowledged write of a node's own keys is on every node.
    let own: Vec<&(String, String)> = acked
        .iter()
        .filter(|(k, _)| k.starts_with("own-"))
        .collect();
    for url in &urls {
        eventually(
            &format!("acknowledged writes on {url}"),
            Duration::from_secs(10),
            || {
                for (key, value) in &own {
                    let got = get(&http, url, key);
                    if got.as_deref() != Some(value.as_str()) {
                        return Err(format!("{key}: {got:?}, want {value:?}"));
                    }
                }
                Ok(())
            },
        );
    }
    // The shared keys: every node holds what etcd holds, i.e. the last write in
    // revision order.
    let in_etcd: BTreeMap<String, String> = {
        let out = etcd.etcdctl(&["get", "--prefix", "t1/shared-"]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .map(|kv| {
                (
                    kv[0].trim_start_matches("t1/").to_string(),
                    kv[1].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(in_etcd.len(), 7, "{in_etcd:?}");
    for url in &urls {
        eventually(
            &format!("shared keys on {url}"),
            Duration::from_secs(10),
            || {
                for (key, value) in &in_etcd {
                    let got = get(&http, url, key);
                    if got.as_deref() != Some(value.as_str()) {
                        return Err(format!("{key}: {got:?}, etcd has {value:?}"));
                    }
                }
                Ok(())
            },
        );
    }
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
}

#[test]
fn losing_etcd_quorum_refuses_writes_keeps_local_reads_and_recovers_without_restart() {
    let mut etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(
        dir.path(),
        "node",
        &etcd,
        "t2/",
        "[cluster]\ntimeout_ms = 3000\n",
    );
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let http = http_client();
    let put = |key: &str| {
        http.put(format!("{}/v1/key/{key}", kvs.url))
            .body("v")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put("before"), 201);

    etcd.stop(1);
    etcd.stop(2);
    let started = Instant::now();
    assert_eq!(put("during"), 503, "a write without quorum");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    eventually(
        "readiness false",
        Duration::from_secs(10),
        || match get_status(&http, format!("{}/readyz", kvs.url)).as_u16() {
            503 => Ok(()),
            other => Err(format!("/readyz {other}")),
        },
    );
    assert_eq!(
        get(&http, &kvs.url, "before").as_deref(),
        Some("v"),
        "local reads still served"
    );

    etcd.restart(1);
    etcd.restart(2);
    etcd.wait_healthy(Duration::from_secs(30));
    eventually("writes again", Duration::from_secs(30), || {
        match put("after") {
            201 => Ok(()),
            other => Err(format!("PUT {other}")),
        }
    });
    eventually("ready again", Duration::from_secs(10), || match get_status(
        &http,
        format!("{}/readyz", kvs.url),
    )
    .as_u16()
    {
        200 => Ok(()),
        other => Err(format!("/readyz {other}")),
    });
    assert_eq!(get(&http, &kvs.url, "after").as_deref(), Some("v"));
    kvs.stop();
}

#[test]
fn a_linearizable_node_reads_what_another_node_just_wrote() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let writer = Kvs::start(
        &node_config(dir.path(), "w", &etcd, "t3/", ""),
        &plugins,
        &[],
    );
    let reader = Kvs::start(
        &node_config(
            dir.path(),
            "r",
            &etcd,
            "t3/",
            "[cluster]\nreads = \"linearizable\"\n",
        ),
        &plugins,
        &[],
    );
    let http = http_client();
    for i in 0..50 {
        let value = format!("v{i}");
        let status = http
            .put(format!("{}/v1/key/k", writer.url))
            .body(value.clone())
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 201);
        // No waiting: the read's barrier makes the reader catch up first.
        assert_eq!(
            get(&http, &reader.url, "k").as_deref(),
            Some(value.as_str()),
            "round {i}"
        );
    }
    writer.stop();
    reader.stop();
}
