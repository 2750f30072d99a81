//! kvs against Redis itself: random command sequences (seeded: pipelines of 1-100
//! commands, RESP2 and RESP3, some inline, some ending in a protocol error or `QUIT`)
//! sent to a real `redis-server` and to kvs's `resp` and `wasm-resp` frontends, the
//! replies compared byte for byte. Where kvs answers differently on purpose, [`DIALECT`]
//! says so and why: that list is kvs's Redis dialect, and everything it does not cover
//! must be answered exactly as Redis answers it.
//!
//! A failure names its seed. Replay it (after `cargo xtask build`) with
//! `KVS_REDIS_DIFF_SEEDS=<seed> cargo test -p kvs-host --test tests redis_diff`;
//! `KVS_REDIS_DIFF_PIPELINES` sets how many pipelines a seed runs (default 150; a run
//! also stops after 7 s, so the test stays near 30 s on a slow machine).

mod generate;
mod wire;

use std::time::{Duration, Instant};

use generate::{Bytes, Cmd, Rng, UNSERVED};
use wire::{Conn, RedisServer};

use crate::resp::{cli, config, port};
use crate::util::{Kvs, staged_plugins};

/// What kvs answers to every command naming an empty key (`kvs_resp::commands::EMPTY_KEY`).
const EMPTY_KEY: &str =
    "ERR kvs does not accept empty keys: the empty key is reserved; use a key of at least one byte";

/// How kvs's reply is checked where it differs from Redis on purpose.
enum Answer {
    /// Sent to both; the replies must be of the same RESP type (a Redis error must be
    /// matched exactly): the content describes the server, not the data.
    SameType,
    /// Not sent to Redis, which would change its data (and the rest of the run would
    /// compare different stores); kvs must answer an error starting with this.
    KvsRefuses(&'static str),
    /// Sent to both; kvs answers this, whatever Redis does.
    Kvs(&'static str),
}

/// One intended difference.
struct Intended {
    what: &'static str,
    applies: fn(&Cmd) -> bool,
    answer: Answer,
    #[allow(dead_code)] // read by people: the reason is the documentation
    why: &'static str,
}

/// kvs's Redis dialect (Redis 7.0's replies otherwise), first match wins. The README's
/// "Redis dialect" paragraph says the same in prose.
const DIALECT: &[Intended] = &[
    Intended {
        what: "a command naming an empty key (GET, SET, INCR, EXPIRE, MSET, DEL, ...)",
        applies: names_an_empty_key,
        answer: Answer::KvsRefuses(EMPTY_KEY),
        why: "kvs reserves the empty key (the host checks credentials with it, a shared \
              log's marker lives under it); the whole command is refused, so a multi-key \
              command never applies part of itself",
    },
    Intended {
        what: "TTL and PTTL of a key with a deadline",
        applies: |c| ["ttl", "pttl"].contains(&c.name().as_str()) && c.args.len() == 2,
        answer: Answer::SameType,
        why: "the time left depends on when each server read its clock",
    },
    Intended {
        what: "Redis commands kvs does not serve (SETRANGE, GETRANGE, KEYS, MULTI, ...), \
               with a right argument count",
        applies: |c| {
            UNSERVED.iter().any(|(name, rest)| {
                c.name() == name.to_ascii_lowercase() && c.args.len() == rest.len() + 1
            })
        },
        answer: Answer::KvsRefuses("ERR '"),
        why: "no range commands, no bulk listing, no \
              transactions or scripts: refused saying why (a wrong argument count gets \
              Redis's arity error)",
    },
    Intended {
        what: "SELECT of a database other than 0",
        applies: |c| {
            c.name() == "select"
                && c.args.len() == 2
                && (1..=16).any(|n| c.args[1] == n.to_string().as_bytes())
        },
        answer: Answer::KvsRefuses("ERR DB index is out of range"),
        why: "kvs has one database",
    },
    Intended {
        what: "CONFIG subcommands other than GET",
        applies: |c| {
            c.name() == "config" && c.args.len() > 1 && !c.args[1].eq_ignore_ascii_case(b"get")
        },
        answer: Answer::KvsRefuses("ERR CONFIG SET is not supported by kvs"),
        why: "kvs is configured in config.toml",
    },
    Intended {
        what: "CONFIG GET of a parameter other than save and appendonly",
        applies: |c| {
            c.name() == "config"
                && c.args.len() == 3
                && !["save", "appendonly"]
                    .iter()
                    .any(|p| c.args[2].eq_ignore_ascii_case(p.as_bytes()))
        },
        answer: Answer::SameType,
        why: "kvs answers only the settings tools ask about (redis-benchmark reads save and \
              appendonly), as what kvs does: no snapshots, every write logged",
    },
    Intended {
        what: "CLIENT SETINFO",
        applies: |c| {
            c.name() == "client" && c.args.len() == 4 && c.args[1].eq_ignore_ascii_case(b"setinfo")
        },
        answer: Answer::Kvs("+OK\r\n"),
        why: "clients for Redis 7.2 send it on connecting; kvs accepts and ignores it where \
              Redis 7.0 does not know it",
    },
    Intended {
        what: "HELLO, INFO, CLIENT ID, CLIENT INFO, COMMAND COUNT",
        applies: |c| {
            let sub = |s: &[u8]| c.args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(s));
            matches!(c.name().as_str(), "hello" | "info")
                || (c.name() == "client" && (sub(b"id") || sub(b"info")))
                || (c.name() == "command" && sub(b"count"))
        },
        answer: Answer::SameType,
        why: "they describe the server (kvs, its version, its connection ids, its command \
              table), not the data",
    },
];

/// Whether `c` is a key command with the right argument count and an empty key.
fn names_an_empty_key(c: &Cmd) -> bool {
    let (a, n) = (&c.args, c.args.len());
    let keys: Vec<&Vec<u8>> = match c.name().as_str() {
        "get" | "strlen" | "getdel" | "incr" | "decr" | "persist" | "ttl" | "pttl" if n == 2 => {
            vec![&a[1]]
        }
        "setnx" | "getset" | "incrby" | "decrby" | "incrbyfloat" | "append" if n == 3 => {
            vec![&a[1]]
        }
        "setex" if n == 4 => vec![&a[1]],
        "set" | "expire" | "pexpireat" if n >= 3 => vec![&a[1]],
        "mset" | "msetnx" if n >= 3 && n % 2 == 1 => a[1..].iter().step_by(2).collect(),
        "del" | "exists" | "mget" if n >= 2 => a[1..].iter().collect(),
        _ => vec![],
    };
    keys.iter().any(|k| k.is_empty())
}

fn intended(c: &Cmd) -> Option<&'static Intended> {
    DIALECT.iter().find(|i| (i.applies)(c))
}

/// Both ends of one run: a connection to Redis and one to kvs.
struct Pair {
    redis_port: u16,
    kvs_port: u16,
    redis: Conn,
    kvs: Conn,
}

impl Pair {
    fn open(redis_port: u16, kvs_port: u16) -> Pair {
        Pair {
            redis_port,
            kvs_port,
            redis: Conn::open(redis_port).unwrap(),
            kvs: Conn::open(kvs_port).unwrap(),
        }
    }

    fn reconnect(&mut self) {
        *self = Pair::open(self.redis_port, self.kvs_port);
    }
}

/// What one run compared.
#[derive(Debug, Default)]
struct Ran {
    pipelines: usize,
    /// Replies compared byte for byte.
    exact: usize,
    /// Replies checked by a dialect rule instead.
    dialect: usize,
    inline: usize,
    /// Pipelines that ended their connection (protocol error or QUIT).
    endings: usize,
}

/// Runs one seed's pipelines; the differences of the first pipeline that has any.
fn run(seed: u64, pipelines: usize, pair: &mut Pair, deadline: Instant) -> Result<Ran, String> {
    let mut rng = Rng::new(seed);
    let mut ran = Ran::default();
    for index in 0..pipelines {
        if Instant::now() > deadline {
            return Ok(ran);
        }
        let p = generate::pipeline(&mut rng);
        ran.pipelines += 1;
        ran.endings += p.ending.is_some() as usize;
        for c in &p.cmds {
            ran.inline += c.inline as usize;
            match intended(c) {
                Some(_) => ran.dialect += 1,
                None => ran.exact += 1,
            }
        }
        let (mut to_kvs, mut to_redis) = (Vec::new(), Vec::new());
        for c in &p.cmds {
            to_kvs.extend(c.render());
            if !matches!(intended(c).map(|i| &i.answer), Some(Answer::KvsRefuses(_))) {
                to_redis.extend(c.render());
            }
        }
        if let Some(ending) = &p.ending {
            to_kvs.extend_from_slice(ending);
            to_redis.extend_from_slice(ending);
        }
        pair.kvs.send(&to_kvs);
        pair.redis.send(&to_redis);
        let sent_to_redis = p
            .cmds
            .iter()
            .filter(|c| !matches!(intended(c).map(|i| &i.answer), Some(Answer::KvsRefuses(_))))
            .count();
        let kvs = pair.kvs.replies(p.cmds.len());
        let redis = pair.redis.replies(sent_to_redis);
        let mut diffs = compare(&p.cmds, &kvs, &redis);
        if let Some(ending) = &p.ending {
            let (k, k_closed) = pair.kvs.rest_until_close();
            let (r, r_closed) = pair.redis.rest_until_close();
            if (&k, k_closed) != (&r, r_closed) {
                diffs.push(format!(
                    "ending {:?}: Redis {:?} (closed: {r_closed}), kvs {:?} (closed: {k_closed})",
                    Bytes(ending),
                    Bytes(&r),
                    Bytes(&k)
                ));
            }
            pair.reconnect();
        }
        if !diffs.is_empty() {
            return Err(format!(
                "pipeline {index} of {} commands:\n  {}",
                p.cmds.len(),
                diffs.join("\n  ")
            ));
        }
    }
    Ok(ran)
}

/// Each command's reply from kvs against Redis's (or the dialect's rule for it).
fn compare(cmds: &[Cmd], kvs: &[Vec<u8>], redis: &[Vec<u8>]) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut redis = redis.iter();
    for (i, c) in cmds.iter().enumerate() {
        let k = kvs.get(i).map(Vec::as_slice).unwrap_or(b"(no reply)");
        let rule = intended(c);
        let r = match rule.map(|i| &i.answer) {
            Some(Answer::KvsRefuses(_)) => None,
            _ => Some(redis.next().map(Vec::as_slice).unwrap_or(b"(no reply)")),
        };
        let ok = match (rule.map(|i| &i.answer), r) {
            (Some(Answer::KvsRefuses(prefix)), _) => {
                k.starts_with(b"-") && k[1..].starts_with(prefix.as_bytes())
            }
            (Some(Answer::Kvs(want)), _) => k == want.as_bytes(),
            (Some(Answer::SameType), Some(r)) if !r.starts_with(b"-") => k.first() == r.first(),
            (_, Some(r)) => k == r,
            (_, None) => unreachable!("only KvsRefuses is not sent to Redis"),
        };
        if !ok {
            let rule = rule.map_or(String::new(), |i| format!(" (dialect: {})", i.what));
            diffs.push(format!(
                "command {i}{} {}{rule}:\n    Redis {:?}\n    kvs   {:?}",
                if c.inline { " (inline)" } else { "" },
                c.show(),
                Bytes(r.unwrap_or(b"(not sent)")),
                Bytes(k)
            ));
        }
    }
    diffs
}

fn seeds() -> Vec<u64> {
    match std::env::var("KVS_REDIS_DIFF_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("KVS_REDIS_DIFF_SEEDS: comma-separated integers")
            })
            .collect(),
        Err(_) => vec![40, 4040],
    }
}

#[test]
fn kvs_answers_as_redis_does_except_where_its_dialect_says() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let pipelines = std::env::var("KVS_REDIS_DIFF_PIPELINES").map_or(150, |n| {
        n.parse().expect("KVS_REDIS_DIFF_PIPELINES: an integer")
    });
    let plugins = staged_plugins();
    let mut failures = Vec::new();
    for frontend in ["resp", "wasm-resp"] {
        for seed in seeds() {
            redis.flush();
            let kvs_dir = tempfile::tempdir().unwrap();
            let kvs = Kvs::start(&config(kvs_dir.path(), frontend, ""), &plugins, &[]);
            let kvs_port: u16 = port(&kvs, frontend).parse().unwrap();
            let mut pair = Pair::open(redis.port, kvs_port);
            let deadline = Instant::now() + Duration::from_secs(7);
            match run(seed, pipelines, &mut pair, deadline) {
                Ok(ran) => eprintln!("redis_diff: {frontend} seed {seed}, no unexplained difference: {ran:?}"),
                Err(report) => failures.push(format!(
                    "{frontend}, seed {seed} (replay: KVS_REDIS_DIFF_SEEDS={seed} cargo test -p kvs-host --test tests redis_diff)\n{report}"
                )),
            }
            drop(pair);
            kvs.stop();
        }
    }
    assert!(
        failures.is_empty(),
        "kvs answered differently from Redis {} where its dialect (DIALECT in host/tests/redis_diff.rs) does not say so:\n\n{}",
        RedisServer::version(),
        failures.join("\n\n")
    );
}

/// On both frontends, through redis-cli: `setup` writes, `command` names an empty key
/// among others and is refused with the dialect's error, and `check` shows nothing
/// changed.
fn refused_whole(setup: &[&[&str]], command: &[&str], check: &[(&[&str], &str)]) {
    for frontend in ["resp", "wasm-resp"] {
        let dir = tempfile::tempdir().unwrap();
        let kvs = Kvs::start(&config(dir.path(), frontend, ""), &staged_plugins(), &[]);
        let p = port(&kvs, frontend);
        for args in setup {
            cli(&p, args);
        }
        assert_eq!(cli(&p, command), EMPTY_KEY, "{frontend} {command:?}");
        for (args, want) in check {
            assert_eq!(
                cli(&p, args),
                *want,
                "{frontend} after {command:?}: {args:?}"
            );
        }
        kvs.stop();
    }
}

#[test]
fn mset_with_an_empty_key_writes_nothing() {
    refused_whole(
        &[],
        &["MSET", "ma", "1", "", "2", "mb", "3"],
        &[(&["EXISTS", "ma", "mb"], "0"), (&["DBSIZE"], "0")],
    );
}

#[test]
fn del_with_an_empty_key_deletes_nothing() {
    refused_whole(
        &[&["SET", "da", "1"]],
        &["DEL", "da", ""],
        &[(&["GET", "da"], "1")],
    );
}

#[test]
fn mget_and_exists_with_an_empty_key_are_refused() {
    refused_whole(
        &[&["SET", "ga", "1"]],
        &["MGET", "ga", ""],
        &[(&["MGET", "ga"], "1")],
    );
    refused_whole(
        &[&["SET", "ea", "1"]],
        &["EXISTS", "ea", "", "ea"],
        &[(&["EXISTS", "ea", "ea"], "2")],
    );
}
