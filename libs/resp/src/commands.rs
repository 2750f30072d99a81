//! What kvs answers over RESP: the command table (for `COMMAND`) and [`execute`], which
//! runs one command against a [`Backend`] — the store as each frontend reaches it.
//!
//! Both Redis frontends run every command through here, so they answer alike; they
//! differ only in their `Backend` (the native frontend defers durable writes itself, the
//! WASM host does it for its guest) and in what they can say in `INFO`.

mod atomic;
mod backend;
mod keys;
mod server;
mod table;
#[cfg(test)]
mod tests;

pub use atomic::Render;
pub use backend::{
    Backend, ErrorKind, REDIS_COMPAT_VERSION, ServerInfo, Session, StoreError, check_sizes,
};
pub use server::{WRONGPASS, info_text};
pub use table::{Spec, TABLE, lookup, runs_ahead_of_writes};

use crate::reply::Reply;

/// Whether the connection stays open after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Send what was written, then close (`QUIT`).
    Close,
}

/// A command or subcommand name, lower-cased for matching and messages.
fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// The error for a command given the wrong number of arguments.
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
        // A command of key-value pairs (MSET) needs them whole, as Redis checks first.
        Some(spec)
            if !arity_ok(spec.arity, args.len())
                || (spec.step == 2 && args.len().is_multiple_of(2)) =>
        {
            Err(arity_error(name))
        }
        Some(spec) if keys_of(spec, args).any(<[u8]>::is_empty) => Err(EMPTY_KEY.into()),
        Some(spec) => run(spec.name, args, session, backend, out),
        None => Err(table::unknown(name, &args[1..])),
    };
    match result {
        Ok(flow) => flow,
        Err(message) => {
            Reply::new(out, session.protocol).error(&message);
            Flow::Continue
        }
    }
}

/// What every command that takes keys answers when one of them is empty, before it
/// reads or writes anything: kvs reserves the empty key (the host checks credentials
/// with it, and a shared log's marker is stored under it), so a command naming one is
/// refused whole — an `MSET` or `DEL` with an empty key among others changes nothing.
pub const EMPTY_KEY: &str =
    "ERR kvs does not accept empty keys: the empty key is reserved; use a key of at least one byte";

/// The key arguments of a command, as its table entry places them.
fn keys_of<'a>(spec: &Spec, args: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let (first, step) = (spec.first_key as usize, spec.step.max(1) as usize);
    let last = if spec.last_key < 0 {
        (args.len() as i64 + spec.last_key) as usize
    } else {
        spec.last_key as usize
    };
    let range = if first == 0 { 1..1 } else { first..last + 1 };
    args[..args.len().min(range.end)]
        .iter()
        .skip(range.start)
        .step_by(step)
        .copied()
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    if arity >= 0 {
        argc as i64 == arity
    } else {
        argc as i64 >= -arity
    }
}

/// A failed store call as the client's error line.
fn store(e: StoreError) -> String {
    e.reply()
}

/// Runs a command whose name and arity were checked: `name` is its table name.
fn run(
    name: &str,
    args: &[&[u8]],
    session: &mut Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<Flow, String> {
    match name {
        "get" => keys::get(args[1], session, backend, out)?,
        "set" => atomic::set(args, session, backend, out)?,
        "setnx" => atomic::setnx(args, session, backend, out)?,
        "setex" => atomic::setex(args, 1000, session, backend, out)?,
        "psetex" => atomic::setex(args, 1, session, backend, out)?,
        "getset" => atomic::getset(args, session, backend, out)?,
        "getdel" => atomic::getdel(args, session, backend, out)?,
        "getex" => atomic::getex(args, session, backend, out)?,
        "incr" | "decr" | "incrby" | "decrby" => atomic::incr(name, args, session, backend, out)?,
        "incrbyfloat" => atomic::incrbyfloat(args, session, backend, out)?,
        "append" => atomic::append(args, session, backend, out)?,
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            atomic::expire(name, args, session, backend, out)?
        }
        "persist" => atomic::persist(args, session, backend, out)?,
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            let now = backend.clock_ms();
            atomic::ttl(name, args[1], now, session, backend, out)?
        }
        "del" => keys::del(args, session, backend, out)?,
        "exists" => keys::exists(&args[1..], session, backend, out)?,
        "mget" => keys::mget(&args[1..], session, backend, out)?,
        "mset" => keys::mset(args, session, backend, out)?,
        "msetnx" => atomic::msetnx(args, session, backend, out)?,
        "strlen" => keys::strlen(args[1], session, backend, out)?,
        "dbsize" => server::dbsize(session, backend, out)?,
        "ping" => server::ping(args, session, out)?,
        "echo" => {
            Reply::new(out, session.protocol).bulk(args[1]);
        }
        "quit" => {
            Reply::new(out, session.protocol).simple("OK");
            return Ok(Flow::Close);
        }
        "select" => server::select(args[1], session, out)?,
        "info" => server::info(&args[1..], session, backend, out)?,
        "command" => table::command(args, session.protocol, out)?,
        "client" => {
            backend.check_authenticated(session).map_err(store)?;
            server::client(args, session, out)?
        }
        "hello" => server::hello(args, session, backend, out)?,
        "auth" => server::auth(args, session, backend, out)?,
        "config" => server::config(args, session, out)?,
        _ => return Err(table::unknown(args[0], &args[1..])),
    }
    Ok(Flow::Continue)
}
