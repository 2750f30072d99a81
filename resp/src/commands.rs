//! What kvs answers over RESP: the command table (for `COMMAND`) and [`execute`], which
//! runs one command against a [`Backend`] — the store as each frontend reaches it.
//!
//! Both Redis frontends run every command through here, so they answer alike; they
//! differ only in their `Backend` (the native frontend defers durable writes itself, the
//! WASM host does it for its guest) and in what they can say in `INFO`.

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
    spec("strlen", 2, &["readonly", "fast"], (1, 1, 1)),
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

/// Redis commands kvs knows but does not serve, and why.
const UNSUPPORTED: &[(&[&str], &str)] = &[
    (
        &[
            "incr",
            "incrby",
            "incrbyfloat",
            "decr",
            "decrby",
            "append",
            "getdel",
            "getset",
            "setnx",
            "setrange",
            "getrange",
            "msetnx",
            "lcs",
            "copy",
            "rename",
            "renamenx",
        ],
        "the store offers no atomic read-modify-write",
    ),
    (
        &[
            "expire",
            "pexpire",
            "expireat",
            "pexpireat",
            "ttl",
            "pttl",
            "persist",
            "setex",
            "psetex",
            "getex",
            "expiretime",
            "pexpiretime",
        ],
        "kvs keys do not expire",
    ),
    (
        &[
            "keys",
            "scan",
            "randomkey",
            "flushdb",
            "flushall",
            "swapdb",
            "move",
        ],
        "kvs does not list or drop keys in bulk",
    ),
    (
        &[
            "multi", "exec", "discard", "watch", "unwatch", "eval", "evalsha", "fcall",
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

/// Whether a command may run before the connection's earlier writes are durable. Only
/// blind writes (`SET`, `MSET`) and commands that touch no key may; everything else
/// reads the store (`DEL` counts what it removed), so a frontend that defers durability
/// must settle its pending writes first to keep a pipeline's order visible.
pub fn runs_ahead_of_writes(name: &[u8]) -> bool {
    ["set", "mset", "ping", "echo"]
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Why a store call failed, as far as a Redis client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No or bad credentials: `NOAUTH`.
    Unauthenticated,
    /// Credentials fine, not allowed: `NOPERM`.
    PermissionDenied,
    /// Anything else: `ERR` and the message.
    Other,
}

/// A failed store call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// Which error prefix the client gets.
    pub kind: ErrorKind,
    /// Why, in one line.
    pub message: String,
}

impl StoreError {
    /// The reply line: `NOAUTH ...`, `NOPERM ...` or `ERR ...`.
    pub fn reply(&self) -> String {
        let code = match self.kind {
            ErrorKind::Unauthenticated => "NOAUTH",
            ErrorKind::PermissionDenied => "NOPERM",
            ErrorKind::Other => "ERR",
        };
        format!("{code} {}", self.message)
    }
}

/// One client connection's state.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The id `CLIENT ID` answers.
    pub id: u64,
    /// RESP2 or RESP3 (`HELLO`).
    pub protocol: Protocol,
    /// `CLIENT SETNAME`.
    pub name: Option<Vec<u8>>,
    /// The token the client presented with `AUTH` or `HELLO ... AUTH`, for a backend that
    /// carries credentials to the host.
    pub token: Option<String>,
    /// Commands this connection has run.
    pub commands: u64,
    /// Largest reply one command may build, if bounded: a longer one (an `MGET` of many
    /// large values) is answered with an error instead, so one command cannot make the
    /// server hold an unbounded reply for a client that may never read it.
    pub max_reply_bytes: Option<usize>,
}

/// What `INFO` and `HELLO` report.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// kvs's version.
    pub kvs_version: String,
    /// Which frontend answers, e.g. `resp` or `wasm-resp`.
    pub frontend: String,
    /// The listening port.
    pub tcp_port: u16,
    /// Seconds since the frontend started.
    pub uptime_secs: u64,
    /// Connections open now.
    pub connected_clients: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// Commands run since start.
    pub total_commands: u64,
    /// Keys in the store, if the backend can tell.
    pub keys: Option<u64>,
    /// Bytes of keys and values, if the backend can tell.
    pub data_bytes: Option<u64>,
}

/// The Redis version kvs reports, for clients that gate features on it: the command
/// set kvs answers is a subset of 7.0's.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// The store, as a Redis frontend reaches it.
pub trait Backend {
    /// The value under `key`, including this connection's earlier writes.
    fn get(&mut self, session: &Session, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`. `Ok` once the host accepted it; durability is the
    /// backend's to ensure before the reply is sent.
    fn put(&mut self, session: &Session, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`, as for `put`.
    fn delete(&mut self, session: &Session, key: &[u8]) -> Result<(), StoreError>;
    /// Whether a `put` of `value` (`Some`) or a `delete` (`None`) under `key` would be
    /// accepted, as far as the backend can tell without queueing it. A command that
    /// writes several keys (`MSET`, `DEL`) asks for every one before it queues any, so
    /// what this catches refuses the whole command and writes nothing.
    fn check_write(
        &mut self,
        session: &Session,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// What `INFO` reports.
    fn info(&self) -> ServerInfo;
    /// `AUTH` presented `token`: verify it, and accept it for the session (set
    /// `session.token`) or say why not — `Unauthenticated` for a token the host refuses
    /// (answered `WRONGPASS`); a refused token leaves the session's credentials as they
    /// were.
    fn authenticate(&mut self, session: &mut Session, token: &[u8]) -> Result<(), StoreError>;
    /// Whether the caller may see the server's state (`INFO`, `DBSIZE`, `CLIENT`):
    /// `Unauthenticated` (answered `NOAUTH`) where the host requires credentials and the
    /// connection has presented none that it accepts. Default: anyone may.
    fn check_authenticated(&mut self, session: &Session) -> Result<(), StoreError> {
        let _ = session;
        Ok(())
    }
}

/// The store's size checks on a write, for a [`Backend::check_write`] that knows the
/// host's limits: the same refusals (and messages) the host would give.
pub fn check_sizes(
    key: &[u8],
    value: Option<&[u8]>,
    max_key_bytes: u64,
    max_value_bytes: u64,
) -> Result<(), StoreError> {
    let refuse = |message: String| {
        Err(StoreError {
            kind: ErrorKind::Other,
            message,
        })
    };
    if key.is_empty() {
        return refuse("key is empty".into());
    }
    if key.len() as u64 > max_key_bytes {
        return refuse(format!(
            "key is {} bytes; the limit is {max_key_bytes} (limits.max_key_bytes)",
            key.len()
        ));
    }
    if let Some(value) = value
        && value.len() as u64 > max_value_bytes
    {
        return refuse(format!(
            "value is {} bytes; the limit is {max_value_bytes} (limits.max_value_bytes)",
            value.len()
        ));
    }
    Ok(())
}

/// Whether the connection stays open after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Send what was written, then close (`QUIT`).
    Close,
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

fn arity_error(name: &[u8]) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        lower(name)
    )
}

/// Runs one command (`args[0]` is its name) and appends its reply to `out`.
pub fn execute(
    args: &[&[u8]],
    session: &mut Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Flow {
    let Some(&name) = args.first() else {
        return Flow::Continue;
    };
    session.commands += 1;
    let result = match lookup(name) {
        Some(spec) if !arity_ok(spec.arity, args.len()) => Err(arity_error(name)),
        Some(spec) => run(spec.name, args, session, backend, out),
        None => Err(unknown(name, &args[1..])),
    };
    match result {
        Ok(flow) => flow,
        Err(message) => {
            Reply::new(out, session.protocol).error(&message);
            Flow::Continue
        }
    }
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    if arity >= 0 {
        argc as i64 == arity
    } else {
        argc as i64 >= -arity
    }
}

fn unknown(name: &[u8], args: &[&[u8]]) -> String {
    let lname = lower(name);
    for (names, why) in UNSUPPORTED {
        if names.contains(&lname.as_str()) {
            return format!("ERR '{lname}' is not supported by kvs: {why}");
        }
    }
    let shown: Vec<String> = args
        .iter()
        .take(4)
        .map(|a| format!("'{}'", String::from_utf8_lossy(&a[..a.len().min(64)])))
        .collect();
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&name[..name.len().min(64)]),
        shown.join(" ")
    )
}

fn store(e: StoreError) -> String {
    e.reply()
}

/// What Redis answers a refused `AUTH` or `HELLO ... AUTH`.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// A refused `AUTH`: a token the host does not accept gets Redis's own `WRONGPASS`
/// line, so clients report a failed login instead of believing they are logged in.
fn auth_error(e: StoreError) -> String {
    match e.kind {
        ErrorKind::Unauthenticated => WRONGPASS.into(),
        _ => e.reply(),
    }
}

fn run(
    name: &str,
    args: &[&[u8]],
    session: &mut Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<Flow, String> {
    let protocol = session.protocol;
    match name {
        "get" => {
            let value = backend.get(session, args[1]).map_err(store)?;
            Reply::new(out, protocol).optional(value.as_deref());
        }
        "set" => {
            if let Some(option) = args.get(3) {
                return Err(format!(
                    "ERR SET with {} is not supported by kvs: its store has no atomic \
                     compare-and-set and keys do not expire; use SET key value",
                    String::from_utf8_lossy(option).to_ascii_uppercase()
                ));
            }
            backend.put(session, args[1], args[2]).map_err(store)?;
            Reply::new(out, protocol).simple("OK");
        }
        "del" => {
            // Count first, then delete: every read of a command comes before its writes,
            // so a backend that defers writes never has to wait inside one. A key named
            // twice counts once, as in Redis.
            let mut removed = 0;
            for (i, key) in args.iter().enumerate().skip(1) {
                if !args[1..i].contains(key) && backend.get(session, key).map_err(store)?.is_some()
                {
                    removed += 1;
                }
            }
            // All or nothing: every key is checked before any delete is queued.
            for key in &args[1..] {
                backend.check_write(session, key, None).map_err(store)?;
            }
            for key in &args[1..] {
                backend.delete(session, key).map_err(store)?;
            }
            Reply::new(out, protocol).integer(removed);
        }
        "exists" => {
            let mut found = 0;
            for key in &args[1..] {
                found += backend.get(session, key).map_err(store)?.is_some() as i64;
            }
            Reply::new(out, protocol).integer(found);
        }
        "mget" => {
            let mut values = Vec::with_capacity(args.len() - 1);
            let mut bytes = 0usize;
            for key in &args[1..] {
                let value = backend.get(session, key).map_err(store)?;
                bytes = bytes.saturating_add(value.as_ref().map_or(0, |v| v.len() + 16));
                if let Some(max) = session.max_reply_bytes
                    && bytes > max
                {
                    return Err(format!(
                        "ERR MGET's reply would be over {max} bytes (max_reply_bytes): \
                         ask for fewer keys at a time"
                    ));
                }
                values.push(value);
            }
            let mut reply = Reply::new(out, protocol);
            reply.array(values.len());
            for v in &values {
                reply.optional(v.as_deref());
            }
        }
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Err(arity_error(args[0]));
            }
            // All or nothing: every pair is checked before any write is queued.
            for pair in args[1..].chunks(2) {
                backend
                    .check_write(session, pair[0], Some(pair[1]))
                    .map_err(store)?;
            }
            for pair in args[1..].chunks(2) {
                backend.put(session, pair[0], pair[1]).map_err(store)?;
            }
            Reply::new(out, protocol).simple("OK");
        }
        "strlen" => {
            let len = backend
                .get(session, args[1])
                .map_err(store)?
                .map_or(0, |v| v.len());
            Reply::new(out, protocol).integer(len as i64);
        }
        "dbsize" => {
            backend.check_authenticated(session).map_err(store)?;
            let keys = backend.info().keys.ok_or(
                "ERR DBSIZE needs a kvs host that reports store stats (plugin-api 1.3 or later)",
            )?;
            Reply::new(out, protocol).integer(keys as i64);
        }
        "ping" => match args.get(1) {
            Some(_) if args.len() > 2 => return Err(arity_error(args[0])),
            Some(msg) => {
                Reply::new(out, protocol).bulk(msg);
            }
            None => {
                Reply::new(out, protocol).simple("PONG");
            }
        },
        "echo" => {
            Reply::new(out, protocol).bulk(args[1]);
        }
        "quit" => {
            Reply::new(out, protocol).simple("OK");
            return Ok(Flow::Close);
        }
        "select" => {
            if args[1] != b"0" {
                return Err("ERR DB index is out of range (kvs has one database, 0)".into());
            }
            Reply::new(out, protocol).simple("OK");
        }
        "info" => {
            backend.check_authenticated(session).map_err(store)?;
            let text = info_text(&backend.info(), &args[1..]);
            Reply::new(out, protocol).bulk(text.as_bytes());
        }
        "command" => command(args, protocol, out)?,
        "client" => {
            backend.check_authenticated(session).map_err(store)?;
            client(args, session, out)?
        }
        "hello" => hello(args, session, backend, out)?,
        "auth" => {
            // AUTH token, or AUTH user token (the user name is not used: the token
            // names the principal).
            let token = args[args.len() - 1];
            if args.len() > 3 {
                return Err(arity_error(args[0]));
            }
            backend.authenticate(session, token).map_err(auth_error)?;
            Reply::new(out, protocol).simple("OK");
        }
        "config" => {
            if !args[1].eq_ignore_ascii_case(b"get") {
                return Err(format!(
                    "ERR CONFIG {} is not supported by kvs: configure it in config.toml",
                    lower(args[1]).to_ascii_uppercase()
                ));
            }
            // The few settings tools ask about (redis-benchmark reads `save` and
            // `appendonly`), answered as what kvs does: no snapshots, every write logged.
            let known: &[(&str, &str)] = &[("save", ""), ("appendonly", "yes")];
            let found: Vec<_> = known
                .iter()
                .filter(|(k, _)| {
                    args[2..]
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(k.as_bytes()))
                })
                .collect();
            let mut reply = Reply::new(out, protocol);
            reply.map(found.len());
            for (k, v) in found {
                reply.bulk(k.as_bytes()).bulk(v.as_bytes());
            }
        }
        _ => return Err(unknown(args[0], &args[1..])),
    }
    Ok(Flow::Continue)
}

fn command(args: &[&[u8]], protocol: Protocol, out: &mut Vec<u8>) -> Result<(), String> {
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

fn client(args: &[&[u8]], session: &mut Session, out: &mut Vec<u8>) -> Result<(), String> {
    let sub = lower(args[1]);
    let mut reply = Reply::new(out, session.protocol);
    match (sub.as_str(), args.len()) {
        ("setname", 3) => {
            if args[2].iter().any(|b| *b <= b' ' || *b > b'~') {
                return Err(
                    "ERR Client names cannot contain spaces, newlines or special characters."
                        .into(),
                );
            }
            session.name = (!args[2].is_empty()).then(|| args[2].to_vec());
            reply.simple("OK");
        }
        ("getname", 2) => {
            reply.optional(session.name.as_deref());
        }
        ("id", 2) => {
            reply.integer(session.id as i64);
        }
        // Client libraries announce themselves; kvs has nowhere to show it.
        ("setinfo", 4) => {
            reply.simple("OK");
        }
        ("info", 2) => {
            let name = String::from_utf8_lossy(session.name.as_deref().unwrap_or_default());
            let resp = if session.protocol == Protocol::Resp3 {
                3
            } else {
                2
            };
            let line = format!(
                "id={} name={name} db=0 cmd=client|info resp={resp}\n",
                session.id
            );
            reply.bulk(line.as_bytes());
        }
        ("setname" | "getname" | "id" | "setinfo" | "info", _) => {
            return Err(format!(
                "ERR wrong number of arguments for 'client|{sub}' command"
            ));
        }
        _ => {
            return Err(format!(
                "ERR unknown subcommand '{sub}'. kvs answers CLIENT SETNAME, GETNAME, ID, \
                 SETINFO and INFO."
            ));
        }
    }
    Ok(())
}

fn hello(
    args: &[&[u8]],
    session: &mut Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut protocol = session.protocol;
    let mut rest = &args[1..];
    if let Some(version) = rest.first() {
        protocol = match &version[..] {
            b"2" => Protocol::Resp2,
            b"3" => Protocol::Resp3,
            _ => return Err("NOPROTO unsupported protocol version".into()),
        };
        rest = &rest[1..];
    }
    let mut name = None;
    while let Some(option) = rest.first() {
        if option.eq_ignore_ascii_case(b"auth") && rest.len() >= 3 {
            backend.authenticate(session, rest[2]).map_err(auth_error)?;
            rest = &rest[3..];
        } else if option.eq_ignore_ascii_case(b"setname") && rest.len() >= 2 {
            name = Some(rest[1].to_vec());
            rest = &rest[2..];
        } else {
            return Err(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            ));
        }
    }
    session.protocol = protocol;
    if name.is_some() {
        session.name = name;
    }
    let mut reply = Reply::new(out, protocol);
    reply.map(7);
    reply.bulk(b"server").bulk(b"kvs");
    reply.bulk(b"version").bulk(REDIS_COMPAT_VERSION.as_bytes());
    reply
        .bulk(b"proto")
        .integer(if protocol == Protocol::Resp3 { 3 } else { 2 });
    reply.bulk(b"id").integer(session.id as i64);
    reply.bulk(b"mode").bulk(b"standalone");
    reply.bulk(b"role").bulk(b"master");
    reply.bulk(b"modules").array(0);
    Ok(())
}

/// The text of `INFO [section ...]`: server, clients, stats, keyspace.
pub fn info_text(info: &ServerInfo, sections: &[&[u8]]) -> String {
    let all = sections.is_empty()
        || sections.iter().any(|s| {
            [&b"all"[..], b"default", b"everything"]
                .iter()
                .any(|a| s.eq_ignore_ascii_case(a))
        });
    let wants = |name: &str| {
        all || sections
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut text = String::new();
    if wants("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nkvs_version:{}\r\n\
             kvs_frontend:{}\r\nredis_mode:standalone\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            info.kvs_version, info.frontend, info.tcp_port, info.uptime_secs
        ));
    }
    if wants("clients") {
        text.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            info.connected_clients
        ));
    }
    if wants("memory")
        && let Some(bytes) = info.data_bytes
    {
        text.push_str(&format!("# Memory\r\nkvs_data_bytes:{bytes}\r\n\r\n"));
    }
    if wants("stats") {
        text.push_str(&format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\r\n",
            info.total_connections, info.total_commands
        ));
    }
    if wants("keyspace") {
        text.push_str("# Keyspace\r\n");
        if let Some(keys) = info.keys.filter(|k| *k > 0) {
            text.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
        }
    }
    text
}
