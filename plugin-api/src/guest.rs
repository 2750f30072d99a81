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
//! * Frontend (HTTP mode): write `fn(HttpRequest) -> HttpResponse` (or, 1.8, a
//!   borrowing `fn(&HttpRequestRef<'_>, &mut HttpResponseWriter<'_>)`: see
//!   [`HttpHandler`]) and call
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

mod direct;
mod http;
mod http_ref;
mod logger;
mod store;
mod stream;

#[doc(hidden)]
pub use direct::{buffer as direct_buffer, dispatch as direct_dispatch};
pub use http::{
    BorrowingHandler, HttpHandler, OwnedHandler, configure_call, http_call, http_call_into,
    http_handle, http_handle_into, key_from_path, request_context,
};
pub use http_ref::{HttpHeaders, HttpRequestRef, HttpResponseWriter, key_in_path};
pub use logger::{Logger, OwnedEvent, logger_call};
#[cfg(not(feature = "native"))]
pub(crate) use store::host_log;
pub use store::{check, delete, get, get_entry, get_with, put, stats, transact, update};
pub use stream::{Connections, Flow, StreamConnection, stream_call};

use crate::ErrorCode;
use crate::wire;
pub use crate::wire::{Event, HttpRequest, HttpResponse};

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
    /// 414 (a key too long) / 413, 503, 401 (1.2), 403 (1.2), 507 (1.4), 429 and 504
    /// (1.5), else 500. A 401 answered
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
            ErrorCode::STORAGE_FULL => 507,
            ErrorCode::RATE_LIMITED => 429,
            ErrorCode::DEADLINE_EXCEEDED => 504,
            _ => 500,
        }
    }
}

impl From<std::io::Error> for GuestError {
    fn from(e: std::io::Error) -> Self {
        GuestError::unavailable(e.to_string())
    }
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

/// The direct-call exports (1.4; see [`wasm_abi`](crate::wasm_abi)) the export macros
/// add: `$run` is `|export: &GuestExport, input: &[u8], out: &mut Vec<u8>| -> bool`,
/// which writes the result frame of each export the plug-in has into `out` (`false`
/// for one it has not).
#[doc(hidden)]
#[macro_export]
macro_rules! __kvs_direct_exports {
    ($run:expr) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_buffer(len: u32) -> u32 {
            $crate::guest::direct_buffer(len)
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_dispatch(export: u32, len: u32) -> u64 {
            $crate::guest::direct_dispatch(export, len, $run)
        }
    };
}

/// Hands a result to the host; the generated exports end with this.
#[doc(hidden)]
pub fn respond(bytes: Vec<u8>) -> i32 {
    match extism_pdk::output(bytes) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}
