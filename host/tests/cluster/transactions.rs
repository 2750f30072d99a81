//! Transactions (plugin-api 1.6) over the etcd logger: each is one etcd transaction
//! comparing every one of its keys, so they are all or none across nodes as well; a
//! group-commit batch over one etcd transaction's limits is appended in parts between
//! requests, and a single request over them is refused whole.

use std::time::Duration;

use kvs_testkit::etcd::EtcdCluster;

use super::eventually;
use crate::resp::{cli, port};
use crate::util::{Kvs, http_client, staged_plugins};

#[test]
fn transactions_are_all_or_none_across_nodes_and_batches_split_only_between_requests() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let plugins = staged_plugins();
    // Node a allows etcd transactions of 8 operations only (two are kvs's own), so its
    // group commits are over the limit at once.
    let node = |name: &str, etcd_extra: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "logger = \"etcd\"\nfrontends = [\"rest\", \"resp\"]\nshutdown_timeout_ms = 5000\n\
                 [cluster]\nreads = \"linearizable\"\n\
                 [plugins.etcd]\nendpoints = {:?}\nprefix = \"tx/\"\ntimeout_ms = 3000\n{etcd_extra}\n\
                 [plugins.rest]\nlisten = \"127.0.0.1:0\"\n\
                 [plugins.resp]\nlisten = \"127.0.0.1:0\"\n",
                etcd.endpoints()
            ),
        )
        .unwrap();
        Kvs::start(&path, &plugins, &[])
    };
    let nodes = [node("a", "max_txn_ops = 8"), node("b", ""), node("c", "")];
    let ports: Vec<String> = nodes.iter().map(|n| port(n, "resp")).collect();

    // Three groups of six clients, two on each node, race MSETNX over the pairs
    // (p0, p1), (p1, p2), (p2, p0): every key is wanted by two groups, so exactly one
    // client of all can win, and only if etcd compared both of its keys.
    let racers: Vec<_> = (0..18)
        .map(|i| {
            let port = ports[i % 3].clone();
            std::thread::spawn(move || {
                let group = i / 6;
                let (k1, k2) = (format!("p{group}"), format!("p{}", (group + 1) % 3));
                let me = format!("client{i}");
                (i, cli(&port, &["MSETNX", &k1, &me, &k2, &me]))
            })
        })
        .collect();
    let replies: Vec<(usize, String)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<usize> = replies
        .iter()
        .filter(|(_, reply)| reply == "1")
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one MSETNX wins: {replies:?}");
    assert!(
        replies.iter().all(|(_, r)| r == "1" || r == "0"),
        "{replies:?}"
    );
    let winner = winners[0];
    let group = winner / 6;
    let mut expected = vec![String::new(); 3];
    expected[group] = format!("client{winner}");
    expected[(group + 1) % 3] = format!("client{winner}");
    for port in &ports {
        // Linearizable reads: every node has the winner's keys, and not the third.
        let mut got: Vec<String> = cli(port, &["MGET", "p0", "p1", "p2"])
            .lines()
            .map(str::to_string)
            .collect();
        got.resize(3, String::new()); // a missing last key's empty line was trimmed
        assert_eq!(got, expected, "on port {port}");
    }
    // One etcd transaction: both keys at one revision (their ETag), on every node.
    let http = http_client();
    for n in &nodes {
        let etags: Vec<String> = [group, (group + 1) % 3]
            .iter()
            .map(|k| {
                let r = http.get(format!("{}/v1/key/p{k}", n.url)).send().unwrap();
                assert_eq!(r.status(), 200);
                r.headers()["etag"].to_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(etags[0], etags[1], "one revision for the MSETNX's keys");
    }

    // EXPIRE's options (a transaction of one step with a condition on the deadline),
    // decided in log order, seen by every node.
    let b = &ports[1];
    assert_eq!(cli(b, &["SET", "e", "v"]), "OK");
    assert_eq!(cli(b, &["EXPIRE", "e", "100", "NX"]), "1");
    assert_eq!(cli(&ports[0], &["EXPIRE", "e", "200", "NX"]), "0");
    assert_eq!(cli(&ports[2], &["EXPIRE", "e", "50", "GT"]), "0");
    assert_eq!(cli(&ports[0], &["EXPIRE", "e", "300", "GT"]), "1");
    for port in &ports {
        let ttl: u64 = cli(port, &["TTL", "e"]).parse().unwrap();
        assert!((290..=300).contains(&ttl), "TTL {ttl} on port {port}");
    }

    // Over node a's limit of 6 keys per etcd transaction: an MSETNX of 6 keys is made,
    // one of 7 refused whole, saying why, and nothing of it reaches any node. An MSET
    // of 7 (a put per key, as Redis's) is appended in parts between its puts.
    let a = &ports[0];
    let pairs = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .flat_map(|i| [format!("{prefix}{i}"), "v".into()])
            .collect()
    };
    let command =
        |name: &str, pairs: &[String]| -> Vec<String> { [&[name.to_string()][..], pairs].concat() };
    let ask = |port: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(port, &args)
    };
    assert_eq!(ask(a, command("MSETNX", &pairs("m", 6))), "1");
    let refused = ask(a, command("MSETNX", &pairs("n", 7)));
    assert!(
        refused.contains("does not fit one etcd transaction"),
        "MSETNX of 7 keys: {refused}"
    );
    assert_eq!(ask(a, command("MSET", &pairs("s", 7))), "OK");
    for port in &ports {
        assert_eq!(
            cli(port, &["EXISTS", "m0", "m5", "n0", "n6", "s0", "s6"]),
            "4",
            "port {port}"
        );
    }

    // Isolation on every node: readers on a and c never see part of an MSETNX of 100
    // keys made on b (delivery applies one etcd revision's events together).
    crate::atomic::python(ISOLATION, &[&ports[1], &ports[0], &ports[2]]);

    // 600 SETs pipelined on one connection: group commits of up to 64 requests, each
    // over node a's limit, appended in parts between requests; every one acknowledged
    // and on every node.
    let commands: String = (0..600)
        .map(|i| {
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\nq{i}\r\n${}\r\n{i}\r\n",
                format!("q{i}").len(),
                i.to_string().len()
            )
        })
        .collect();
    let mut pipe = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", a, "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    pipe.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    let out = pipe.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("errors: 0, replies: 600"), "{said}");
    let keys: Vec<String> = (0..600).map(|i| format!("q{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let want: Vec<String> = (0..600).map(|i| i.to_string()).collect();
    for port in &ports {
        eventually("every SET on every node", Duration::from_secs(5), || {
            let got: Vec<String> = cli(port, &[&["MGET"][..], &keys].concat())
                .lines()
                .map(str::to_string)
                .collect();
            (got == want).then_some(()).ok_or(format!(
                "port {port}: {} of 600",
                got.iter().filter(|v| !v.is_empty()).count()
            ))
        });
    }
    for n in nodes {
        n.stop();
    }
}

/// argv: the writing node's RESP port, then two readers' ports.
const ISOLATION: &str = r#"
import sys, threading, redis
w = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
# The round being written; readers look at its first key, then (in the same packet,
# microseconds later) at its last and middle keys.
current, done, partial = [0], [], []
def reader(port):
    r = redis.Redis(host="127.0.0.1", port=int(port))
    while not done:
        i = current[0]
        p = r.pipeline(transaction=False)
        for j in (0, 119, 60):
            p.get(f"iso:{i}:{j}")
        first, last, middle = p.execute()
        if first is not None and (last is None or middle is None):
            partial.append((port, i))
threads = [threading.Thread(target=reader, args=(p,)) for p in sys.argv[2:] for _ in range(2)]
for t in threads: t.start()
for i in range(40):
    current[0] = i
    assert w.msetnx({f"iso:{i}:{j}": "v" for j in range(120)})
done.append(True)
for t in threads: t.join()
assert not partial, partial
print("ok")
"#;
