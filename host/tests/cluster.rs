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
fn linearizable_reads_by_config_or_by_request_see_another_nodes_write_at_once() {
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
    // A node reading locally by default, whose client asks for linearizable reads.
    let asker = Kvs::start(
        &node_config(dir.path(), "a", &etcd, "t3/", ""),
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
        let asked = http
            .get(format!("{}/v1/key/k", asker.url))
            .header("kvs-consistency", "linearizable")
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(asked, value, "round {i}, per-request linearizable read");
    }
    writer.stop();
    reader.stop();
    asker.stop();
}

/// Concurrent writes and linearizable reads of a few keys, each client on its own
/// node: the recorded history passes the linearizability checker.
#[test]
fn concurrent_writes_and_linearizable_reads_across_nodes_are_linearizable() {
    use kvs_testkit::linearizable::{Action, Op, check};
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let nodes: Vec<Kvs> = (0..3)
        .map(|n| {
            let config = node_config(
                dir.path(),
                &format!("lin{n}"),
                &etcd,
                "t4/",
                "[cluster]\nreads = \"linearizable\"\n",
            );
            Kvs::start(&config, &plugins, &[])
        })
        .collect();
    let began = Instant::now();
    let history: Arc<Mutex<Vec<Op>>> = Default::default();
    let clients: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(c, node)| {
            let (url, history) = (node.url.clone(), history.clone());
            std::thread::spawn(move || {
                let http = http_client();
                let mut seed = 0x2545_f491_4f6c_dd1du64 ^ (c as u64 + 1);
                for i in 0..20 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = format!("r{}", seed % 2);
                    let start = began.elapsed().as_nanos() as u64;
                    let action = if seed.is_multiple_of(3) {
                        let value = format!("c{c}-{i}");
                        let ok = http
                            .put(format!("{url}/v1/key/{key}"))
                            .body(value.clone())
                            .send()
                            .is_ok_and(|r| r.status() == 201);
                        let end = if ok {
                            began.elapsed().as_nanos() as u64
                        } else {
                            u64::MAX
                        };
                        history.lock().unwrap().push(Op {
                            key,
                            start,
                            end,
                            action: Action::Write(value),
                        });
                        continue;
                    } else {
                        Action::Read(get(&http, &url, &key))
                    };
                    let end = began.elapsed().as_nanos() as u64;
                    history.lock().unwrap().push(Op {
                        key,
                        start,
                        end,
                        action,
                    });
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let history = history.lock().unwrap().clone();
    assert_eq!(history.len(), 60);
    // A history of failed writes and reads of nothing would pass the checker
    // trivially: require real work of each kind.
    let writes = history
        .iter()
        .filter(|op| matches!(op.action, Action::Write(_)) && op.end != u64::MAX)
        .count();
    let reads_of_values = history
        .iter()
        .filter(|op| matches!(&op.action, Action::Read(Some(_))))
        .count();
    assert!(
        writes >= 5 && reads_of_values >= 5,
        "too little happened to check: {writes} writes acknowledged, {reads_of_values} reads \
         of a value"
    );
    check(&history).unwrap();
    for n in nodes {
        n.stop();
    }
}

/// A node whose watch falls behind etcd's compaction reloads the snapshot: keys
/// deleted meanwhile disappear, new ones appear.
#[test]
fn a_node_behind_the_compaction_reloads_the_snapshot() {
    let mut etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let endpoints = etcd.endpoints();
    // The follower talks to member 0 only; the writer to the others.
    let follower_config = dir.path().join("follower.toml");
    let writer_config = dir.path().join("writer.toml");
    for (path, eps) in [
        (&follower_config, vec![endpoints[0].clone()]),
        (&writer_config, endpoints[1..].to_vec()),
    ] {
        std::fs::write(
            path,
            format!(
                "logger = \"etcd\"\nfrontends = [\"rest\"]\n\
                 [plugins.etcd]\nendpoints = {eps:?}\nprefix = \"t5/\"\ntimeout_ms = 1000\n\
                 [plugins.rest]\nlisten = \"127.0.0.1:0\"\n"
            ),
        )
        .unwrap();
    }
    let writer = Kvs::start(&writer_config, &plugins, &[]);
    let follower = Kvs::start(&follower_config, &plugins, &[]);
    let http = http_client();
    let put = |key: &str, value: &str| {
        let status = http
            .put(format!("{}/v1/key/{key}", writer.url))
            .body(value.to_string())
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 201, "PUT {key}");
    };
    put("doomed", "1");
    put("kept", "1");
    eventually(
        "the follower has both",
        Duration::from_secs(10),
        || match get(&http, &follower.url, "doomed") {
            Some(_) => Ok(()),
            None => Err("not yet".into()),
        },
    );

    // The follower sleeps; its member goes down; the log moves on and is compacted.
    let pause = |signal: &str| {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(follower.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    pause("STOP");
    etcd.stop(0);
    // Member 0 may have been the leader: let the others elect one.
    etcd.wait_healthy(Duration::from_secs(30));
    let deleted = http
        .delete(format!("{}/v1/key/doomed", writer.url))
        .send()
        .unwrap()
        .status();
    assert_eq!(deleted, 200);
    for i in 0..20 {
        put(&format!("new-{i}"), "2");
    }
    put("kept", "2");
    let revision = {
        let out = etcd.etcdctl(&["get", "t5/kept", "-w", "fields"]);
        out.lines()
            .find_map(|l| l.strip_prefix("\"Revision\" : "))
            .unwrap()
            .trim()
            .to_string()
    };
    etcd.etcdctl(&["compact", &revision]);
    etcd.restart(0);
    etcd.wait_healthy(Duration::from_secs(30));
    pause("CONT");

    eventually("the follower reloaded", Duration::from_secs(20), || {
        let (doomed, kept, last) = (
            get(&http, &follower.url, "doomed"),
            get(&http, &follower.url, "kept"),
            get(&http, &follower.url, "new-19"),
        );
        if doomed.is_none() && kept.as_deref() == Some("2") && last.is_some() {
            Ok(())
        } else {
            Err(format!("doomed {doomed:?}, kept {kept:?}, new-19 {last:?}"))
        }
    });
    assert!(follower.log().contains("compaction"), "{}", follower.log());
    writer.stop();
    follower.stop();
}

/// TLS to etcd with client certificates: a member that requires them serves a node
/// configured with the CA and a client certificate, and refuses one without.
#[test]
fn the_etcd_logger_speaks_tls_with_a_client_certificate() {
    use kvs_testkit::etcd::EtcdTls;
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::security::Pki::new(dir.path(), "pki");
    let (cert, key) = pki.issue("etcd", "etcd", true);
    let (client_cert, client_key) = pki.issue("kvs", "kvs", false);
    let etcd = EtcdCluster::start_with(
        1,
        Some(EtcdTls {
            ca: pki.ca(),
            cert,
            key,
            client_cert: client_cert.clone(),
            client_key: client_key.clone(),
        }),
    );
    let plugins = staged_plugins();
    let tls = format!(
        "tls = {{ ca = {:?}, cert = {client_cert:?}, key = {client_key:?} }}\n",
        pki.ca()
    );
    let config = node_config(dir.path(), "tls", &etcd, "t6/", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("timeout_ms = 1000\n", &format!("timeout_ms = 1000\n{tls}"));
    std::fs::write(&config, text).unwrap();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let http = http_client();
    let status = http
        .put(format!("{}/v1/key/secure", kvs.url))
        .body("yes")
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 201);
    assert_eq!(
        etcd.etcdctl(&["get", "t6/secure", "--print-value-only"])
            .trim(),
        "yes"
    );
    kvs.stop();

    // Without a client certificate the member refuses the connection: kvs cannot
    // catch up and says why.
    let bare = node_config(
        dir.path(),
        "bare",
        &etcd,
        "t6/",
        "[cluster]\ntimeout_ms = 2000\n",
    );
    let text = std::fs::read_to_string(&bare).unwrap().replace(
        "timeout_ms = 1000\n",
        &format!("timeout_ms = 1000\ntls = {{ ca = {:?} }}\n", pki.ca()),
    );
    std::fs::write(&bare, text).unwrap();
    let refused = Kvs::try_start(&bare, &plugins, &[])
        .err()
        .expect("kvs must not start");
    assert!(
        refused.contains("cannot catch up with the etcd log"),
        "{refused}"
    );
}

/// `kvs_keys` from a node's admin listener.
fn keys_on(http: &reqwest::blocking::Client, admin: &str) -> u64 {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kvs_keys "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no kvs_keys in:\n{text}"))
}

/// The kvs keys under `prefix` in etcd (the marker, the bare prefix, is not one).
fn keys_in_etcd(etcd: &EtcdCluster, prefix: &str) -> u64 {
    let out = etcd.etcdctl(&["get", prefix, "--prefix", "--keys-only"]);
    out.lines()
        .filter(|l| !l.is_empty() && *l != prefix)
        .count() as u64
}

/// Puts `count` keys straight into etcd through its JSON gateway, from 16 clients at
/// once: one etcd revision each, as many other nodes writing one key per batch would
/// make.
fn backlog(endpoint: &str, prefix: &str, count: usize) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let url = format!("{endpoint}/v3/kv/put");
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let http = http_client();
                for i in (t..count).step_by(16) {
                    let body = format!(
                        r#"{{"key":"{}","value":"{}"}}"#,
                        b64(&format!("{prefix}backlog-{i}")),
                        b64("x")
                    );
                    let r = http.post(&url).body(body).send().unwrap();
                    assert!(r.status().is_success(), "etcd put: {}", r.status());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// What readers and writers on the catching-up node saw.
#[derive(Default, Debug)]
struct Seen {
    /// Linearizable reads of the key acknowledged before they began: value, 503, other.
    current: u64,
    unavailable: u64,
    stale: Vec<String>,
    /// PUTs acknowledged on the node, and those a local read then missed.
    acknowledged: u64,
    lost_own_writes: Vec<String>,
}

/// Issue 36's experiment: node B, in its own network namespace, is cut off from etcd
/// while a large backlog is written; it is healed, and cut off again while it is
/// catching up. Linearizable reads on B must never return a value older than the last
/// write acknowledged before they began (503 is fine), a PUT acknowledged by B must be
/// visible to B's next local read, B must say it is not ready while it knows it is
/// behind, its health checks must not wait behind reads, and after the last heal B
/// must hold exactly etcd's keys, without a restart.
#[test]
fn a_node_catching_up_after_partitions_serves_no_stale_read_and_loses_nothing() {
    use kvs_testkit::netns::NetNs;
    assert!(
        NetNs::available(),
        "this test needs root, iproute2 and nftables (apt-get install nftables)"
    );
    let ns = NetNs::new().unwrap();
    let etcd = EtcdCluster::start_also_on(3, &ns.host_ip);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let prefix = "part/";
    let a = Kvs::start(
        &node_config(
            dir.path(),
            "a",
            &etcd,
            prefix,
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
        ),
        &plugins,
        &[],
    );
    let b_config = dir.path().join("b.toml");
    std::fs::write(
        &b_config,
        format!(
            "logger = \"etcd\"\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 5000\n\
             [cluster]\ntimeout_ms = 3000\n\
             [plugins.etcd]\nendpoints = {:?}\nprefix = {prefix:?}\ntimeout_ms = 1000\n\
             [plugins.rest]\nlisten = \"{ip}:0\"\n[admin]\nlisten = \"{ip}:0\"\n",
            etcd.endpoints_on(&ns.host_ip),
            ip = ns.ns_ip
        ),
    )
    .unwrap();
    let in_ns = ns.exec_prefix();
    let in_ns: Vec<&str> = in_ns.iter().map(String::as_str).collect();
    let b = Kvs::start_under(&in_ns, &b_config, &plugins);
    let http = http_client();
    let put = |url: &str, key: &str, value: &str| {
        http.put(format!("{url}/v1/key/{key}"))
            .body(value.to_string())
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(put(&a.url, "before", "1"), 201);
    eventually("B has A's first write", Duration::from_secs(10), || {
        get(&http, &b.url, "before")
            .map(|_| ())
            .ok_or("missing".into())
    });

    // Cut B off; a backlog piles up in etcd; A acknowledges one last write.
    ns.partition(&etcd.client_ports()).unwrap();
    let started = Instant::now();
    let backlog_size = 25_000;
    backlog(&etcd.endpoints()[0], prefix, backlog_size);
    println!(
        "backlog of {backlog_size} revisions written in {:?}",
        started.elapsed()
    );
    assert_eq!(put(&a.url, "latest", "final"), 201);

    // Heal, and from now on read and write on B while it catches up.
    ns.heal().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Default::default();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (url, stop, seen) = (b.url.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || {
            let http = http_client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http
                    .get(format!("{url}/v1/key/latest"))
                    .header("kvs-consistency", "linearizable")
                    .send()
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                match (status, body.as_str()) {
                    (200, "final") => seen.current += 1,
                    (503, _) => seen.unavailable += 1,
                    other => seen.stale.push(format!("{other:?}")),
                }
            }
        }));
    }
    {
        let (url, stop, seen) = (b.url.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || {
            let http = http_client();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let key = format!("own-b-{i}");
                let r = http
                    .put(format!("{url}/v1/key/{key}"))
                    .body(key.clone())
                    .send()
                    .unwrap();
                if r.status() != 201 {
                    continue; // refused: never acknowledged
                }
                let r = http.get(format!("{url}/v1/key/{key}")).send().unwrap();
                let mut seen = seen.lock().unwrap();
                seen.acknowledged += 1;
                if r.status() != 200 {
                    seen.lost_own_writes.push(format!("{key}: {}", r.status()));
                }
            }
        }));
    }

    // Cut B off again while it is catching up.
    std::thread::sleep(Duration::from_millis(800));
    ns.partition(&etcd.client_ports()).unwrap();
    eventually(
        "B unready during the partition",
        Duration::from_secs(10),
        || match get_status(&http, format!("{}/readyz", b.url)).as_u16() {
            503 => Ok(()),
            other => Err(format!("/readyz {other}")),
        },
    );
    // Its health checks answer at once, while linearizable reads wait for a quorum.
    for _ in 0..5 {
        let asked = Instant::now();
        assert_eq!(get_status(&http, format!("{}/healthz", b.url)), 200);
        let took = asked.elapsed();
        println!("B /healthz during the partition: {took:?}");
        assert!(took < Duration::from_millis(500), "/healthz took {took:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    ns.heal().unwrap();
    let healed = Instant::now();
    // Reads and writes go on through the second catch-up and 2 s past it (so that some
    // are sure to succeed), then stop, so that B's and etcd's key counts can be compared.
    eventually(
        "B ready again",
        Duration::from_secs(30),
        || match get_status(&http, format!("{}/readyz", b.url)).as_u16() {
            200 => Ok(()),
            other => Err(format!("/readyz {other}")),
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    // Within 30 s B holds exactly etcd's keys, and says it is ready.
    eventually("B converged on etcd", Duration::from_secs(30), || {
        let (on_b, in_etcd) = (keys_on(&http, &b.admin()), keys_in_etcd(&etcd, prefix));
        if on_b != in_etcd {
            return Err(format!("B has {on_b} keys, etcd {in_etcd}"));
        }
        match get_status(&http, format!("{}/readyz", b.url)).as_u16() {
            200 => Ok(()),
            other => Err(format!("/readyz {other}")),
        }
    });
    println!("B converged {:?} after the heal", healed.elapsed());
    let seen = seen.lock().unwrap();
    println!("{seen:?}");
    assert!(
        seen.stale.is_empty(),
        "stale linearizable reads: {:?}",
        seen.stale
    );
    assert!(
        seen.lost_own_writes.is_empty(),
        "acknowledged PUTs a local read missed: {:?}",
        seen.lost_own_writes
    );
    assert!(seen.current > 0, "no linearizable read succeeded: {seen:?}");
    assert!(seen.acknowledged > 0, "no PUT on B succeeded: {seen:?}");
    assert_eq!(keys_on(&http, &a.admin()), keys_in_etcd(&etcd, prefix));
    b.stop();
    a.stop();
}

/// A hung etcd leader (SIGSTOP: its connections stay open, nothing answers) must not
/// stall a node's writes for longer than about an election: kvs routes around it.
#[test]
fn a_hung_etcd_leader_stalls_writes_for_at_most_a_few_seconds() {
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let kvs = Kvs::start(
        &node_config(dir.path(), "node", &etcd, "hung/", ""),
        &staged_plugins(),
        &[],
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every acknowledged PUT's time, from four writers.
    let acked: Arc<Mutex<Vec<Instant>>> = Default::default();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop, acked, refused) = (
                kvs.url.clone(),
                stop.clone(),
                acked.clone(),
                refused.clone(),
            );
            std::thread::spawn(move || {
                let http = http_client();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let r = http
                        .put(format!("{url}/v1/key/w{w}-{i}"))
                        .body("v")
                        .send()
                        .unwrap();
                    if r.status() == 201 {
                        acked.lock().unwrap().push(Instant::now());
                    } else {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let leader = etcd.leader().expect("a leader");
    let paused = Instant::now();
    etcd.pause(leader);
    std::thread::sleep(Duration::from_secs(10));
    etcd.resume(leader);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    // Acknowledged writes per 500 ms, from 1 s before the stop to 1 s after it ended.
    let from = paused - Duration::from_secs(1);
    let mut buckets = vec![0u32; 24];
    for t in acked.iter().filter(|t| **t >= from) {
        let i = (t.duration_since(from).as_millis() / 500) as usize;
        if i < buckets.len() {
            buckets[i] += 1;
        }
    }
    let before = buckets[0] + buckets[1];
    // Writes have resumed once they flow again: a half second with an eighth of the
    // rate before the stop (other tests share the two cores), and at least 20.
    let resumed = buckets[2..22]
        .iter()
        .position(|n| *n >= 20 && *n * 16 >= before)
        .map(|i| Duration::from_millis(500 * i as u64));
    println!(
        "leader (member {leader}) stopped for 10 s: writes per 500 ms {buckets:?} \
         (the stop began after the second); writes flowed again {resumed:?} after it; \
         {} refused in all",
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        resumed.is_some_and(|r| r <= Duration::from_secs(3)),
        "writes did not resume within 3 s of the leader hanging: {buckets:?}"
    );
    kvs.stop();
}

/// A write that changes no key under the prefix (a DELETE of a missing key) still comes
/// back through the watch at its revision, so it is acknowledged at once and the node
/// stays ready (it used to wait for some later event, and its watch was restarted).
#[test]
fn deleting_a_missing_key_is_acknowledged_at_once() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let kvs = Kvs::start(
        &node_config(dir.path(), "node", &etcd, "del/", ""),
        &staged_plugins(),
        &[],
    );
    let http = http_client();
    for i in 0..5 {
        let asked = Instant::now();
        let r = http
            .delete(format!("{}/v1/key/missing-{i}", kvs.url))
            .send()
            .unwrap();
        let took = asked.elapsed();
        assert_eq!(r.status(), 200);
        assert!(took < Duration::from_millis(500), "DELETE took {took:?}");
    }
    assert_eq!(get_status(&http, format!("{}/readyz", kvs.url)), 200);
    assert!(
        !kvs.log().contains("restarting it"),
        "the watch was restarted:\n{}",
        kvs.log()
    );
    kvs.stop();
}

/// Values near kvs's 1 MiB limit: a group-commit batch of several is split to fit
/// etcd's request limit (1.5 MiB by default), and a node starting later reads a
/// snapshot page larger than gRPC's default 4 MiB response limit.
#[test]
fn large_values_fit_etcds_limits_in_batches_and_snapshots() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let a = Kvs::start(
        &node_config(dir.path(), "a", &etcd, "big/", ""),
        &plugins,
        &[],
    );
    // Eight writers at once: their PUTs share group commits.
    let value = |i: usize| vec![b'a' + i as u8; (1 << 20) - 64];
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let url = format!("{}/v1/key/v{i}", a.url);
            std::thread::spawn(move || {
                http_client()
                    .put(url)
                    .body(value(i))
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), 201, "{}", a.log());
    }
    // A node starting now reads all eight (8 MiB) in its first snapshot page.
    let b = Kvs::start(
        &node_config(dir.path(), "b", &etcd, "big/", ""),
        &plugins,
        &[],
    );
    let http = http_client();
    for i in 0..8 {
        let r = http.get(format!("{}/v1/key/v{i}", b.url)).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().to_vec(), value(i));
    }
    b.stop();
    a.stop();
}

/// Atomic operations across nodes: every node takes `INCR`s of one counter (redis-cli)
/// and REST compare-and-set increments (GET, then PUT `If-Match`, retried on 412) at
/// once. No increment is lost, every node ends with the same count, and the recorded
/// compare-and-sets pass the linearizability checker as a compare-and-set register.
#[test]
fn increments_and_compare_and_set_from_every_node_lose_no_update() {
    use kvs_testkit::linearizable::{Action, Op, check};
    const INCRS: usize = 40; // per redis-cli, two per node
    const CAS: usize = 4; // successful compare-and-sets per REST client, one per node
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let nodes: Vec<Kvs> = (0..3)
        .map(|n| {
            let config = dir.path().join(format!("cas{n}.toml"));
            std::fs::write(
                &config,
                format!(
                    "logger = \"etcd\"\nfrontends = [\"rest\", \"resp\"]\n\
                     shutdown_timeout_ms = 5000\n[cluster]\nreads = \"linearizable\"\n\
                     [plugins.etcd]\nendpoints = {:?}\nprefix = \"t9/\"\ntimeout_ms = 2000\n\
                     [plugins.rest]\nlisten = \"127.0.0.1:0\"\n\
                     [plugins.resp]\nlisten = \"127.0.0.1:0\"\n",
                    etcd.endpoints()
                ),
            )
            .unwrap();
            Kvs::start(&config, &plugins, &[])
        })
        .collect();
    let began = Instant::now();
    let history: Arc<Mutex<Vec<Op>>> = Default::default();
    let mut threads = Vec::new();
    for node in &nodes {
        let port = crate::resp::port(node, "resp");
        for _ in 0..2 {
            let port = port.clone();
            threads.push(std::thread::spawn(move || {
                let out = std::process::Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", &port, "-r", &INCRS.to_string()])
                    .args(["INCR", "counter"])
                    .output()
                    .expect("redis-cli");
                let text = String::from_utf8_lossy(&out.stdout);
                assert_eq!(text.lines().count(), INCRS, "{text}");
                assert!(text.lines().all(|l| l.parse::<u64>().is_ok()), "{text}");
            }));
        }
        let (url, history) = (node.url.clone(), history.clone());
        threads.push(std::thread::spawn(move || {
            let http = http_client();
            let key_url = format!("{url}/v1/key/register");
            let mut done = 0;
            while done < CAS {
                let got = http.get(&key_url).send().unwrap();
                let (expected, etag) = match got.status().as_u16() {
                    200 => {
                        let etag = got.headers()["etag"].to_str().unwrap().to_string();
                        (Some(got.text().unwrap()), etag)
                    }
                    404 => (None, String::new()),
                    other => panic!("GET: {other}"),
                };
                let next = expected
                    .as_deref()
                    .map_or(1, |v| v.parse::<u64>().unwrap() + 1)
                    .to_string();
                let start = began.elapsed().as_nanos() as u64;
                let put = http.put(&key_url).body(next.clone());
                let put = match &expected {
                    Some(_) => put.header("if-match", etag),
                    None => put.header("if-none-match", "*"),
                };
                let (end, ok) = match put.send().map(|r| r.status().as_u16()) {
                    Ok(201) => (began.elapsed().as_nanos() as u64, Some(true)),
                    Ok(412) => (began.elapsed().as_nanos() as u64, Some(false)),
                    _ => (u64::MAX, None),
                };
                done += usize::from(ok == Some(true));
                history.lock().unwrap().push(Op {
                    key: "register".into(),
                    start,
                    end,
                    action: Action::Cas {
                        expected,
                        new: next,
                        ok,
                    },
                });
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let http = http_client();
    let total = (3 * 2 * INCRS).to_string();
    for node in &nodes {
        // Linearizable reads: every node answers with every increment.
        assert_eq!(
            get(&http, &node.url, "counter").as_deref(),
            Some(total.as_str())
        );
        assert_eq!(
            get(&http, &node.url, "register").as_deref(),
            Some((3 * CAS).to_string().as_str())
        );
    }
    let history = history.lock().unwrap().clone();
    let conflicts = history
        .iter()
        .filter(|op| {
            matches!(
                op.action,
                Action::Cas {
                    ok: Some(false),
                    ..
                }
            )
        })
        .count();
    eprintln!(
        "{} compare-and-sets, {conflicts} refused with 412",
        history.len()
    );
    check(&history).unwrap();
    for n in nodes {
        n.stop();
    }
}

/// The etcd leader's index, waiting up to 10 s for one (after a heal, an election may
/// still be going on), so the fault list names members as they were.
fn leader_of(etcd: &Mutex<EtcdCluster>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(leader) = etcd.lock().unwrap().leader() {
            return leader;
        }
        assert!(Instant::now() < deadline, "no etcd leader within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the nemesis test's clients recorded.
#[derive(Default)]
struct Recorded {
    history: Vec<kvs_testkit::linearizable::Op>,
    /// Operations per key so far (the checker takes at most 128 per key).
    per_key: BTreeMap<String, usize>,
}

/// Issue 32's nemesis: a 3-member etcd cluster and three kvs nodes, each on a host of
/// its own on the test's LAN (a bridge, one network namespace per process); clients on every node writing, compare-and-setting (GET,
/// then PUT `If-Match`) and reading linearizably, while a schedule of faults runs
/// twice: B cut off from every etcd member, the etcd leader paused (SIGSTOP: its
/// connections stay open and answer nothing), an etcd follower killed and restarted,
/// the etcd leader's cable pulled (isolated from the other members and every node), a
/// follower's cable pulled (a minority member isolated), and kvs node C paused. Each
/// fault lasts about 3 s, then heals. The recorded history of every key
/// must pass the linearizability checker (writes and compare-and-sets whose outcome the
/// client did not learn count as possibly done), and after the last heal every node
/// holds exactly etcd's keys, with the same values.
#[test]
fn a_nemesis_of_partitions_pauses_and_kills_leaves_every_history_linearizable() {
    use kvs_testkit::linearizable::{Action, Op, check};
    use kvs_testkit::netns::{Lan, NetNs};
    const KEYS: usize = 60;
    const MAX_PER_KEY: usize = 110;
    assert!(
        NetNs::available(),
        "this test needs root, iproute2 and nftables (apt-get install nftables)"
    );
    let lan = Lan::new().unwrap();
    let etcd = Arc::new(Mutex::new(EtcdCluster::start_on_lan(3, &lan)));
    // Every kvs node on a host of its own too.
    let hosts = [
        lan.host().unwrap(),
        lan.host().unwrap(),
        lan.host().unwrap(),
    ];
    let b_host = &hosts[1];
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let prefix = "nemesis/";
    let (endpoints, client_ports) = {
        let e = etcd.lock().unwrap();
        (e.endpoints(), e.client_ports())
    };
    let config = |name: &str, endpoints: &[String], ip: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "logger = \"etcd\"\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 5000\n\
                 [cluster]\nreads = \"linearizable\"\ntimeout_ms = 3000\n\
                 [plugins.etcd]\nendpoints = {endpoints:?}\nprefix = {prefix:?}\n\
                 timeout_ms = 1000\n[plugins.rest]\nlisten = \"{ip}:0\"\n\
                 [admin]\nlisten = \"{ip}:0\"\n"
            ),
        )
        .unwrap();
        path
    };
    let start_on = |name: &str, host: &kvs_testkit::netns::LanHost| {
        let prefix = host.exec_prefix();
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        Kvs::start_under(&prefix, &config(name, &endpoints, &host.ip), &plugins)
    };
    let a = start_on("a", &hosts[0]);
    let b = start_on("b", &hosts[1]);
    let c = start_on("c", &hosts[2]);
    let began = Instant::now();
    let now = move || began.elapsed().as_nanos() as u64;
    let recorded: Arc<Mutex<Recorded>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for (n, url) in [&a.url, &b.url, &c.url].into_iter().enumerate() {
        for k in 0..2u64 {
            let (url, recorded, stop) = (url.clone(), recorded.clone(), stop.clone());
            clients.push(std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((n as u64) << 8 | k) | 1;
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = format!("k{}", seed % KEYS as u64);
                    {
                        let mut r = recorded.lock().unwrap();
                        let count = r.per_key.entry(key.clone()).or_default();
                        if *count >= MAX_PER_KEY {
                            drop(r);
                            std::thread::sleep(Duration::from_millis(30));
                            continue;
                        }
                        *count += 1;
                    }
                    i += 1;
                    let value = format!("n{n}c{k}-{i}"); // unique: a value names its write
                    let key_url = format!("{url}/v1/key/{key}");
                    let op = match seed % 10 {
                        // A write; unknown outcome when not acknowledged.
                        0..=3 => {
                            let start = now();
                            let ok = http
                                .put(&key_url)
                                .body(value.clone())
                                .send()
                                .is_ok_and(|r| r.status() == 201);
                            Some(Op {
                                key,
                                start,
                                end: if ok { now() } else { u64::MAX },
                                action: Action::Write(value),
                            })
                        }
                        // A compare-and-set on the value (and revision) just read.
                        4..=6 => {
                            let got = http.get(&key_url).send();
                            let (expected, etag) = match got {
                                Ok(r) if r.status() == 200 => {
                                    let etag = r.headers()["etag"].to_str().unwrap().to_string();
                                    (Some(r.text().unwrap_or_default()), Some(etag))
                                }
                                Ok(r) if r.status() == 404 => (None, None),
                                _ => {
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue; // no read, no compare-and-set
                                }
                            };
                            let start = now();
                            let put = http.put(&key_url).body(value.clone());
                            let put = match &etag {
                                Some(etag) => put.header("if-match", etag),
                                None => put.header("if-none-match", "*"),
                            };
                            let (end, ok) = match put.send().map(|r| r.status().as_u16()) {
                                Ok(201) => (now(), Some(true)),
                                Ok(412) => (now(), Some(false)),
                                _ => (u64::MAX, None),
                            };
                            Some(Op {
                                key,
                                start,
                                end,
                                action: Action::Cas {
                                    expected,
                                    new: value,
                                    ok,
                                },
                            })
                        }
                        // A linearizable read; one that fails tells nothing.
                        _ => {
                            let start = now();
                            match http.get(&key_url).send().map(|r| {
                                let status = r.status().as_u16();
                                (status, r.text().unwrap_or_default())
                            }) {
                                Ok((200, body)) => Some(Op {
                                    key,
                                    start,
                                    end: now(),
                                    action: Action::Read(Some(body)),
                                }),
                                Ok((404, _)) => Some(Op {
                                    key,
                                    start,
                                    end: now(),
                                    action: Action::Read(None),
                                }),
                                _ => None,
                            }
                        }
                    };
                    if let Some(op) = op {
                        recorded.lock().unwrap().history.push(op);
                    }
                    // Paced, so the faults of both rounds meet operations on every key
                    // (the checker takes at most 128 per key).
                    std::thread::sleep(Duration::from_millis(30));
                }
            }));
        }
    }
    // The schedule: each fault ~3 s, then 1.5 s healed, twice over.
    let mut faults = Vec::new();
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        b_host.partition(&client_ports).unwrap();
        faults.push(format!(
            "round {round}: node B cut off from every etcd member"
        ));
        std::thread::sleep(Duration::from_secs(3));
        b_host.heal().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let leader = leader_of(&etcd);
        etcd.lock().unwrap().pause(leader);
        faults.push(format!("round {round}: etcd leader {leader} paused"));
        std::thread::sleep(Duration::from_secs(3));
        etcd.lock().unwrap().resume(leader);
        std::thread::sleep(Duration::from_millis(1500));
        let follower = (leader_of(&etcd) + 1) % 3;
        etcd.lock().unwrap().stop(follower);
        faults.push(format!("round {round}: etcd follower {follower} killed"));
        std::thread::sleep(Duration::from_secs(3));
        etcd.lock().unwrap().restart(follower);
        std::thread::sleep(Duration::from_millis(1500));
        let leader = leader_of(&etcd);
        etcd.lock().unwrap().cut(leader);
        // Pulled indeed: not even a TCP handshake gets through.
        let member: std::net::SocketAddr = endpoints[leader]
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(&member, Duration::from_millis(300)).is_err(),
            "member {leader} still answers with its cable pulled"
        );
        faults.push(format!(
            "round {round}: etcd leader {leader}'s cable pulled"
        ));
        std::thread::sleep(Duration::from_secs(3));
        etcd.lock().unwrap().mend(leader);
        std::thread::sleep(Duration::from_millis(1500));
        let follower = (leader_of(&etcd) + 2) % 3;
        etcd.lock().unwrap().cut(follower);
        faults.push(format!(
            "round {round}: etcd follower {follower}'s cable pulled (a minority isolated)"
        ));
        std::thread::sleep(Duration::from_secs(3));
        etcd.lock().unwrap().mend(follower);
        std::thread::sleep(Duration::from_millis(1500));
        let pause = |signal: &str| {
            let ok = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &c.pid().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill -{signal} kvs node C");
        };
        pause("STOP");
        faults.push(format!("round {round}: kvs node C paused"));
        std::thread::sleep(Duration::from_secs(3));
        pause("CONT");
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let history = std::mem::take(&mut recorded.lock().unwrap().history);
    let indeterminate = history.iter().filter(|op| op.end == u64::MAX).count();
    let acknowledged = history
        .iter()
        .filter(|op| {
            op.end != u64::MAX
                && matches!(
                    op.action,
                    Action::Write(_) | Action::Cas { ok: Some(true), .. }
                )
        })
        .count();
    let reads = history
        .iter()
        .filter(|op| matches!(op.action, Action::Read(_)))
        .count();
    println!("faults: {faults:#?}");
    println!(
        "history: {} operations over {KEYS} keys ({acknowledged} acknowledged writes and \
         compare-and-sets, {reads} linearizable reads, {indeterminate} indeterminate)",
        history.len()
    );
    assert!(
        acknowledged >= 50 && reads >= 50,
        "too little happened to check: {acknowledged} writes, {reads} reads"
    );
    check(&history).unwrap();
    // After the last heal: every node holds etcd's keys, the same values on each.
    let http = http_client();
    eventually("every node converged", Duration::from_secs(30), || {
        let mut values = Vec::new();
        for node in [&a, &b, &c] {
            let mut on_node = BTreeMap::new();
            for k in 0..KEYS {
                let key = format!("k{k}");
                let r = http
                    .get(format!("{}/v1/key/{key}", node.url))
                    .send()
                    .map_err(|e| e.to_string())?;
                match r.status().as_u16() {
                    200 => {
                        on_node.insert(key, r.text().unwrap_or_default());
                    }
                    404 => {}
                    other => return Err(format!("{}: GET {key}: {other}", node.url)),
                }
            }
            values.push(on_node);
        }
        if values[0] != values[1] || values[1] != values[2] {
            return Err("the nodes differ".into());
        }
        let in_etcd = keys_in_etcd(&etcd.lock().unwrap(), prefix);
        if values[0].len() as u64 != in_etcd {
            return Err(format!(
                "{} keys on the nodes, {in_etcd} in etcd",
                values[0].len()
            ));
        }
        Ok(())
    });
    c.stop();
    b.stop();
    a.stop();
}

/// Expiry across a cluster: a key put with a TTL on one node carries its deadline to
/// every node (as an etcd lease whose id is the deadline), is gone everywhere once the
/// deadline passes — also for a node started afterwards — and leaves etcd when its
/// lease runs out; `PERSIST` (a put without a lease) makes a key permanent again.
#[test]
fn keys_with_a_ttl_expire_on_every_node_and_leave_etcd() {
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    let prefix = "ttl/";
    let config = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "logger = \"etcd\"\nfrontends = [\"rest\", \"resp\"]\nshutdown_timeout_ms = 5000\n\
                 [plugins.etcd]\nendpoints = {:?}\nprefix = {prefix:?}\ntimeout_ms = 2000\n\
                 [plugins.rest]\nlisten = \"127.0.0.1:0\"\n\
                 [plugins.resp]\nlisten = \"127.0.0.1:0\"\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n",
                etcd.endpoints()
            ),
        )
        .unwrap();
        path
    };
    let a = Kvs::start(&config("a"), &plugins, &[]);
    let b = Kvs::start(&config("b"), &plugins, &[]);
    let http = http_client();
    let put = |url: &str, key: &str, ttl_ms: Option<u64>| {
        let mut request = http.put(format!("{url}/v1/key/{key}")).body("v");
        if let Some(ms) = ttl_ms {
            request = request.header("kvs-ttl-ms", ms.to_string());
        }
        assert_eq!(request.send().unwrap().status(), 201, "PUT {key}");
    };
    put(&a.url, "short", Some(1500));
    put(&a.url, "kept", Some(1500));
    put(&a.url, "forever", None);
    // Node B sees the deadline A set: the TTL left, in the header.
    eventually("B sees the TTL", Duration::from_secs(5), || {
        let r = http
            .get(format!("{}/v1/key/short", b.url))
            .send()
            .map_err(|e| e.to_string())?;
        let ttl = r
            .headers()
            .get("kvs-ttl-ms")
            .ok_or(format!("no TTL on B: {}", r.status()))?;
        let left: u64 = ttl.to_str().unwrap().parse().unwrap();
        (left <= 1500)
            .then_some(())
            .ok_or(format!("{left} ms left"))
    });
    // PERSIST on B (a Redis client) makes `kept` permanent for everyone.
    let resp_b = crate::resp::port(&b, "resp");
    let persisted = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &resp_b, "PERSIST", "kept"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&persisted.stdout).trim(), "1");
    let resp_a = crate::resp::port(&a, "resp");
    let pttl = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &resp_a, "PTTL", "short"])
        .output()
        .unwrap();
    let pttl: i64 = String::from_utf8_lossy(&pttl.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!((1..=1500).contains(&pttl), "PTTL on A: {pttl}");
    std::thread::sleep(Duration::from_millis(1600));
    for node in [&a, &b] {
        assert_eq!(
            get(&http, &node.url, "short"),
            None,
            "{} after the deadline",
            node.url
        );
        assert_eq!(get(&http, &node.url, "kept").as_deref(), Some("v"));
        assert_eq!(get(&http, &node.url, "forever").as_deref(), Some("v"));
    }
    // A node started now replays the snapshot: `short` is still in etcd or already gone,
    // either way never returned.
    let c = Kvs::start(&config("c"), &plugins, &[]);
    assert_eq!(get(&http, &c.url, "short"), None);
    assert_eq!(get(&http, &c.url, "kept").as_deref(), Some("v"));
    // etcd deletes the key once its lease runs out (whole seconds, rounded up).
    eventually(
        "the lease ran out",
        Duration::from_secs(10),
        || match keys_in_etcd(&etcd, prefix) {
            2 => Ok(()),
            n => Err(format!("{n} keys in etcd")),
        },
    );
    for node in [&a, &b, &c] {
        eventually(
            "the delete reached every node",
            Duration::from_secs(5),
            || match keys_on(&http, &node.admin()) {
                2 => Ok(()),
                n => Err(format!("{n} keys on {}", node.url)),
            },
        );
    }
    c.stop();
    b.stop();
    a.stop();
}

mod transactions;
