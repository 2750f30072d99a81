//! Atomic operations and expiry (plugin-api 1.4) through real clients and a real
//! `kvs` process with the `file` logger: redis-py counters, locks and TTLs on both Redis
//! frontends, REST `If-Match` increments, gRPC conditions and counters; each checked
//! again after a restart replays the log.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::resp::{cli, config, port};
use crate::util::{Kvs, http_client, staged_plugins, write_config};

/// redis-py: 8 clients doing 1,000 `INCR`s each; 20 clients racing for one lock with
/// `SET lock token NX PX 5000`; a key with `PX 300` read before and after its deadline.
/// Prints what a later phase checks.
const RACE: &str = r#"
import sys, threading, time, redis
port = int(sys.argv[1])
def client():
    return redis.Redis(host="127.0.0.1", port=port)
errors = []
def incr():
    try:
        r = client()
        for _ in range(1000):
            r.incr("counter")
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=incr) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
assert client().get("counter") == b"8000", client().get("counter")

won = []
barrier = threading.Barrier(20)
def lock(i):
    r = client()
    barrier.wait()
    if r.set("lock", f"token{i}", nx=True, px=5000):
        won.append(i)
threads = [threading.Thread(target=lock, args=(i,)) for i in range(20)]
for t in threads: t.start()
for t in threads: t.join()
assert len(won) == 1, won
r = client()
assert r.get("lock") == f"token{won[0]}".encode()
assert 0 < r.pttl("lock") <= 5000, r.pttl("lock")

assert r.set("short", "v", px=300)
assert 0 < r.pttl("short") <= 300
assert r.ttl("short") in (0, 1), r.ttl("short")
assert r.ttl("counter") == -1 and r.pttl("nothing") == -2
time.sleep(0.4)
assert r.get("short") is None and r.exists("short") == 0 and r.ttl("short") == -2
# MSETNX (plugin-api 1.6 transactions): of 20 clients racing to set the same three
# keys, each with its own value, exactly one succeeds, and all three keys are its.
won = []
barrier = threading.Barrier(20)
def claim(i):
    r = client()
    barrier.wait()
    if r.msetnx({"m:a": i, "m:b": i, f"m:{i % 2}": i}):
        won.append(i)
threads = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
for t in threads: t.start()
for t in threads: t.join()
assert len(won) == 1, won
w = str(won[0]).encode()
assert r.mget("m:a", "m:b", f"m:{won[0] % 2}") == [w, w, w]
assert r.get(f"m:{1 - won[0] % 2}") is None
# Isolation: once a reader sees one key of an MSETNX, it sees all of them.
done, partial = [], []
def readers():
    r = client()
    while not done:
        for i in range(40):
            if r.get(f"iso:{i}:0") is not None:
                if r.get(f"iso:{i}:99") is None or r.get(f"iso:{i}:50") is None:
                    partial.append(i)
threads = [threading.Thread(target=readers) for _ in range(3)]
for t in threads: t.start()
w = client()
for i in range(40):
    assert w.msetnx({f"iso:{i}:{j}": "v" for j in range(100)})
done.append(True)
for t in threads: t.join()
assert not partial, partial
# EXPIRE's NX | XX | GT | LT (Redis 7), no deadline counting as later than any.
assert r.set("e", "v")
assert r.execute_command("EXPIRE", "e", 100, "XX") == 0
assert r.execute_command("EXPIRE", "e", 100, "GT") == 0
assert r.execute_command("EXPIRE", "e", 100, "NX") == 1
assert r.execute_command("EXPIRE", "e", 200, "GT") == 1
assert r.execute_command("EXPIRE", "e", 300, "LT") == 0
assert r.execute_command("EXPIRE", "e", 150, "XX", "LT") == 1
assert 149 <= r.ttl("e") <= 150, r.ttl("e")
# A key that expires after this script, while kvs is down.
assert r.set("later", "v", px=600)
print("ok")
"#;

/// After the restart: the counter, the lock (still held, with its deadline), the
/// expired keys, and the everyday commands on the replayed state.
const AFTER_RESTART: &str = r#"
import sys, time, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
assert r.get("counter") == b"8000", r.get("counter")
assert r.incr("counter") == 8001
assert r.get("lock") is not None and 0 < r.pttl("lock") <= 5000, r.pttl("lock")
assert r.set("lock", "late", nx=True, px=5000) is None
assert r.get("short") is None and r.pttl("short") == -2
won = r.get("m:a")
assert won is not None and r.get("m:b") == won, (won, r.get("m:b"))
assert r.msetnx({"m:a": "late", "m:new": "x"}) is False and r.get("m:new") is None
# Set to 150 s before the restart, which may take seconds on a loaded machine.
assert 120 <= r.ttl("e") <= 150, r.ttl("e")
assert r.execute_command("EXPIRE", "e", 100, "GT") == 0
time.sleep(max(0, float(sys.argv[2]) - time.time()))
assert r.get("later") is None and r.exists("later") == 0, r.pttl("later")
assert r.setex("cache", 100, "v") and 99 <= r.ttl("cache") <= 100
assert r.incrbyfloat("f", 10.5) == 10.5 and r.incrbyfloat("f", 0.1) == 10.6
assert r.append("s", "ab") == 2 and r.append("s", "c") == 3
assert r.getset("s", "x") == b"abc" and r.getdel("s") == b"x" and r.get("s") is None
assert r.setnx("n", 1) and not r.setnx("n", 2)
assert r.expire("n", 100) and r.persist("n") and r.ttl("n") == -1
assert r.getex("n", px=50) == b"1"
try:
    r.incr("f")
    raise AssertionError("INCR of 10.6 must fail")
except redis.ResponseError as e:
    assert "not an integer" in str(e), e
print("ok")
"#;

pub(crate) fn python(script: &str, args: &[&str]) {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 with redis-py (Debian package python3-redis)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn redis_py_counters_locks_and_ttls_hold_and_survive_a_restart() {
    for frontend in ["resp", "wasm-resp"] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), frontend, "");
        let plugins = staged_plugins();
        let kvs = Kvs::start(&config, &plugins, &[]);
        python(RACE, &[&port(&kvs, frontend)]);
        // "later" expires 600 ms after it was set: stop before that, start after.
        let later_gone_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 0.7;
        kvs.stop();
        let kvs = Kvs::start(&config, &plugins, &[]);
        python(
            AFTER_RESTART,
            &[&port(&kvs, frontend), &later_gone_at.to_string()],
        );
        // The sweep removes expired keys (DBSIZE counts them until then): left are
        // counter, lock, cache, f, e, the three MSETNX keys and the 4,000 of the
        // isolation check; short and later expired before this start, n 50 ms into it,
        // s was deleted.
        let deadline = Instant::now() + Duration::from_secs(5);
        let p = port(&kvs, frontend);
        while cli(&p, &["DBSIZE"]) != "4008" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(cli(&p, &["DBSIZE"]), "4008", "{frontend}: the sweep");
        kvs.stop();
        let kvs = Kvs::start(&config, &plugins, &[]);
        let p = port(&kvs, frontend);
        assert_eq!(cli(&p, &["GET", "later"]), "", "{frontend}");
        assert_eq!(cli(&p, &["GET", "counter"]), "8001", "{frontend}");
        kvs.stop();
    }
}

/// 10 REST clients each increment one counter 30 times: GET it with its ETag, PUT the
/// next value with `If-Match`, and on 412 read again and retry. No increment is lost.
#[test]
fn rest_if_match_increments_lose_no_update_and_survive_a_restart() {
    const CLIENTS: usize = 10;
    const EACH: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let plugins = staged_plugins();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let url = kvs.at("/v1/key/counter");
    let client = http_client();
    let created = client
        .put(&url)
        .header("if-none-match", "*")
        .body("0")
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let again = client
        .put(&url)
        .header("if-none-match", "*")
        .body("0")
        .send()
        .unwrap();
    assert_eq!(again.status(), 412, "If-None-Match: * on an existing key");
    let conflicts = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let client = http_client();
                for _ in 0..EACH {
                    loop {
                        let got = client.get(&url).send().unwrap();
                        assert_eq!(got.status(), 200);
                        let etag = got.headers()["etag"].to_str().unwrap().to_string();
                        let n: u64 = got.text().unwrap().parse().unwrap();
                        let put = client
                            .put(&url)
                            .header("if-match", &etag)
                            .body((n + 1).to_string())
                            .send()
                            .unwrap();
                        match put.status().as_u16() {
                            201 => {
                                assert_ne!(put.headers()["etag"], etag.as_str());
                                break;
                            }
                            412 => {
                                conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            other => panic!("PUT If-Match answered {other}"),
                        }
                    }
                }
            });
        }
    });
    let total = (CLIENTS * EACH).to_string();
    assert_eq!(client.get(&url).send().unwrap().text().unwrap(), total);
    eprintln!(
        "{} increments, {} retried after 412",
        CLIENTS * EACH,
        conflicts.into_inner()
    );
    // A TTL on PUT, the time left on GET; a conditional DELETE.
    let ttl_url = kvs.at("/v1/key/session");
    let put = client
        .put(&ttl_url)
        .header("kvs-ttl-ms", "60000")
        .body("s")
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    let got = client.get(&ttl_url).send().unwrap();
    let left: u64 = got.headers()["kvs-ttl-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59_000..=60_000).contains(&left), "{left}");
    let etag = got.headers()["etag"].clone();
    let not_modified = client
        .get(&ttl_url)
        .header("if-none-match", etag.clone())
        .send()
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let read_if = |tag: &str, url: &str| {
        let r = client.get(url).header("if-match", tag).send().unwrap();
        r.status().as_u16()
    };
    assert_eq!(read_if(etag.to_str().unwrap(), &ttl_url), 200);
    assert_eq!(
        read_if("\"1\"", &ttl_url),
        412,
        "a read If-Match that fails"
    );
    assert_eq!(
        read_if("*", &kvs.at("/v1/key/nowhere")),
        412,
        "If-Match: * on a missing key"
    );
    let plus = client
        .put(&ttl_url)
        .header("kvs-ttl-ms", "+5")
        .body("s")
        .send()
        .unwrap();
    assert_eq!(plus.status(), 400, "kvs-ttl-ms takes digits only");
    let stale = client
        .delete(&ttl_url)
        .header("if-match", "\"1\"")
        .send()
        .unwrap();
    assert_eq!(stale.status(), 412);
    let bad = client
        .put(&ttl_url)
        .header("kvs-ttl-ms", "soon")
        .body("s")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    kvs.stop();
    let kvs = Kvs::start(&config, &plugins, &[]);
    let client = http_client();
    let got = client.get(kvs.at("/v1/key/counter")).send().unwrap();
    assert_eq!(got.text().unwrap(), total, "after a restart");
    let got = client.get(kvs.at("/v1/key/session")).send().unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.headers().contains_key("kvs-ttl-ms"),
        "the deadline was replayed"
    );
    let gone = client
        .delete(kvs.at("/v1/key/session"))
        .header("if-match", etag)
        .send()
        .unwrap();
    assert_eq!(gone.status(), 200, "the ETag survived the restart");
    kvs.stop();
}

/// A logger that cannot append a batch all or none (the WASM logger does not declare
/// `log:atomic_batch`) gets no multi-key transaction: `MSETNX` of two keys is refused
/// saying why and writes nothing, while one key, and `EXPIRE ... NX` (one step), work.
#[test]
fn a_logger_without_atomic_batches_refuses_multi_key_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "resp", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("logger = \"file\"", "logger = \"wasm-log\"")
        + &format!(
            "\n[plugins.wasm-log]\ndata_dir = {:?}\n",
            dir.path().join("wasm")
        );
    std::fs::write(&config, text).unwrap();
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let p = port(&kvs, "resp");
    let refused = cli(&p, &["MSETNX", "a", "1", "b", "2"]);
    assert!(
        refused.contains("cannot append a batch all or none") && refused.contains("wasm-log"),
        "{refused}"
    );
    assert_eq!(cli(&p, &["EXISTS", "a", "b"]), "0");
    // Two steps on one key are two events too: refused likewise.
    let refused = cli(&p, &["MSETNX", "a", "1", "a", "2"]);
    assert!(
        refused.contains("cannot append a batch all or none"),
        "{refused}"
    );
    assert_eq!(cli(&p, &["MSETNX", "a", "1"]), "1");
    assert_eq!(cli(&p, &["EXPIRE", "a", "100", "NX"]), "1");
    assert_eq!(cli(&p, &["EXPIRE", "a", "100", "NX"]), "0");
    kvs.stop();
}
