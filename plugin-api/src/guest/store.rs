//! The host functions a guest calls: the store ([`get`], [`put`], [`delete`], [`stats`],
//! [`check`], [`update`], [`get_entry`]) and the host's log.

use super::GuestError;
use crate::wire::{self, Reader, Writer};

#[link(wasm_import_module = "extism:host/user")]
unsafe extern "C" {
    #[link_name = "kvs_get"]
    fn host_kvs_get(input: u64) -> u64;
    #[link_name = "kvs_put"]
    fn host_kvs_put(input: u64) -> u64;
    #[link_name = "kvs_delete"]
    fn host_kvs_delete(input: u64) -> u64;
    #[link_name = "kvs_log"]
    // With `native` too, plug-ins log through the native sink instead.
    #[cfg_attr(feature = "native", allow(dead_code))]
    fn host_kvs_log(input: u64);
    #[link_name = "kvs_stats"]
    fn host_kvs_stats(input: u64) -> u64;
    #[link_name = "kvs_check"]
    fn host_kvs_check(input: u64) -> u64;
    #[link_name = "kvs_update"]
    fn host_kvs_update(input: u64) -> u64;
    #[link_name = "kvs_get_entry"]
    fn host_kvs_get_entry(input: u64) -> u64;
}

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
    let Ok(mem) = extism_pdk::Memory::from_bytes(record.encode()) else {
        return;
    };
    // SAFETY: the host function takes an Extism memory offset and returns nothing.
    unsafe { host_kvs_log(mem.offset()) };
    mem.free();
}

/// Calls a store host function with `input`. On success, the host's whole result frame:
/// its payload starts at byte 1, left in place so that a value is copied out of
/// Extism's memory once and not again.
fn call_host(f: unsafe extern "C" fn(u64) -> u64, input: &[u8]) -> Result<Vec<u8>, GuestError> {
    let mem =
        extism_pdk::Memory::from_bytes(input).map_err(|e| GuestError::internal(e.to_string()))?;
    // SAFETY: the host function takes and returns an Extism memory offset.
    let out = unsafe { f(mem.offset()) };
    mem.free();
    let reply = extism_pdk::Memory::find(out)
        .ok_or_else(|| GuestError::internal("host returned no memory"))?;
    let frame = reply.to_vec();
    reply.free();
    match wire::result(&frame).map_err(|e| GuestError::internal(e.to_string()))? {
        Ok(_) => Ok(frame),
        Err((code, message)) => Err(GuestError { code, message }),
    }
}

/// A key (or key and value) as a host call's input, in a buffer of the right size.
fn key_input(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        4 + key.len() + value.map_or(0, |v| 4 + v.len()),
    ));
    w.bytes(key);
    if let Some(value) = value {
        w.bytes(value);
    }
    w.0
}

/// The value under `key`, from the host's store.
pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, GuestError> {
    let mut frame = call_host(host_kvs_get, &key_input(key, None))?;
    let bad = |e: wire::WireError| GuestError::internal(e.to_string());
    let mut r = Reader::new(&frame[1..]);
    if r.u8().map_err(bad)? == 0 {
        return Ok(None);
    }
    let value = r.bytes().map_err(bad)?;
    // The value is the frame's tail: keep the frame's buffer, minus what precedes it.
    let start = value.as_ptr() as usize - frame.as_ptr() as usize;
    let end = start + value.len();
    frame.truncate(end);
    frame.drain(..start);
    Ok(Some(frame))
}

/// Stores `value` under `key`. On a 1.3 host it returns once the host accepted the
/// write (an error now is a refusal: limits, access); the host sends the call's answer
/// (HTTP response, stream output) only once the write is durable, or answers with the
/// failure instead. A later [`get`] in the same call sees it. (Hosts before 1.3 returned
/// once durable.)
pub fn put(key: &[u8], value: &[u8]) -> Result<(), GuestError> {
    call_host(host_kvs_put, &key_input(key, Some(value))).map(drop)
}

/// Removes `key`, acknowledged as for [`put`]. A missing key is not an error.
pub fn delete(key: &[u8]) -> Result<(), GuestError> {
    call_host(host_kvs_delete, &key_input(key, None)).map(drop)
}

/// Whether the caller whose request this call serves may do `action` to `key`: the
/// host's answer to that call (limits, credentials, permissions) without making it
/// (1.4). Ask it for every key of a multi-key write before writing any.
pub fn check(action: crate::Action, key: &[u8]) -> Result<(), GuestError> {
    let mut w = Writer(Vec::with_capacity(5 + key.len()));
    w.u8(action.0).bytes(key);
    call_host(host_kvs_check, &w.0).map(drop)
}

/// How many keys, and bytes of keys and values, the host's store holds (1.3).
pub fn stats() -> Result<(u64, u64), GuestError> {
    let frame = call_host(host_kvs_stats, &[])?;
    let mut r = Reader::new(&frame[1..]);
    let bad = |e: wire::WireError| GuestError::internal(e.to_string());
    Ok((r.u64().map_err(bad)?, r.u64().map_err(bad)?))
}

/// Makes an atomic update — a condition, a read-modify-write, a deadline; see
/// [`update`](crate::update) — and returns its [`Outcome`](crate::Outcome) once what it
/// wrote is durable (1.4). It runs after the call's earlier writes. A failed condition is
/// an outcome (`applied: false`), not an error.
pub fn update(update: &crate::Update) -> Result<crate::Outcome, GuestError> {
    let frame = call_host(host_kvs_update, &update.encode())?;
    crate::Outcome::decode(&frame[1..]).map_err(|e| GuestError::internal(e.to_string()))
}

/// The value under `key` with its revision and deadline, if present and not expired
/// (1.4). Sees the call's earlier writes.
pub fn get_entry(key: &[u8]) -> Result<Option<crate::update::Entry>, GuestError> {
    let frame = call_host(host_kvs_get_entry, &key_input(key, None))?;
    let bad = |e: wire::WireError| GuestError::internal(e.to_string());
    let mut r = Reader::new(&frame[1..]);
    if r.u8().map_err(bad)? == 0 {
        return Ok(None);
    }
    let start = frame.len() - r.rest().len();
    let mut frame = frame;
    frame.drain(..start);
    crate::update::Entry::decode_owned(frame)
        .map(Some)
        .map_err(bad)
}
