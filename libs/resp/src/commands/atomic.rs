//! The commands that are atomic updates (plugin-api 1.4): `SET` with options, `SETNX`,
//! `SETEX`, `PSETEX`, `GETSET`, `GETDEL`, `GETEX`, the `INCR`/`DECR` family, `APPEND`,
//! the `EXPIRE` family and `PERSIST`; and the reads of a key's deadline, `TTL`, `PTTL`,
//! `EXPIRETIME`, `PEXPIRETIME`.
//!
//! Each parses its arguments into one [`Update`], which the host's writer evaluates in
//! log order, and names how its reply is made from the [`Outcome`] ([`Render`]): the
//! backend appends that reply once the outcome is known, so a pipeline of `INCR`s is
//! queued whole and shares one fsync. Errors are Redis's own lines.

use kvs_plugin_api::{Change, Condition, DeadlineCondition, Expiry, Outcome, Transaction, Update};

use super::{Backend, Session, store};
use crate::reply::Reply;

/// How a command's reply is made from its update's outcome.
pub type Render = fn(&Outcome, &mut Reply<'_>);

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

fn reply_ok_or_nil(o: &Outcome, r: &mut Reply<'_>) {
    if o.applied {
        r.simple("OK");
    } else {
        r.null();
    }
}

fn reply_ok(_: &Outcome, r: &mut Reply<'_>) {
    r.simple("OK");
}

fn reply_previous(o: &Outcome, r: &mut Reply<'_>) {
    r.optional(o.previous.as_deref());
}

fn reply_applied(o: &Outcome, r: &mut Reply<'_>) {
    r.integer(o.applied as i64);
}

fn reply_integer_value(o: &Outcome, r: &mut Reply<'_>) {
    let n = o
        .value
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    r.integer(n);
}

fn reply_value(o: &Outcome, r: &mut Reply<'_>) {
    r.optional(o.value.as_deref());
}

fn reply_length(o: &Outcome, r: &mut Reply<'_>) {
    r.integer(o.length as i64);
}

/// An integer argument as Redis reads one: no sign but `-`, no leading zero, not `-0`.
fn integer(arg: &[u8]) -> Result<i64, String> {
    kvs_plugin_api::update::parse_integer(arg).ok_or_else(|| NOT_INTEGER.to_string())
}

/// A time argument of `command` in `unit_ms` milliseconds, as a deadline: relative
/// (`EX`, `PX`) or absolute (`EXAT`, `PXAT`). Non-positive, or past 2^63 ms once added
/// to now: Redis's "invalid expire time".
fn deadline(
    arg: &[u8],
    unit_ms: i64,
    absolute: bool,
    command: &str,
    now_ms: u64,
) -> Result<Expiry, String> {
    let n = integer(arg)?;
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    if n <= 0 {
        return Err(invalid());
    }
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    if absolute {
        return Ok(Expiry::At(ms as u64));
    }
    ms.checked_add(now_ms as i64).ok_or_else(invalid)?;
    Ok(Expiry::After(ms as u64))
}

/// The deadline an `EX`, `PX`, `EXAT` or `PXAT` option (upper case) gives with `value`.
fn time_option(option: &[u8], value: &[u8], command: &str, now_ms: u64) -> Result<Expiry, String> {
    let unit = if option.starts_with(b"E") { 1000 } else { 1 };
    deadline(value, unit, option.ends_with(b"AT"), command, now_ms)
}

/// Queues `update`, whose reply `render` makes.
fn run(
    update: Update,
    render: Render,
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    backend.update(session, update, render, out).map_err(store)
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
pub(super) fn set(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // As Redis 7.0 parses them: an option may repeat (the last time option wins), but
    // NX and XX, or two different time options, or KEEPTTL and a time, conflict.
    let mut condition = Condition::Always;
    let mut expiry = Expiry::Clear;
    let mut get = false;
    let mut time_given: Option<Vec<u8>> = None; // EX, PX, EXAT, PXAT or KEEPTTL
    let now = backend.clock_ms();
    let mut at = 3;
    while at < args.len() {
        let option = args[at].to_ascii_uppercase();
        let value = args.get(at + 1);
        let time_ok = time_given.as_ref().is_none_or(|t| *t == option);
        match option.as_slice() {
            b"NX" if condition != Condition::Present => condition = Condition::Absent,
            b"XX" if condition != Condition::Absent => condition = Condition::Present,
            b"GET" => get = true,
            b"KEEPTTL" if time_ok => {
                time_given = Some(option);
                expiry = Expiry::Keep;
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if time_ok => {
                let Some(value) = value else {
                    return Err(SYNTAX.into());
                };
                expiry = time_option(&option, value, "set", now)?;
                time_given = Some(option);
                at += 1;
            }
            _ => return Err(SYNTAX.into()),
        }
        at += 1;
    }
    if args.len() == 3 {
        // No options: a plain put, as before 1.4 (any deadline is cleared).
        backend.put(session, args[1], args[2]).map_err(store)?;
        Reply::new(out, session.protocol).simple("OK");
        return Ok(());
    }
    let mut update = Update::new(args[1], Change::Put(args[2].to_vec()))
        .when(condition)
        .expiring(expiry);
    update.return_previous = get;
    let render: Render = if get { reply_previous } else { reply_ok_or_nil };
    run(update, render, session, backend, out)
}

/// `SETNX key value`: 1 if set, 0 if the key existed.
pub(super) fn setnx(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let update = Update::new(args[1], Change::Put(args[2].to_vec()))
        .when(Condition::Absent)
        .expiring(Expiry::Clear);
    run(update, reply_applied, session, backend, out)
}

/// `SETEX key seconds value` and `PSETEX key milliseconds value`.
pub(super) fn setex(
    args: &[&[u8]],
    unit_ms: i64,
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let command = if unit_ms == 1 { "psetex" } else { "setex" };
    let expiry = deadline(args[2], unit_ms, false, command, backend.clock_ms())?;
    let update = Update::new(args[1], Change::Put(args[3].to_vec())).expiring(expiry);
    run(update, reply_ok, session, backend, out)
}

/// `GETSET key value`: the old value; the key loses any deadline.
pub(super) fn getset(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let update = Update::new(args[1], Change::Put(args[2].to_vec()))
        .expiring(Expiry::Clear)
        .returning_previous();
    run(update, reply_previous, session, backend, out)
}

/// `GETDEL key`: the value, and the key removed.
pub(super) fn getdel(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let update = Update::new(args[1], Change::Delete).returning_previous();
    run(update, reply_previous, session, backend, out)
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`: the value, with its deadline changed.
pub(super) fn getex(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // As Redis 7.0: an option may repeat (the last wins); two different ones conflict.
    // The syntax is checked first, then the key looked up, and only then the time: a
    // missing key answers nil whatever time it was given.
    let (mut expiry, mut given, mut at) = (Expiry::Keep, None::<Vec<u8>>, 2);
    let mut time: Option<&[u8]> = None;
    while at < args.len() {
        let option = args[at].to_ascii_uppercase();
        let same = given.as_ref().is_none_or(|g| *g == option);
        match option.as_slice() {
            b"PERSIST" if same => expiry = Expiry::Clear,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if same => {
                let Some(value) = args.get(at + 1) else {
                    return Err(SYNTAX.into());
                };
                time = Some(value);
                at += 1;
            }
            _ => return Err(SYNTAX.into()),
        }
        given = Some(option);
        at += 1;
    }
    if let (Some(value), Some(option)) = (time, &given) {
        match time_option(option, value, "getex", backend.clock_ms()) {
            Ok(deadline) => expiry = deadline,
            Err(invalid) => {
                return match backend.get(session, args[1]).map_err(store)? {
                    None => {
                        Reply::new(out, session.protocol).null();
                        Ok(())
                    }
                    Some(_) => Err(invalid),
                };
            }
        }
    }
    let update = Update::new(args[1], Change::Keep)
        .expiring(expiry)
        .returning_previous();
    run(update, reply_previous, session, backend, out)
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: the new value.
pub(super) fn incr(
    name: &str,
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let by = match name {
        "incr" => 1,
        "decr" => -1,
        "incrby" => integer(args[2])?,
        _ => integer(args[2])?
            .checked_neg()
            .ok_or_else(|| "ERR decrement would overflow".to_string())?,
    };
    let update = Update::new(args[1], Change::Increment(by));
    run(update, reply_integer_value, session, backend, out)
}

/// `INCRBYFLOAT key increment`: the new value, as stored.
pub(super) fn incrbyfloat(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let by = std::str::from_utf8(args[2])
        .ok()
        .filter(|t| !t.is_empty() && t.trim() == *t)
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|f| f.is_finite())
        .ok_or_else(|| "ERR value is not a valid float".to_string())?;
    let update = Update::new(args[1], Change::IncrementFloat(by));
    run(update, reply_value, session, backend, out)
}

/// `APPEND key value`: the new length.
pub(super) fn append(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let update = Update::new(args[1], Change::Append(args[2].to_vec()));
    run(update, reply_length, session, backend, out)
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`: 1 if the key exists (and now expires
/// then), 0 if not. A time not in the future removes the key, as in Redis.
pub(super) fn expire(
    name: &str,
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // Options first, as Redis reads them.
    let when = expire_options(&args[3..])?;
    let n = integer(args[2])?;
    let unit: i64 = if name.starts_with('p') { 1 } else { 1000 };
    let invalid = || format!("ERR invalid expire time in '{name}' command");
    let ms = n.checked_mul(unit).ok_or_else(invalid)?;
    let absolute = name.ends_with("at");
    if !absolute && ms > 0 {
        ms.checked_add(backend.clock_ms() as i64)
            .ok_or_else(invalid)?;
    }
    let expiry = match (absolute, ms) {
        // At or before now: the key goes (`At(0)` is long past).
        (_, ms) if ms <= 0 => Expiry::At(0),
        (true, ms) => Expiry::At(ms as u64),
        (false, ms) => Expiry::After(ms as u64),
    };
    let update = Update::new(args[1], Change::Keep).expiring(expiry);
    if when == DeadlineCondition::ANY {
        return run(update, reply_applied, session, backend, out);
    }
    let transaction = Transaction::new().and_if_deadline(update, when);
    backend
        .transact(session, transaction, reply_applied, out)
        .map_err(store)
}

/// The `EXPIRE` family's `NX | XX | GT | LT` (Redis 7): conditions on the key's
/// deadline, where no deadline counts as later than any time. Redis's errors for the
/// combinations it refuses.
fn expire_options(options: &[&[u8]]) -> Result<DeadlineCondition, String> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                ));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    let mut when = DeadlineCondition::ANY;
    if nx || xx {
        when = when.having(xx);
    }
    if gt {
        when = when.new_is(std::cmp::Ordering::Greater);
    }
    if lt {
        when = when.new_is(std::cmp::Ordering::Less);
    }
    Ok(when)
}

/// `MSETNX key value [key value ...]`: 1 and every key set if none of them exists
/// (as one write: all of them or, even across a crash, none), else 0 and nothing set.
pub(super) fn msetnx(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let pairs = (args.len() - 1) / 2;
    if pairs > kvs_plugin_api::update::MAX_STEPS {
        return Err(format!(
            "ERR MSETNX takes at most {} key-value pairs in kvs (one transaction), not \
             {pairs}; nothing was set",
            kvs_plugin_api::update::MAX_STEPS
        ));
    }
    // Every pair asked about first, as for MSET: what the host refuses (limits,
    // permissions, the rate limit) refuses the whole command before any of it.
    for pair in args[1..].chunks(2) {
        backend
            .check_write(session, pair[0], Some(pair[1]))
            .map_err(store)?;
    }
    let transaction = args[1..].chunks(2).fold(Transaction::new(), |tx, pair| {
        tx.and(
            Update::new(pair[0], Change::Put(pair[1].to_vec()))
                .when(Condition::Absent)
                .expiring(Expiry::Clear),
        )
    });
    backend
        .transact(session, transaction, reply_applied, out)
        .map_err(store)
}

/// `PERSIST key`: 1 if a deadline was removed, 0 if the key has none or is absent.
pub(super) fn persist(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let update = Update::new(args[1], Change::Keep).expiring(Expiry::Clear);
    run(update, reply_applied, session, backend, out)
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`: -2 for an absent key, -1 for one without
/// a deadline, else the time left (rounded as Redis rounds it) or the deadline.
pub(super) fn ttl(
    name: &str,
    key: &[u8],
    now_ms: u64,
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let entry = backend.get_entry(session, key).map_err(store)?;
    let n = match entry {
        None => -2,
        Some(e) => match e.expires_at {
            None => -1,
            Some(at) => {
                // Deadlines are below 2^63 ms (the store refuses later ones); rounded
                // to seconds as Redis rounds them.
                let at = at.min(i64::MAX as u64) as i64;
                let left = at.saturating_sub(now_ms as i64).max(0);
                match name {
                    "ttl" => left.saturating_add(500) / 1000,
                    "pttl" => left,
                    "expiretime" => at.saturating_add(500) / 1000,
                    _ => at,
                }
            }
        },
    };
    Reply::new(out, session.protocol).integer(n);
    Ok(())
}
