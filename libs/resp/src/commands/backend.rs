//! The store as a Redis frontend reaches it ([`Backend`]), a connection's [`Session`],
//! and what a store call's failure looks like.

use kvs_plugin_api::update::Entry;
use kvs_plugin_api::{Transaction, Update};

use super::Render;
use crate::reply::Protocol;

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
    /// `GET`'s reply: the value under `key` (as [`Backend::get`] reads it) appended to
    /// `out` as a bulk string, or null. A backend that can lend the value in place
    /// overrides it to skip the copy into a `Vec` (`wasm-resp`, through the guest
    /// library's `get_with`).
    fn get_reply(
        &mut self,
        session: &Session,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let value = self.get(session, key)?;
        crate::reply::Reply::new(out, session.protocol).optional(value.as_deref());
        Ok(())
    }
    /// Stores `value` under `key`. `Ok` once the host accepted it; durability is the
    /// backend's to ensure before the reply is sent.
    fn put(&mut self, session: &Session, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`, as for `put`.
    fn delete(&mut self, session: &Session, key: &[u8]) -> Result<(), StoreError>;
    /// Makes an atomic update (plugin-api 1.4). Its reply is `render` of its outcome,
    /// appended to `out` once the outcome is known: at once, or — a backend that defers
    /// durability — in place once the update is durable (and replaced by the error if
    /// it fails). An error known before queueing is returned.
    fn update(
        &mut self,
        session: &Session,
        update: Update,
        render: Render,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError>;
    /// Makes a transaction (plugin-api 1.6: several keys all or none, conditions on
    /// deadlines), whose reply is `render` of its first step's outcome, appended as for
    /// [`Backend::update`].
    fn transact(
        &mut self,
        session: &Session,
        transaction: Transaction,
        render: Render,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError>;
    /// The value under `key` with its revision and deadline (`TTL`), including this
    /// connection's earlier writes.
    fn get_entry(&mut self, session: &Session, key: &[u8]) -> Result<Option<Entry>, StoreError>;
    /// The wall clock, in milliseconds since the Unix epoch (what `TTL` counts from).
    fn clock_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
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
    /// Whether a read of `key` would be served, as far as the backend can tell without
    /// making it. A command that reads several keys (`MGET`, `EXISTS`, `DEL`'s count)
    /// asks for every one first, so the host sees the whole command before any of it
    /// (a rate limit then admits or refuses it whole). Default: yes.
    fn check_read(&mut self, session: &Session, key: &[u8]) -> Result<(), StoreError> {
        let _ = (session, key);
        Ok(())
    }
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
