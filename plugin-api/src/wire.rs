//! The WASM wire format: how the host and a `.wasm` guest exchange values.
//!
//! One compact binary encoding, defined here once and used by both sides (the host with
//! the `native` feature, guests with `guest`). Little-endian integers; `bytes` and `str`
//! are a `u32` length then the bytes (`str` is UTF-8).
//!
//! ```text
//! handshake = "KVSPLUG\0" api_major:u16 api_minor:u16 kind:u8 name:str version:str
//!             description:str capabilities:(u32 count, str*)
//! result    = 0:u8 payload                     success
//!           | code:u8 message:str              an ErrorCode and why
//! events    = count:u32 (sequence:u64 kind:u8 key:bytes value:bytes)*
//! replay    = (request) cursor:u64  (response payload) next_cursor:u64 done:u8 events
//! http_req  = method:str path:str headers:(u32 count, (name:str value:bytes)*) body:bytes
//!             context                                    (context: 1.1)
//! context   = bearer_token:opt_str client_identity:opt_str traceparent:opt_str
//!             tracestate:opt_str deadline_ms:opt_u64 peer:opt_str
//! opt_str   = 0:u8 | 1:u8 str;  opt_u64 = 0:u8 | 1:u8 u64
//! kvs_log   = level:u8 target:str message:str fields:(u32 count, (key:str value:str)*)
//!             -> nothing                                 (1.1)
//! http_resp = status:u16 headers:(u32 count, (name:str value:bytes)*) body:bytes
//! kvs_get   = key:bytes -> result(found:u8 value:bytes)
//! kvs_put   = key:bytes value:bytes -> result()
//! kvs_delete= key:bytes -> result()
//! kvs_stats = (empty) -> result(keys:u64 data_bytes:u64)        (1.3)
//! kvs_check = action:u8 key:bytes -> result()                   (1.4)
//! kvs_update    = update -> result(outcome)                       (1.4)
//! kvs_get_entry = key:bytes -> result(found:u8 entry)             (1.4)
//!   update, outcome, entry: see crate::update
//! stream_open  = conn:u64 context -> result()                    (1.3)
//! stream_data  = conn:u64 data:bytes -> result(stream_out)       (1.3)
//! stream_out   = close:u8 data:bytes
//! stream_close = conn:u64 -> result()                            (1.3)
//! ```
//!
//! docs/wasm-abi.md specifies all of it for other languages.
//!
//! Like the native handshake, the first three handshake fields keep their positions in
//! every major version. A minor version may append fields to the end of any message;
//! readers ignore bytes they do not know.

mod context;
mod events;
mod handshake;
mod http;
mod log;
mod stream;
#[cfg(test)]
mod tests;

pub use context::{decode_context, encode_context};
pub use events::{Event, decode_events, encode_events};
pub use handshake::Handshake;
pub use http::{HttpRequest, HttpResponse, HttpResponseRef, encode_request};
pub use log::LogRecord;
pub use stream::StreamOutput;

use crate::error::ErrorCode;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// A `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// A `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

/// Reads encoded values from a buffer, borrowing `bytes` from it.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError(format!(
                "needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError("string is not UTF-8".into()))
    }
    /// What is left unread.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    fn opt_str(&mut self) -> Result<Option<String>, WireError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.str()?.to_string()),
        })
    }
}

impl Writer {
    fn opt_str(&mut self, v: &Option<String>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(s) => self.u8(1).str(s),
        }
    }
}

/// A success frame around `payload`.
pub fn ok(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(0);
    v.extend_from_slice(payload);
    v
}

/// An error frame.
pub fn err(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(if code.0 == 0 {
        ErrorCode::INTERNAL.0
    } else {
        code.0
    })
    .str(message);
    w.0
}

/// Splits a result frame into its payload or its error.
pub fn result(frame: &[u8]) -> Result<Result<&[u8], (ErrorCode, String)>, WireError> {
    let mut r = Reader::new(frame);
    match r.u8()? {
        0 => Ok(Ok(r.rest())),
        code => Ok(Err((ErrorCode(code), r.str()?.to_string()))),
    }
}
