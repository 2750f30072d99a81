//! The host functions a guest calls: the store ([`get`], [`put`], [`delete`], [`stats`],
//! [`check`], [`update`], [`get_entry`]) and the host's log.

use super::GuestError;
use crate::wire::{self, Reader, Writer};

use super::direct::{self, call_host};

/// Sends a log message to the host (`kvs_log`); used by [`crate::log`] (without the
/// `native` feature: with it, plug-ins log through the native sink).
#[cfg_attr(feature = "native", allow(dead_code))]
pub(crate) fn host_log(
    level: crate::log::Level,
    target: &str,
    message: &str,
    fields: &[(&str, String)],
) {
    let record = wire::LogRecord {
        level,
        target: target.into(),
        message: message.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    // A log line that cannot be delivered is dropped, like one over the host's rate.
    let _ = call_host(
        direct::LOG,
        |w| w.0.extend_from_slice(&record.encode()),
        |_| Ok(()),
    );
}

/// A key (or key and value) as a host call's input.
fn key_input(w: &mut Writer, key: &[u8], value: Option<&[u8]>) {
    w.bytes(key);
    if let Some(value) = value {
        w.bytes(value);
    }
}

/// The value under `key`, from the host's store.
pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, GuestError> {
    call_host(
        direct::GET,
        |w| key_input(w, key, None),
        |payload| {
            let mut r = Reader::new(payload);
            if r.u8()? == 0 {
                return Ok(None);
            }
            Ok(Some(r.bytes()?.to_vec()))
        },
    )
}

/// [`get`], the value lent to `read` in place (in the buffer the host wrote its
/// answer into) instead of copied into a `Vec` (1.8). `read` may call the host itself
/// (another `get`, a `put`, a log line); from 1.8.1 that is safe (1.8.0 trapped).
pub fn get_with<T>(key: &[u8], read: impl FnOnce(Option<&[u8]>) -> T) -> Result<T, GuestError> {
    call_host(
        direct::GET,
        |w| key_input(w, key, None),
        |payload| {
            let mut r = Reader::new(payload);
            if r.u8()? == 0 {
                return Ok(read(None));
            }
            Ok(read(Some(r.bytes()?)))
        },
    )
}

/// Stores `value` under `key`. On a 1.3 host it returns once the host accepted the
/// write (an error now is a refusal: limits, access); the host sends the call's answer
/// (HTTP response, stream output) only once the write is durable, or answers with the
/// failure instead. A later [`get`] in the same call sees it. (Hosts before 1.3 returned
/// once durable.)
pub fn put(key: &[u8], value: &[u8]) -> Result<(), GuestError> {
    call_host(direct::PUT, |w| key_input(w, key, Some(value)), |_| Ok(()))
}

/// Removes `key`, acknowledged as for [`put`]. A missing key is not an error.
pub fn delete(key: &[u8]) -> Result<(), GuestError> {
    call_host(direct::DELETE, |w| key_input(w, key, None), |_| Ok(()))
}

/// Whether the caller whose request this call serves may do `action` to `key`: the
/// host's answer to that call (limits, credentials, permissions) without making it
/// (1.4). Ask it for every key of a multi-key write before writing any.
pub fn check(action: crate::Action, key: &[u8]) -> Result<(), GuestError> {
    call_host(
        direct::CHECK,
        |w| {
            w.u8(action.0).bytes(key);
        },
        |_| Ok(()),
    )
}

/// How many keys, and bytes of keys and values, the host's store holds (1.3).
pub fn stats() -> Result<(u64, u64), GuestError> {
    call_host(
        direct::STATS,
        |_| {},
        |payload| {
            let mut r = Reader::new(payload);
            Ok((r.u64()?, r.u64()?))
        },
    )
}

/// Makes an atomic update — a condition, a read-modify-write, a deadline; see
/// [`update`](crate::update) — and returns its [`Outcome`](crate::Outcome) once what it
/// wrote is durable (1.4). It runs after the call's earlier writes. A failed condition is
/// an outcome (`applied: false`), not an error.
pub fn update(update: &crate::Update) -> Result<crate::Outcome, GuestError> {
    call_host(
        direct::UPDATE,
        |w| w.0.extend_from_slice(&update.encode()),
        crate::Outcome::decode,
    )
}

/// Makes a [`Transaction`](crate::update::Transaction) — several updates all or none,
/// conditions on deadlines — and returns one [`Outcome`](crate::Outcome) per step once
/// what it wrote is durable (1.6). Conditions that do not hold are outcomes (`applied:
/// false` for every step), not an error.
pub fn transact(
    transaction: &crate::update::Transaction,
) -> Result<Vec<crate::Outcome>, GuestError> {
    call_host(
        direct::UPDATE,
        |w| w.0.extend_from_slice(&transaction.encode()),
        crate::update::decode_outcomes,
    )
}

/// The value under `key` with its revision and deadline, if present and not expired
/// (1.4). Sees the call's earlier writes.
pub fn get_entry(key: &[u8]) -> Result<Option<crate::update::Entry>, GuestError> {
    call_host(
        direct::GET_ENTRY,
        |w| key_input(w, key, None),
        |payload| {
            let mut r = Reader::new(payload);
            if r.u8()? == 0 {
                return Ok(None);
            }
            crate::update::Entry::decode_owned(r.rest().to_vec()).map(Some)
        },
    )
}
