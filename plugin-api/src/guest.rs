//! Writing a `.wasm` plug-in (feature `guest`, target `wasm32-wasip1`).
//!
//! A WASM plug-in is an Extism guest. It implements the same concepts as a native one —
//! a handshake, then a logger or a frontend — through the exports the macros here
//! generate, and talks to the host only in the [`wire`] format.
//!
//! * Logger: implement [`Logger`] and call [`export_wasm_logger!`](crate::export_wasm_logger). The host calls
//!   `kvs_logger_open`, then `kvs_logger_replay` chunk by chunk, then
//!   `kvs_logger_append` once per batch, then `kvs_logger_close`, always on the same
//!   instance. A logger that asks for the `fs:data-dir` capability gets the directory the
//!   operator grants in its config (`data_dir`) mounted at [`DATA_DIR`] — nothing else.
//! * Frontend (HTTP mode): write `fn(HttpRequest) -> HttpResponse` and call
//!   [`export_wasm_http_frontend!`](crate::export_wasm_http_frontend). The host owns the listener (the sandbox has no
//!   sockets) and calls `kvs_http_handle` for each request, on any instance of its pool;
//!   the handler reaches the store with [`get`], [`put`] and [`delete`]. Those calls
//!   carry the context the host read from the client's request (credentials, trace,
//!   deadline, peer): the host decides what the caller may do. The handler can read
//!   that context with [`request_context`] (1.1). Helpers: [`key_from_path`] turns
//!   the still percent-encoded path into a key, [`GuestError::http_status`] an error
//!   into the status kvs's REST frontends answer (1.2). A frontend that takes settings
//!   of its own exports `configure` too (1.2; see the macro).
//! * Frontend (stream mode, 1.3): implement [`StreamConnection`] and call
//!   [`export_wasm_stream_frontend!`](crate::export_wasm_stream_frontend). The host owns
//!   a TCP listener and, per connection, calls `kvs_stream_open`, then
//!   `kvs_stream_data` with whatever bytes arrived (any split: a message may span calls,
//!   or one call carry many), sending back what it returns, then `kvs_stream_close`.
//!   The guest keeps each connection's state (the macro keys it by connection id). A
//!   trap closes that connection only. Writes are deferred to the end of the call (as
//!   for HTTP frontends, see [`put`]): the host sends the call's output only after all
//!   its writes are durable — if one fails, it closes the connection instead, so a
//!   client never reads an acknowledgement for a write that was lost.
//! * Logging: [`crate::log`] sends messages to the host's log, tagged with the
//!   plug-in's name (1.1; the host function `kvs_log`).
//!
//! The sandbox: no network, no file system beyond a granted directory, a memory cap and
//! a per-call timeout always set by the host. A trap or a timeout fails that call only;
//! the host replaces the instance.

use crate::wire::{self, Reader, Writer};
pub use crate::wire::{Event, HttpRequest, HttpResponse};
use crate::{ErrorCode, EventKind};

/// Re-exported for the generated code.
#[doc(hidden)]
pub use extism_pdk;

/// Where a granted data directory appears inside the sandbox.
pub const DATA_DIR: &str = "/data";

/// An error a guest returns: a code the host maps to statuses, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Why, in one line.
    pub message: String,
}

impl GuestError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        GuestError {
            code,
            message: message.into(),
        }
    }
    /// Shorthand for [`ErrorCode::INVALID_INPUT`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_INPUT, message)
    }
    /// Shorthand for [`ErrorCode::UNAVAILABLE`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNAVAILABLE, message)
    }
    /// Shorthand for [`ErrorCode::INTERNAL`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::INTERNAL, message)
    }
    /// Shorthand for [`ErrorCode::UNAUTHENTICATED`] (1.2).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNAUTHENTICATED, message)
    }
    /// Shorthand for [`ErrorCode::PERMISSION_DENIED`] (1.2).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PERMISSION_DENIED, message)
    }
}

impl GuestError {
    /// The HTTP status kvs's own REST frontends answer for this error: 404, 400,
    /// 414 (a key too long) / 413, 503, 401 (1.2), 403 (1.2), else 500. A 401 answered
    /// through the host's listener gets its `WWW-Authenticate` header from the host.
    pub fn http_status(&self) -> u16 {
        match self.code {
            ErrorCode::NOT_FOUND => 404,
            ErrorCode::INVALID_INPUT => 400,
            // The store says which limit it was: a key too long is 414, like a long URI.
            ErrorCode::TOO_LARGE if self.message.starts_with("key") => 414,
            ErrorCode::TOO_LARGE => 413,
            ErrorCode::UNAVAILABLE => 503,
            ErrorCode::UNAUTHENTICATED => 401,
            ErrorCode::PERMISSION_DENIED => 403,
            _ => 500,
        }
    }
}

impl From<std::io::Error> for GuestError {
    fn from(e: std::io::Error) -> Self {
        GuestError::unavailable(e.to_string())
    }
}

/// An event a logger owns (what [`Logger::replay`] returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEvent {
    /// Position in the log.
    pub sequence: u64,
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A transaction logger inside the sandbox. Same contract as the native
/// `TransactionLogger`: `append` returns only once the batch is durable.
pub trait Logger: Sized + Send + 'static {
    /// Opens the log; `config` is the plug-in's TOML table from `config.toml`.
    fn open(config: &str) -> Result<Self, GuestError>;
    /// Makes a batch durable, in order, as one unit.
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), GuestError>;
    /// Returns the next chunk of events from `cursor` (0 at the start) and the cursor to
    /// continue from, or `None` when this was the last chunk. Keep chunks coarse (e.g. a
    /// few thousand events): every call crosses the sandbox boundary.
    fn replay(&mut self, cursor: u64) -> Result<(Vec<OwnedEvent>, Option<u64>), GuestError>;
    /// Flushes and releases resources.
    fn close(&mut self) -> Result<(), GuestError>;
}

/// The handshake a guest exports, for the generated `kvs_handshake`.
#[doc(hidden)]
pub fn handshake(
    kind: crate::PluginKind,
    name: &str,
    version: &str,
    description: &str,
    capabilities: &[&str],
) -> Vec<u8> {
    wire::Handshake {
        api_major: crate::API_MAJOR,
        api_minor: crate::API_MINOR,
        kind,
        name: name.into(),
        version: version.into(),
        description: description.into(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
    }
    .encode()
}

fn frame(result: Result<Vec<u8>, GuestError>) -> Vec<u8> {
    match result {
        Ok(payload) => wire::ok(&payload),
        Err(e) => wire::err(e.code, &e.message),
    }
}

/// Runs one logger export against the instance's logger state.
#[doc(hidden)]
pub fn logger_call<L: Logger>(
    state: &std::sync::Mutex<Option<L>>,
    op: &str,
    input: &[u8],
) -> Vec<u8> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    frame((|| match op {
        "open" => {
            let config = std::str::from_utf8(input)
                .map_err(|_| GuestError::invalid_input("config is not UTF-8"))?;
            *state = Some(L::open(config)?);
            Ok(Vec::new())
        }
        _ => {
            let logger = state
                .as_mut()
                .ok_or_else(|| GuestError::internal("logger used before open"))?;
            match op {
                "append" => {
                    let events = wire::decode_events(&mut Reader::new(input))
                        .map_err(|e| GuestError::invalid_input(e.to_string()))?;
                    logger.append(&events)?;
                    Ok(Vec::new())
                }
                "replay" => {
                    let cursor = Reader::new(input)
                        .u64()
                        .map_err(|e| GuestError::invalid_input(e.to_string()))?;
                    let (events, next) = logger.replay(cursor)?;
                    let mut w = Writer::default();
                    w.u64(next.unwrap_or(0)).u8(next.is_none() as u8);
                    wire::encode_events(
                        &mut w,
                        events.iter().map(|e| Event {
                            sequence: e.sequence,
                            kind: e.kind,
                            key: &e.key,
                            value: &e.value,
                        }),
                    );
                    Ok(w.0)
                }
                _ => {
                    logger.close()?;
                    *state = None;
                    Ok(Vec::new())
                }
            }
        }
    })())
}

std::thread_local! {
    static CONTEXT: std::cell::RefCell<crate::RequestContext> = Default::default();
}

/// The context of the request being handled: what the client presented, as the host
/// read it (1.1). Anonymous outside a request.
pub fn request_context() -> crate::RequestContext {
    CONTEXT.with(|c| c.borrow().clone())
}

/// Runs an HTTP frontend export.
#[doc(hidden)]
pub fn http_call(handler: fn(HttpRequest) -> HttpResponse, input: &[u8]) -> Vec<u8> {
    match HttpRequest::decode_with_context(input) {
        Ok((req, ctx)) => {
            CONTEXT.with(|c| *c.borrow_mut() = ctx);
            let response = handler(req);
            CONTEXT.with(|c| *c.borrow_mut() = Default::default());
            response.encode_ok()
        }
        Err(e) => wire::err(ErrorCode::INVALID_INPUT, &e.to_string()),
    }
}

/// One client connection of a stream frontend (1.3): the guest's per-connection state.
pub trait StreamConnection: Sized + Send + 'static {
    /// A client connected; `context` is what the host knows of it (its peer address).
    /// An error refuses the connection (the host closes it).
    fn open(context: &crate::RequestContext) -> Result<Self, GuestError>;
    /// `input` arrived from the client (the next bytes of its stream, split anywhere).
    /// Append the reply bytes, if any, to `output`; return [`Flow::Close`] to close the
    /// connection once `output` is sent.
    fn data(&mut self, input: &[u8], output: &mut Vec<u8>) -> Flow;
    /// The connection is gone (either side closed it). Nothing can be sent any more.
    fn close(self) {}
}

/// Whether a stream connection stays open after a [`StreamConnection::data`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Send the output, then close.
    Close,
}

/// The live connections of a stream frontend, by the host's connection id.
#[doc(hidden)]
pub type Connections<C> = std::sync::Mutex<std::collections::BTreeMap<u64, C>>;

/// Runs a stream frontend export: `open`, `data` or `close`.
#[doc(hidden)]
pub fn stream_call<C: StreamConnection>(
    connections: &Connections<C>,
    op: &str,
    input: &[u8],
) -> Vec<u8> {
    frame((|| {
        let bad = |e: wire::WireError| GuestError::invalid_input(e.to_string());
        let mut r = Reader::new(input);
        let conn = r.u64().map_err(bad)?;
        let mut connections = connections.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            "open" => {
                let context = wire::decode_context(&mut r).map_err(bad)?;
                connections.insert(conn, C::open(&context)?);
                Ok(Vec::new())
            }
            "data" => {
                let data = r.bytes().map_err(bad)?;
                let connection = connections
                    .get_mut(&conn)
                    .ok_or_else(|| GuestError::invalid_input(format!("no connection {conn}")))?;
                let mut output = wire::StreamOutput::default();
                output.close = connection.data(data, &mut output.data) == Flow::Close;
                Ok(output.encode())
            }
            _ => {
                if let Some(connection) = connections.remove(&conn) {
                    connection.close();
                }
                Ok(Vec::new())
            }
        }
    })())
}

/// Runs an HTTP frontend's `configure` function on its table (1.2).
#[doc(hidden)]
pub fn configure_call(configure: fn(&str) -> Result<(), GuestError>, input: &[u8]) -> Vec<u8> {
    frame((|| {
        let table = std::str::from_utf8(input)
            .map_err(|_| GuestError::invalid_input("config is not UTF-8"))?;
        configure(table)?;
        Ok(Vec::new())
    })())
}

/// The key a request path names under `prefix` (e.g. `"/v1/key/"`): the rest of the
/// path without any `?query`, percent-decoded to bytes (`%2F`, `%00`, UTF-8 all work).
/// `None` if the path is not under `prefix` or the key is empty.
///
/// ```
/// use kvs_plugin_api::guest::key_from_path;
/// assert_eq!(key_from_path("/v1/key/a%2Fb?x=1", "/v1/key/"), Some(b"a/b".to_vec()));
/// assert_eq!(key_from_path("/v1/key/", "/v1/key/"), None);
/// assert_eq!(key_from_path("/other", "/v1/key/"), None);
/// ```
pub fn key_from_path(path: &str, prefix: &str) -> Option<Vec<u8>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let raw = path.strip_prefix(prefix)?.as_bytes();
    let mut key = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            key.push((h << 4) | l);
            i += 3;
        } else {
            key.push(raw[i]);
            i += 1;
        }
    }
    (!key.is_empty()).then_some(key)
}

/// Hands a result to the host; the generated exports end with this.
#[doc(hidden)]
pub fn respond(bytes: Vec<u8>) -> i32 {
    match extism_pdk::output(bytes) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[link(wasm_import_module = "extism:host/user")]
unsafe extern "C" {
    #[link_name = "kvs_get"]
    fn host_kvs_get(input: u64) -> u64;
    #[link_name = "kvs_put"]
    fn host_kvs_put(input: u64) -> u64;
    #[link_name = "kvs_delete"]
    fn host_kvs_delete(input: u64) -> u64;
    #[link_name = "kvs_log"]
    fn host_kvs_log(input: u64);
    #[link_name = "kvs_stats"]
    fn host_kvs_stats(input: u64) -> u64;
}

/// Sends a log message to the host (`kvs_log`); used by [`crate::log`].
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

/// How many keys, and bytes of keys and values, the host's store holds (1.3).
pub fn stats() -> Result<(u64, u64), GuestError> {
    let frame = call_host(host_kvs_stats, &[])?;
    let mut r = Reader::new(&frame[1..]);
    let bad = |e: wire::WireError| GuestError::internal(e.to_string());
    Ok((r.u64().map_err(bad)?, r.u64().map_err(bad)?))
}

/// Exports a WASM logger: `export_wasm_logger!(MyLogger, name: "wal", description: "...",
/// capabilities: ["fs:data-dir"]);`
#[macro_export]
macro_rules! export_wasm_logger {
    ($logger:ty, name: $name:literal, description: $desc:literal $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        static __KVS_LOGGER: ::std::sync::Mutex<Option<$logger>> = ::std::sync::Mutex::new(None);

        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_handshake() -> i32 {
            $crate::guest::respond($crate::guest::handshake(
                $crate::PluginKind::LOGGER, $name, env!("CARGO_PKG_VERSION"), $desc, &[$($($cap),*)?],
            ))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_open() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "open", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_append() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "append", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_replay() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "replay", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_close() -> i32 {
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "close", &[]))
        }
    };
}

/// Exports a WASM stream frontend (1.3): `export_wasm_stream_frontend!(MyConnection,
/// name: "wasm-resp", description: "...");` where `MyConnection: StreamConnection`.
/// Capabilities listed after the description (e.g. `protocol:resp`) are declared too.
#[macro_export]
macro_rules! export_wasm_stream_frontend {
    ($connection:ty, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        static __KVS_CONNECTIONS: $crate::guest::Connections<$connection> =
            ::std::sync::Mutex::new(::std::collections::BTreeMap::new());

        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_handshake() -> i32 {
            $crate::guest::respond($crate::guest::handshake(
                $crate::PluginKind::FRONTEND,
                $name,
                env!("CARGO_PKG_VERSION"),
                $desc,
                &[$crate::capability::FRONTEND_STREAM $($(, $cap)*)?],
            ))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_stream_open() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::stream_call(&__KVS_CONNECTIONS, "open", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_stream_data() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::stream_call(&__KVS_CONNECTIONS, "data", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_stream_close() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::stream_call(&__KVS_CONNECTIONS, "close", &input))
        }
    };
}

/// Exports a WASM HTTP frontend: `export_wasm_http_frontend!(handle, name: "wasm-rest",
/// description: "...");` where `fn handle(HttpRequest) -> HttpResponse`.
///
/// With `configure: my_configure` before `name:` (1.2), the frontend also takes its
/// config table: `fn my_configure(table: &str) -> Result<(), GuestError>` gets the
/// operator's `[plugins.NAME]` table as TOML text, without the host's sandbox keys, once
/// per instance before that instance serves; an error stops kvs at start-up with its
/// message, so name the bad key. Keep what it parsed in a `static` (`OnceLock`). Without
/// `configure`, any key besides the sandbox keys is refused by the host.
#[macro_export]
macro_rules! export_wasm_http_frontend {
    ($handler:path, configure: $configure:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_wasm_http_frontend!(
            $handler, name: $name, description: $desc, capabilities: [$($($cap),*)?]
        );
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_http_configure() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::configure_call($configure, &input))
        }
    };
    ($handler:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_handshake() -> i32 {
            $crate::guest::respond($crate::guest::handshake(
                $crate::PluginKind::FRONTEND,
                $name,
                env!("CARGO_PKG_VERSION"),
                $desc,
                &[$crate::capability::FRONTEND_HTTP $($(, $cap)*)?],
            ))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_http_handle() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::http_call($handler, &input))
        }
    };
}
