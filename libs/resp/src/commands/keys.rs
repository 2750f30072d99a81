//! The commands that read or write keys plainly: `GET`, `DEL`, `EXISTS`, `MGET`, `MSET`,
//! `STRLEN` (`SET` is with the atomic updates, for its options). Every read of a command comes before its writes, so a backend that defers
//! writes never has to wait inside one; a command that writes several keys checks every
//! one before it queues any.

use super::{Backend, Session, arity_error, store};
use crate::reply::Reply;

/// `GET key`.
pub(super) fn get(
    key: &[u8],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    backend.get_reply(session, key, out).map_err(store)
}

/// `DEL key...`: how many of the keys existed, each counted once (as in Redis).
pub(super) fn del(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // All or nothing: every key is checked, for the count's read and for the delete,
    // before any is read or deleted.
    for key in &args[1..] {
        backend.check_read(session, key).map_err(store)?;
        backend.check_write(session, key, None).map_err(store)?;
    }
    // Count first (a key named twice counts once), then delete. The keys seen are a
    // set past a few: a scan of the earlier ones made `DEL` of 100k keys take seconds
    // (quadratic), stalling every client of the connection's thread.
    let keys = &args[1..];
    let mut seen = (keys.len() > 8).then(|| std::collections::HashSet::with_capacity(keys.len()));
    let mut removed = 0;
    for (i, key) in keys.iter().enumerate() {
        let first = match &mut seen {
            Some(seen) => seen.insert(*key),
            None => !keys[..i].contains(key),
        };
        if first && backend.get(session, key).map_err(store)?.is_some() {
            removed += 1;
        }
    }
    for key in &args[1..] {
        backend.delete(session, key).map_err(store)?;
    }
    Reply::new(out, session.protocol).integer(removed);
    Ok(())
}

/// `EXISTS key...`: how many of the keys exist, a key named twice counted twice.
pub(super) fn exists(
    keys: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    check_reads(keys, session, backend)?;
    let mut found = 0;
    for key in keys {
        found += backend.get(session, key).map_err(store)?.is_some() as i64;
    }
    Reply::new(out, session.protocol).integer(found);
    Ok(())
}

/// `MGET key...`, refused if the reply would exceed the session's `max_reply_bytes`.
pub(super) fn mget(
    keys: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    check_reads(keys, session, backend)?;
    let mut values = Vec::with_capacity(keys.len());
    let mut bytes = 0usize;
    for key in keys {
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
    let mut reply = Reply::new(out, session.protocol);
    reply.array(values.len());
    for v in &values {
        reply.optional(v.as_deref());
    }
    Ok(())
}

/// Asks about every key of a multi-key read before any is read (one key: no need).
fn check_reads(
    keys: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
) -> Result<(), String> {
    if keys.len() > 1 {
        for key in keys {
            backend.check_read(session, key).map_err(store)?;
        }
    }
    Ok(())
}

/// `MSET key value [key value ...]`: every pair checked before any is written.
pub(super) fn mset(
    args: &[&[u8]],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
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
    Reply::new(out, session.protocol).simple("OK");
    Ok(())
}

/// `STRLEN key`: the value's length, 0 for a missing key.
pub(super) fn strlen(
    key: &[u8],
    session: &Session,
    backend: &mut impl Backend,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let len = backend
        .get(session, key)
        .map_err(store)?
        .map_or(0, |v| v.len());
    Reply::new(out, session.protocol).integer(len as i64);
    Ok(())
}
