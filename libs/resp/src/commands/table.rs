//! The command table `COMMAND` answers from, the commands kvs refuses and why, and
//! `COMMAND` itself.

use super::lower;
use crate::reply::{Protocol, Reply};

/// One command kvs serves, as `COMMAND INFO` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Argument count including the name; negative: at least that many.
    pub arity: i64,
    /// Redis command flags.
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: none).
    pub first_key: i64,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i64,
    /// Step between key arguments.
    pub step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

/// Every command kvs answers.
pub const TABLE: &[Spec] = &[
    spec("get", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("set", -3, &["write", "denyoom"], (1, 1, 1)),
    spec("del", -2, &["write"], (1, -1, 1)),
    spec("exists", -2, &["readonly", "fast"], (1, -1, 1)),
    spec("mget", -2, &["readonly", "fast"], (1, -1, 1)),
    spec("mset", -3, &["write", "denyoom"], (1, -1, 2)),
    spec("msetnx", -3, &["write", "denyoom"], (1, -1, 2)),
    spec("strlen", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("setnx", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("setex", 4, &["write", "denyoom"], (1, 1, 1)),
    spec("psetex", 4, &["write", "denyoom"], (1, 1, 1)),
    spec("getset", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("getdel", 2, &["write", "fast"], (1, 1, 1)),
    spec("getex", -2, &["write", "fast"], (1, 1, 1)),
    spec("incr", 2, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("decr", 2, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("incrby", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("decrby", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("incrbyfloat", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("append", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("expire", -3, &["write", "fast"], (1, 1, 1)),
    spec("pexpire", -3, &["write", "fast"], (1, 1, 1)),
    spec("expireat", -3, &["write", "fast"], (1, 1, 1)),
    spec("pexpireat", -3, &["write", "fast"], (1, 1, 1)),
    spec("persist", 2, &["write", "fast"], (1, 1, 1)),
    spec("ttl", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("pttl", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("expiretime", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("pexpiretime", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("dbsize", 1, &["readonly", "fast"], (0, 0, 0)),
    spec("ping", -1, &["fast"], (0, 0, 0)),
    spec("echo", 2, &["fast"], (0, 0, 0)),
    spec("quit", -1, &["fast"], (0, 0, 0)),
    spec("select", 2, &["loading", "stale", "fast"], (0, 0, 0)),
    spec("info", -1, &["loading", "stale"], (0, 0, 0)),
    spec("command", -1, &["loading", "stale"], (0, 0, 0)),
    spec("client", -2, &["loading", "stale"], (0, 0, 0)),
    spec(
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
    ),
    spec(
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
    ),
    spec("config", -2, &["admin", "loading", "stale"], (0, 0, 0)),
];

/// Redis commands kvs knows but does not serve, with Redis's arity (a wrong argument
/// count gets Redis's arity error first, as clients expect), and why.
const UNSUPPORTED: &[(&[(&str, i64)], &str)] = &[
    (
        &[
            ("setrange", 4),
            ("getrange", 4),
            ("lcs", -3),
            ("copy", -3),
            ("rename", 3),
            ("renamenx", 3),
        ],
        "kvs's atomic operations are SET's options, SETNX, SETEX, GETSET, GETDEL, GETEX, \
         INCR/DECR, INCRBYFLOAT, APPEND and the EXPIRE family; this one is not among them",
    ),
    (
        &[
            ("keys", 2),
            ("scan", -2),
            ("randomkey", 1),
            ("flushdb", -1),
            ("flushall", -1),
            ("swapdb", 3),
            ("move", 3),
        ],
        "kvs does not list or drop keys in bulk",
    ),
    (
        &[
            ("multi", 1),
            ("exec", 1),
            ("discard", 1),
            ("watch", -2),
            ("unwatch", 1),
            ("eval", -3),
            ("evalsha", -3),
            ("fcall", -3),
        ],
        "kvs has no transactions or scripts",
    ),
];

/// Looks a command up by name, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    TABLE
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a command may run before the connection's earlier writes are durable: blind
/// writes (`SET`, `MSET`), atomic updates (evaluated by the host's writer in order
/// after them) and commands that touch no key. Everything else reads the store (`DEL`
/// counts what it removed), so a frontend that defers durability must settle its
/// pending writes first to keep a pipeline's order visible.
pub fn runs_ahead_of_writes(name: &[u8]) -> bool {
    [
        "set",
        "mset",
        "ping",
        "echo", // blind writes, no key
        // Atomic updates: the writer evaluates them after the connection's earlier
        // writes, and their replies are made from their outcomes.
        "setnx",
        "setex",
        "psetex",
        "getset",
        "getdel",
        "getex",
        "incr",
        "decr",
        "incrby",
        "decrby",
        "incrbyfloat",
        "append",
        "expire",
        "pexpire",
        "expireat",
        "pexpireat",
        "persist",
        "msetnx",
    ]
    .iter()
    .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// The error for a command kvs does not run: Redis's arity error or why not, for a
/// Redis command it knows but does not serve; Redis's own "unknown command" line
/// otherwise (the name cut at 128 bytes, the arguments quoted until 128 bytes of them).
pub(super) fn unknown(name: &[u8], args: &[&[u8]]) -> String {
    let lname = lower(name);
    for (names, why) in UNSUPPORTED {
        if let Some((_, arity)) = names.iter().find(|(n, _)| *n == lname) {
            if !super::arity_ok(*arity, args.len() + 1) {
                return super::arity_error(name);
            }
            return format!("ERR '{lname}' is not supported by kvs: {why}");
        }
    }
    // Redis prints them with `%s`: each stops at a NUL byte.
    let c_str = |a: &[u8]| a[..a.iter().position(|&b| b == 0).unwrap_or(a.len())].to_vec();
    let mut shown = Vec::new();
    for arg in args {
        if shown.len() >= 128 {
            break;
        }
        let room = 128 - shown.len();
        let arg = c_str(arg);
        shown.push(b'\'');
        shown.extend_from_slice(&arg[..arg.len().min(room)]);
        shown.extend_from_slice(b"' ");
    }
    let name = c_str(name);
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&name[..name.len().min(128)]),
        String::from_utf8_lossy(&shown)
    )
}

/// `COMMAND [COUNT | LIST | INFO name... | DOCS]`.
pub(super) fn command(args: &[&[u8]], protocol: Protocol, out: &mut Vec<u8>) -> Result<(), String> {
    let sub = args.get(1).map(|s| lower(s));
    let mut reply = Reply::new(out, protocol);
    match sub.as_deref() {
        None => {
            reply.array(TABLE.len());
            for spec in TABLE {
                command_info(&mut reply, spec);
            }
        }
        Some("count") => {
            reply.integer(TABLE.len() as i64);
        }
        Some("list") => {
            reply.array(TABLE.len());
            for spec in TABLE {
                reply.bulk(spec.name.as_bytes());
            }
        }
        Some("info") => {
            reply.array(args.len() - 2);
            for name in &args[2..] {
                match lookup(name) {
                    Some(spec) => command_info(&mut reply, spec),
                    None => {
                        reply.null();
                    }
                }
            }
        }
        // redis-cli asks for docs to show hints; kvs has none to give.
        Some("docs") => {
            reply.map(0);
        }
        Some(other) => {
            return Err(format!(
                "ERR unknown subcommand '{other}'. Try COMMAND, COMMAND COUNT, COMMAND LIST, \
                 COMMAND INFO, COMMAND DOCS."
            ));
        }
    }
    Ok(())
}

/// One command's `COMMAND INFO` entry.
fn command_info(reply: &mut Reply<'_>, spec: &Spec) {
    reply
        .array(10)
        .bulk(spec.name.as_bytes())
        .integer(spec.arity)
        .array(spec.flags.len());
    for flag in spec.flags {
        reply.simple(flag);
    }
    reply
        .integer(spec.first_key)
        .integer(spec.last_key)
        .integer(spec.step)
        .array(0) // ACL categories
        .array(0) // tips
        .array(0) // key specs
        .array(0); // subcommands
}
