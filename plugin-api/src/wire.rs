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
//! kvs_stats = (nothing) -> result(keys:u64 data_bytes:u64)      (1.3)
//! stream_open  = conn:u64 context -> result()                    (1.3)
//! stream_data  = conn:u64 data:bytes -> result(stream_out)       (1.3)
//! stream_out   = close:u8 data:bytes
//! stream_close = conn:u64 -> result()                            (1.3)
//! ```
//!
//! Like the native handshake, the first three handshake fields keep their positions in
//! every major version. A minor version may append fields to the end of any message;
//! readers ignore bytes they do not know.

use crate::context::RequestContext;
use crate::error::ErrorCode;
use crate::event::EventKind;
use crate::handshake::{MAGIC, PluginKind};
use crate::log::Level;

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

/// Appends a [`RequestContext`] (1.1).
pub fn encode_context(w: &mut Writer, ctx: &RequestContext) {
    w.opt_str(&ctx.bearer_token)
        .opt_str(&ctx.client_identity)
        .opt_str(&ctx.traceparent)
        .opt_str(&ctx.tracestate);
    match ctx.deadline {
        None => w.u8(0),
        Some(d) => w
            .u8(1)
            .u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    w.opt_str(&ctx.peer);
}

/// Reads a [`RequestContext`] (1.1).
pub fn decode_context(r: &mut Reader<'_>) -> Result<RequestContext, WireError> {
    Ok(RequestContext {
        bearer_token: r.opt_str()?,
        client_identity: r.opt_str()?,
        traceparent: r.opt_str()?,
        tracestate: r.opt_str()?,
        deadline: match r.u8()? {
            0 => None,
            _ => Some(std::time::Duration::from_millis(r.u64()?)),
        },
        peer: r.opt_str()?,
    })
}

/// A plug-in's log message, as a guest hands it to the host's `kvs_log` (1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Importance.
    pub level: Level,
    /// The part of the plug-in it comes from; may be empty.
    pub target: String,
    /// The message.
    pub message: String,
    /// Key/value pairs.
    pub fields: Vec<(String, String)>,
}

impl LogRecord {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.level.0).str(&self.target).str(&self.message);
        w.u32(self.fields.len() as u32);
        for (k, v) in &self.fields {
            w.str(k).str(v);
        }
        w.0
    }
    /// Decodes it.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let level = Level(r.u8()?);
        let target = r.str()?.to_string();
        let message = r.str()?.to_string();
        let n = r.u32()?;
        let fields = (0..n)
            .map(|_| Ok((r.str()?.to_string(), r.str()?.to_string())))
            .collect::<Result<_, WireError>>()?;
        Ok(LogRecord {
            level,
            target,
            message,
            fields,
        })
    }
}

/// A plug-in's handshake as a `.wasm` guest returns it from `kvs_handshake`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Contract major version.
    pub api_major: u16,
    /// Contract minor version.
    pub api_minor: u16,
    /// Logger or frontend.
    pub kind: PluginKind,
    /// Declared name.
    pub name: String,
    /// The plug-in's own version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Requested capabilities, e.g. `"fs:data-dir"`, `"frontend:http"`.
    pub capabilities: Vec<String>,
}

impl Handshake {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(&MAGIC);
        w.u16(self.api_major).u16(self.api_minor).u8(self.kind.0);
        w.str(&self.name).str(&self.version).str(&self.description);
        w.u32(self.capabilities.len() as u32);
        for c in &self.capabilities {
            w.str(c);
        }
        w.0
    }

    /// Reads only the frozen prefix: the magic tag and the contract version.
    pub fn decode_version(buf: &[u8]) -> Result<(u16, u16), WireError> {
        let mut r = Reader::new(buf);
        if r.take(8)? != MAGIC {
            return Err(WireError(
                "bad magic tag: not a kvs plug-in handshake".into(),
            ));
        }
        Ok((r.u16()?, r.u16()?))
    }

    /// Decodes a whole handshake (call after checking the version).
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let (api_major, api_minor) = Self::decode_version(buf)?;
        let mut r = Reader::new(&buf[12..]);
        let kind = PluginKind(r.u8()?);
        let name = r.str()?.to_string();
        let version = r.str()?.to_string();
        let description = r.str()?.to_string();
        let n = r.u32()?;
        let capabilities = (0..n)
            .map(|_| r.str().map(str::to_string))
            .collect::<Result<_, _>>()?;
        Ok(Handshake {
            api_major,
            api_minor,
            kind,
            name,
            version,
            description,
            capabilities,
        })
    }
}

/// A log event borrowing its key and value from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log.
    pub sequence: u64,
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for DELETE).
    pub value: &'a [u8],
}

/// Appends `events` to `w`.
pub fn encode_events<'a>(w: &mut Writer, events: impl ExactSizeIterator<Item = Event<'a>>) {
    w.u32(events.len() as u32);
    for e in events {
        w.u64(e.sequence).u8(e.kind.0).bytes(e.key).bytes(e.value);
    }
}

/// Reads a list of events.
pub fn decode_events<'a>(r: &mut Reader<'a>) -> Result<Vec<Event<'a>>, WireError> {
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        out.push(Event {
            sequence: r.u64()?,
            kind: EventKind(r.u8()?),
            key: r.bytes()?,
            value: r.bytes()?,
        });
    }
    Ok(out)
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

/// An HTTP request as the host hands it to a `.wasm` frontend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path and query as received, still percent-encoded.
    pub path: String,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A `.wasm` frontend's answer to an [`HttpRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

fn encode_headers(w: &mut Writer, headers: &[(String, Vec<u8>)]) {
    w.u32(headers.len() as u32);
    for (k, v) in headers {
        w.str(k).bytes(v);
    }
}

fn decode_headers(r: &mut Reader<'_>) -> Result<Vec<(String, Vec<u8>)>, WireError> {
    let n = r.u32()?;
    (0..n)
        .map(|_| Ok((r.str()?.to_string(), r.bytes()?.to_vec())))
        .collect()
}

impl HttpRequest {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.str(&self.method).str(&self.path);
        encode_headers(&mut w, &self.headers);
        w.bytes(&self.body);
        w.0
    }
    /// Decodes it (ignoring a context after it; see [`HttpRequest::decode_with_context`]).
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        Self::read(&mut Reader::new(buf))
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(HttpRequest {
            method: r.str()?.to_string(),
            path: r.str()?.to_string(),
            headers: decode_headers(r)?,
            body: r.bytes()?.to_vec(),
        })
    }
    /// Encodes it followed by the caller's context, as a 1.1 host sends it.
    pub fn encode_with_context(&self, ctx: &RequestContext) -> Vec<u8> {
        let mut w = Writer(self.encode());
        encode_context(&mut w, ctx);
        w.0
    }
    /// Decodes a request and the context after it; a message without one (from a 1.0
    /// encoder) gives an anonymous context.
    pub fn decode_with_context(buf: &[u8]) -> Result<(Self, RequestContext), WireError> {
        let mut r = Reader::new(buf);
        let req = Self::read(&mut r)?;
        let ctx = if r.rest().is_empty() {
            RequestContext::default()
        } else {
            decode_context(&mut r)?
        };
        Ok((req, ctx))
    }
}

impl HttpResponse {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.encoded_len()));
        self.encode_into(&mut w);
        w.0
    }
    /// Encodes it as an `ok` result frame (`ok(&self.encode())` in one buffer).
    #[cfg(feature = "guest")]
    pub(crate) fn encode_ok(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(1 + self.encoded_len()));
        w.u8(0);
        self.encode_into(&mut w);
        w.0
    }
    fn encode_into(&self, w: &mut Writer) {
        w.u16(self.status);
        encode_headers(w, &self.headers);
        w.bytes(&self.body);
    }
    /// Its size encoded: buffers are made this big once instead of growing.
    fn encoded_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        2 + 4 + headers + 4 + self.body.len()
    }
    /// Decodes it.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        Ok(HttpResponse {
            status: r.u16()?,
            headers: decode_headers(&mut r)?,
            body: r.bytes()?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let h = Handshake {
            api_major: 1,
            api_minor: 0,
            kind: PluginKind::LOGGER,
            name: "w".into(),
            version: "0.1.0".into(),
            description: "d".into(),
            capabilities: vec!["fs:data-dir".into()],
        };
        assert_eq!(Handshake::decode(&h.encode()).unwrap(), h);
        assert_eq!(Handshake::decode_version(&h.encode()).unwrap(), (1, 0));
        let events = [
            Event {
                sequence: 1,
                kind: EventKind::PUT,
                key: b"k\0",
                value: b"",
            },
            Event {
                sequence: 9,
                kind: EventKind::DELETE,
                key: b"\xff",
                value: b"",
            },
        ];
        let mut w = Writer::default();
        encode_events(&mut w, events.iter().copied());
        assert_eq!(decode_events(&mut Reader::new(&w.0)).unwrap(), events);
        let req = HttpRequest {
            method: "PUT".into(),
            path: "/v1/key/a%2Fb".into(),
            headers: vec![("x".into(), b"y".to_vec())],
            body: b"v".to_vec(),
        };
        assert_eq!(HttpRequest::decode(&req.encode()).unwrap(), req);
        let ctx = RequestContext {
            bearer_token: Some("t".into()),
            traceparent: Some("00-x-y-01".into()),
            deadline: Some(std::time::Duration::from_millis(1500)),
            peer: Some("127.0.0.1:9".into()),
            ..RequestContext::default()
        };
        let both = req.encode_with_context(&ctx);
        // A 1.0 reader ignores the context; a 1.1 reader gets it back.
        assert_eq!(HttpRequest::decode(&both).unwrap(), req);
        assert_eq!(
            HttpRequest::decode_with_context(&both).unwrap(),
            (req.clone(), ctx)
        );
        assert_eq!(
            HttpRequest::decode_with_context(&req.encode()).unwrap().1,
            RequestContext::default()
        );
        let log = LogRecord {
            level: Level::WARN,
            target: "t".into(),
            message: "m".into(),
            fields: vec![("k".into(), "v".into())],
        };
        assert_eq!(LogRecord::decode(&log.encode()).unwrap(), log);
        let frame = err(ErrorCode::TOO_LARGE, "big");
        assert_eq!(
            result(&frame).unwrap(),
            Err((ErrorCode::TOO_LARGE, "big".to_string()))
        );
        assert_eq!(result(&ok(b"p")).unwrap(), Ok(&b"p"[..]));
        assert!(decode_events(&mut Reader::new(&[5, 0, 0, 0])).is_err());
    }
}

/// What a stream frontend's `kvs_stream_data` returns (1.3): bytes to send to the client
/// and whether to close the connection after sending them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOutput {
    /// Close the connection once `data` is sent (e.g. the client said `QUIT`).
    pub close: bool,
    /// Bytes for the client, possibly none.
    pub data: Vec<u8>,
}

impl StreamOutput {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.close as u8).bytes(&self.data);
        w.0
    }

    /// Decodes the message.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        Ok(StreamOutput {
            close: r.u8()? != 0,
            data: r.bytes()?.to_vec(),
        })
    }
}
