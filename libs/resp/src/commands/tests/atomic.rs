//! The atomic updates and TTL reads: their replies and errors as Redis gives them, over
//! a backend that evaluates updates with the contract's own rule.

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn conn() -> Conn {
    Conn::with(Memory {
        now: NOW,
        ..Memory::default()
    })
}

#[test]
fn set_with_conditions_and_get() {
    let mut c = conn();
    assert_eq!(c.run("SET k v1 NX"), "+OK\r\n");
    assert_eq!(c.run("SET k v2 NX"), "$-1\r\n");
    assert_eq!(c.run("SET k v3 XX"), "+OK\r\n");
    assert_eq!(c.run("SET other v XX"), "$-1\r\n");
    assert_eq!(c.run("SET k v4 GET"), "$2\r\nv3\r\n");
    assert_eq!(c.run("SET fresh v NX GET"), "$-1\r\n");
    assert_eq!(c.value("fresh"), Some(&b"v"[..]));
    assert_eq!(conn().resp3().run("SET k v XX"), "_\r\n");
    for bad in [
        "SET k v NX XX",
        "SET k v EX",
        "SET k v EX 10 PX 10",
        "SET k v KEEPTTL EX 1",
        "SET k v BOGUS",
    ] {
        assert_eq!(c.run(bad), "-ERR syntax error\r\n", "{bad}");
    }
    assert_eq!(
        c.run("SET k v EX 0"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        c.run("SET k v PX x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(c.value("k"), Some(&b"v4"[..]), "refused SETs wrote nothing");
    // Redis 7.0 lets an option repeat (the last time option wins).
    assert_eq!(c.run("SET r v NX NX GET GET"), "$-1\r\n");
    assert_eq!(c.run("SET r v EX 5 EX 7"), "+OK\r\n");
    assert_eq!(c.run("TTL r"), ":7\r\n");
    assert_eq!(c.run("SET r v EX 5 PX 7"), "-ERR syntax error\r\n");
}

#[test]
fn times_past_the_end_of_time_are_refused_as_redis_does() {
    let mut c = conn();
    c.set("k", "v");
    assert_eq!(
        c.run("PEXPIRE k 9223372036854775807"),
        "-ERR invalid expire time in 'pexpire' command\r\n"
    );
    assert_eq!(
        c.run("SET k v PX 9223372036854775807"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        c.run("EXPIRE k 9223372036854775807"),
        "-ERR invalid expire time in 'expire' command\r\n"
    );
    assert_eq!(
        c.run("INCRBY k -0"),
        "-ERR value is not an integer or out of range\r\n"
    );
    // EXPIRETIME rounds to the nearest second, as Redis does.
    assert_eq!(c.run(&format!("PEXPIREAT k {}", NOW + 1_700)), ":1\r\n");
    assert_eq!(
        c.run("EXPIRETIME k"),
        format!(":{}\r\n", (NOW + 1_700 + 500) / 1000)
    );
}

#[test]
fn deadlines_and_ttls() {
    let mut c = conn();
    assert_eq!(c.run("TTL k"), ":-2\r\n");
    assert_eq!(c.run("SET k v PX 1500"), "+OK\r\n");
    assert_eq!(c.run("PTTL k"), ":1500\r\n");
    assert_eq!(c.run("TTL k"), ":2\r\n", "rounded as Redis rounds");
    assert_eq!(c.run("PEXPIRETIME k"), format!(":{}\r\n", NOW + 1500));
    assert_eq!(c.run("SET k v2 KEEPTTL"), "+OK\r\n");
    assert_eq!(c.run("PTTL k"), ":1500\r\n");
    assert_eq!(c.run("PERSIST k"), ":1\r\n");
    assert_eq!(c.run("PERSIST k"), ":0\r\n");
    assert_eq!(c.run("TTL k"), ":-1\r\n");
    assert_eq!(c.run("EXPIRE k 10"), ":1\r\n");
    assert_eq!(c.run("TTL k"), ":10\r\n");
    assert_eq!(c.run("EXPIRE missing 10"), ":0\r\n");
    assert_eq!(c.run(&format!("PEXPIREAT k {}", NOW + 20)), ":1\r\n");
    assert_eq!(c.run("PTTL k"), ":20\r\n");
    assert_eq!(c.run("SET k v3"), "+OK\r\n");
    assert_eq!(c.run("TTL k"), ":-1\r\n", "a plain SET clears the deadline");
    assert_eq!(c.run("SETEX s 5 v"), "+OK\r\n");
    assert_eq!(c.run("PSETEX p 5 v"), "+OK\r\n");
    assert_eq!(c.run("PTTL s"), ":5000\r\n");
    assert_eq!(c.run("PTTL p"), ":5\r\n");
    assert_eq!(
        c.run("SETEX s -1 v"),
        "-ERR invalid expire time in 'setex' command\r\n"
    );
    assert_eq!(c.run("GETEX s PERSIST"), "$1\r\nv\r\n");
    assert_eq!(c.run("TTL s"), ":-1\r\n");
    assert_eq!(c.run("GETEX s EX 7"), "$1\r\nv\r\n");
    assert_eq!(c.run("TTL s"), ":7\r\n");
    assert_eq!(c.run("GETEX missing EX 7"), "$-1\r\n");
    // As Redis: the key is looked up before the time is checked.
    assert_eq!(c.run("GETEX missing EX 0"), "$-1\r\n");
    assert_eq!(c.run("GETEX missing PX 99999999999999999"), "$-1\r\n");
    assert_eq!(c.run("GETEX missing EX abc"), "$-1\r\n");
    assert_eq!(
        c.run("GETEX s EX 0"),
        "-ERR invalid expire time in 'getex' command\r\n"
    );
    assert_eq!(c.run("GETEX s EX"), "-ERR syntax error\r\n");
    assert_eq!(c.run("GETEX s EX 10 EX 20"), "$1\r\nv\r\n", "the last wins");
    assert_eq!(c.run("TTL s"), ":20\r\n");
    assert_eq!(c.run("GETEX s EX 10 PERSIST"), "-ERR syntax error\r\n");
    // A time not in the future removes the key.
    assert_eq!(c.run("EXPIRE s 0"), ":1\r\n");
    assert_eq!(c.run("GET s"), "$-1\r\n");
    assert_eq!(c.run("EXISTS s"), ":0\r\n");
    // Past its deadline a key is gone for every read.
    c.backend.now = NOW + 10_000;
    assert_eq!(c.run("GET p"), "$-1\r\n");
    assert_eq!(c.run("TTL p"), ":-2\r\n");
}

/// Redis 7's `EXPIRE` options: `NX`, `XX`, `GT`, `LT`, no deadline counting as later
/// than any time; Redis's errors for what it refuses.
#[test]
fn expire_options() {
    let mut c = conn();
    assert_eq!(c.run("SET k v"), "+OK\r\n");
    assert_eq!(c.run("EXPIRE k 100 XX"), ":0\r\n", "no deadline yet");
    assert_eq!(c.run("EXPIRE k 100 GT"), ":0\r\n", "none is later than any");
    assert_eq!(c.run("TTL k"), ":-1\r\n");
    assert_eq!(c.run("EXPIRE k 100 NX"), ":1\r\n");
    assert_eq!(c.run("EXPIRE k 50 NX"), ":0\r\n");
    assert_eq!(c.run("EXPIRE k 50 GT"), ":0\r\n");
    assert_eq!(c.run("TTL k"), ":100\r\n");
    assert_eq!(c.run("EXPIRE k 200 gt"), ":1\r\n");
    assert_eq!(c.run("PEXPIRE k 300000 LT"), ":0\r\n");
    assert_eq!(c.run("EXPIRE k 150 XX LT"), ":1\r\n");
    assert_eq!(c.run("TTL k"), ":150\r\n");
    assert_eq!(c.run("SET n v"), "+OK\r\n");
    assert_eq!(c.run("EXPIRE n 10 LT"), ":1\r\n", "any is sooner than none");
    assert_eq!(c.run("EXPIRE absent 10 LT"), ":0\r\n");
    assert_eq!(
        c.run("EXPIRE k 10 NX XX"),
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        c.run("EXPIRE k 10 GT LT"),
        "-ERR GT and LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        c.run("EXPIRE k 10 KEEP"),
        "-ERR Unsupported option KEEP\r\n"
    );
    assert_eq!(
        c.run("EXPIRE k ten FOO"),
        "-ERR Unsupported option FOO\r\n",
        "options are read first"
    );
    // A time in the past with LT removes the key, as in Redis.
    assert_eq!(c.run("EXPIRE k -1 LT"), ":1\r\n");
    assert_eq!(c.run("EXISTS k"), ":0\r\n");
}

#[test]
fn counters_and_appends() {
    let mut c = conn();
    assert_eq!(c.run("INCR n"), ":1\r\n");
    assert_eq!(c.run("INCRBY n 41"), ":42\r\n");
    assert_eq!(c.run("DECR n"), ":41\r\n");
    assert_eq!(c.run("DECRBY n 50"), ":-9\r\n");
    assert_eq!(
        c.run("INCRBY n x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        c.run("DECRBY n -9223372036854775808"),
        "-ERR decrement would overflow\r\n"
    );
    c.set("s", "abc");
    assert_eq!(
        c.run("INCR s"),
        "-ERR value is not an integer or out of range\r\n"
    );
    c.set("big", "9223372036854775807");
    assert_eq!(
        c.run("INCR big"),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(c.run("INCRBYFLOAT f 10.5"), "$4\r\n10.5\r\n");
    assert_eq!(c.run("INCRBYFLOAT f 0.1"), "$4\r\n10.6\r\n");
    assert_eq!(
        c.run("INCRBYFLOAT f x"),
        "-ERR value is not a valid float\r\n"
    );
    assert_eq!(
        c.run("INCRBYFLOAT s 1"),
        "-ERR value is not a valid float\r\n"
    );
    assert_eq!(c.run("APPEND s def"), ":6\r\n");
    assert_eq!(c.run("APPEND new x"), ":1\r\n");
    assert_eq!(c.run("GETSET s v"), "$6\r\nabcdef\r\n");
    assert_eq!(c.run("GETDEL s"), "$1\r\nv\r\n");
    assert_eq!(c.run("GETDEL s"), "$-1\r\n");
    assert_eq!(c.run("SETNX s 1"), ":1\r\n");
    assert_eq!(c.run("SETNX s 2"), ":0\r\n");
    // INCR keeps a deadline; GETSET drops it.
    assert_eq!(c.run("SET t 1 EX 100"), "+OK\r\n");
    assert_eq!(c.run("INCR t"), ":2\r\n");
    assert_eq!(c.run("TTL t"), ":100\r\n");
    assert_eq!(c.run("GETSET t 5"), "$1\r\n2\r\n");
    assert_eq!(c.run("TTL t"), ":-1\r\n");
    // A refused key is refused before anything is evaluated.
    c.backend.refused = vec![b"ro"];
    assert_eq!(c.run("INCR ro"), "-NOPERM no role grants a write of ro\r\n");
    assert_eq!(
        c.run("MSETNX a 1 ro 2"),
        "-NOPERM no role grants a write of ro\r\n"
    );
    assert_eq!(c.run("EXISTS a"), ":0\r\n", "refused whole");
}

/// `MSETNX`: every key or none, 1 or 0, as Redis.
#[test]
fn msetnx_sets_all_or_none() {
    let mut c = conn();
    assert_eq!(c.run("MSETNX a 1 b 2"), ":1\r\n");
    assert_eq!(c.run("MGET a b"), "*2\r\n$1\r\n1\r\n$1\r\n2\r\n");
    assert_eq!(c.run("MSETNX c 3 b 9"), ":0\r\n");
    assert_eq!(c.run("MGET b c"), "*2\r\n$1\r\n2\r\n$-1\r\n");
    assert_eq!(
        c.run("MSETNX d 1 d 2"),
        ":1\r\n",
        "one key twice: the last wins"
    );
    assert_eq!(c.run("GET d"), "$1\r\n2\r\n");
    assert_eq!(
        c.run("MSETNX e 1 f"),
        "-ERR wrong number of arguments for 'msetnx' command\r\n"
    );
    assert_eq!(
        c.run("MSETNX e"),
        "-ERR wrong number of arguments for 'msetnx' command\r\n"
    );
    let many: String = (0..1025).map(|i| format!(" k{i} v")).collect();
    assert_eq!(
        c.run(&format!("MSETNX{many}")),
        "-ERR MSETNX takes at most 1024 key-value pairs in kvs (one transaction), not \
         1025; nothing was set\r\n"
    );
    assert_eq!(c.run("EXISTS k0"), ":0\r\n");
}
