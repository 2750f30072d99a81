//! The commands about the server and the connection: `DBSIZE`, `PING`, `SELECT`,
//! `INFO`, `CLIENT`, `HELLO`, `AUTH`, `CONFIG GET`.

use super::{Backend, ErrorKind, REDIS_COMPAT_VERSION, ServerInfo, Session, StoreError};
use super::{arity_error, lower, store};
use crate::reply::{Protocol, Reply};

/// Redis's error for an argument that should be an integer.
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// What Redis answers a client name it refuses (`CLIENT SETNAME`, `HELLO ... SETNAME`).
const BAD_CLIENT_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// Whether `CLIENT SETNAME` and `HELLO ... SETNAME` accept `name`: printable ASCII
/// without spaces, as in Redis.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| *b > b' ' && *b <= b'~')
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

/// `DBSIZE`: the number of keys, for an authenticated caller, if the backend can tell.
pub(super) fn dbsize(
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    backend.check_authenticated(session).map_err(store)?;
    let keys = backend
        .info()
        .keys
        .ok_or("ERR DBSIZE needs a kvs host that reports store stats (plugin-api 1.3 or later)")?;
    Reply::new(out, session.protocol).integer(keys as i64);
    Ok(())
}

/// `PING [message]`.
pub(super) fn ping(args: &[&[u8]], session: &Session, out: &mut Vec<u8>) -> Result<(), String> {
    let mut reply = Reply::new(out, session.protocol);
    match args {
        [_] => reply.simple("PONG"),
        [_, message] => reply.bulk(message),
        _ => return Err(arity_error(args[0])),
    };
    Ok(())
}

/// `SELECT 0`: kvs has one database. Redis's errors: not an integer, out of range.
pub(super) fn select(index: &[u8], session: &Session, out: &mut Vec<u8>) -> Result<(), String> {
    match crate::decode::parse_i64(index) {
        None => return Err(NOT_AN_INTEGER.into()),
        Some(0) => {}
        Some(_) => return Err("ERR DB index is out of range".into()),
    }
    Reply::new(out, session.protocol).simple("OK");
    Ok(())
}

/// `INFO [section ...]`, for an authenticated caller.
pub(super) fn info(
    sections: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    backend.check_authenticated(session).map_err(store)?;
    let text = info_text(&backend.info(), sections);
    Reply::new(out, session.protocol).verbatim(text.as_bytes());
    Ok(())
}

/// `AUTH token`, or `AUTH user token` (the user name is not used: the token names the
/// principal).
pub(super) fn auth(
    args: &[&[u8]],
    session: &mut Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if args.len() > 3 {
        return Err(arity_error(args[0]));
    }
    let token = args[args.len() - 1];
    backend.authenticate(session, token).map_err(auth_error)?;
    Reply::new(out, session.protocol).simple("OK");
    Ok(())
}

/// `CONFIG GET parameter...`: the few settings tools ask about (redis-benchmark reads
/// `save` and `appendonly`), answered as what kvs does: no snapshots, every write
/// logged. Other `CONFIG` subcommands are refused.
pub(super) fn config(args: &[&[u8]], session: &Session, out: &mut Vec<u8>) -> Result<(), String> {
    if args[1].eq_ignore_ascii_case(b"get") && args.len() < 3 {
        return Err("ERR wrong number of arguments for 'config|get' command".into());
    }
    if !args[1].eq_ignore_ascii_case(b"get") {
        return Err(format!(
            "ERR CONFIG {} is not supported by kvs: configure it in config.toml",
            lower(args[1]).to_ascii_uppercase()
        ));
    }
    let known: &[(&str, &str)] = &[("save", ""), ("appendonly", "yes")];
    // Each setting once, named as the client asked for it (Redis echoes the pattern).
    let mut found: Vec<(&[u8], &str)> = Vec::new();
    for (name, value) in known {
        if let Some(asked) = args[2..]
            .iter()
            .find(|a| a.eq_ignore_ascii_case(name.as_bytes()))
        {
            found.push((asked, value));
        }
    }
    let mut reply = Reply::new(out, session.protocol);
    reply.map(found.len());
    for (k, v) in found {
        reply.bulk(k).bulk(v.as_bytes());
    }
    Ok(())
}

/// `CLIENT SETNAME | GETNAME | ID | SETINFO | INFO`.
pub(super) fn client(
    args: &[&[u8]],
    session: &mut Session,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let sub = lower(args[1]);
    let mut reply = Reply::new(out, session.protocol);
    match (sub.as_str(), args.len()) {
        ("setname", 3) => {
            if !valid_client_name(args[2]) {
                return Err(BAD_CLIENT_NAME.into());
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
            reply.verbatim(line.as_bytes());
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

/// `HELLO [protover [AUTH user token] [SETNAME name]]`: switches the protocol and
/// answers the server's description.
pub(super) fn hello(
    args: &[&[u8]],
    session: &mut Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut protocol = session.protocol;
    let mut rest = &args[1..];
    if let Some(version) = rest.first() {
        protocol = match crate::decode::parse_i64(version) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Err("NOPROTO unsupported protocol version".into()),
            None => return Err("ERR Protocol version is not an integer or out of range".into()),
        };
        rest = &rest[1..];
    }
    // Every option is checked before any takes effect, as in Redis.
    let mut name = None;
    let mut token = None;
    while let Some(option) = rest.first() {
        if option.eq_ignore_ascii_case(b"auth") && rest.len() >= 3 {
            token = Some(rest[2]);
            rest = &rest[3..];
        } else if option.eq_ignore_ascii_case(b"setname") && rest.len() >= 2 {
            if !valid_client_name(rest[1]) {
                return Err(BAD_CLIENT_NAME.into());
            }
            name = Some(rest[1].to_vec());
            rest = &rest[2..];
        } else {
            return Err(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            ));
        }
    }
    if let Some(token) = token {
        backend.authenticate(session, token).map_err(auth_error)?;
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
