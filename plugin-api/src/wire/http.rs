//! HTTP requests and responses, between the host's edge and a `.wasm` HTTP frontend.

use super::{Reader, WireError, Writer, decode_context, encode_context};
use crate::context::RequestContext;

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
        encode_request(
            &self.method,
            &self.path,
            || self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            &self.body,
            ctx,
        )
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

/// What [`HttpRequest::encode_with_context`] writes, from borrowed parts and in one
/// buffer of the right size (1.4): a host encodes the request it received without
/// copying it into an [`HttpRequest`] first. `headers` is called twice (to size the
/// buffer, then to write), and must give the same headers both times.
pub fn encode_request<'a, I>(
    method: &str,
    path: &str,
    headers: impl Fn() -> I,
    body: &[u8],
    ctx: &RequestContext,
) -> Vec<u8>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let opt = |s: &Option<String>| 1 + s.as_ref().map_or(0, |s| 4 + s.len());
    let context = opt(&ctx.bearer_token)
        + opt(&ctx.client_identity)
        + opt(&ctx.traceparent)
        + opt(&ctx.tracestate)
        + 9
        + opt(&ctx.peer);
    let header_bytes: usize = headers().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let len = 8 + method.len() + path.len() + 4 + header_bytes + 4 + body.len() + context;
    let mut w = Writer(Vec::with_capacity(len));
    w.str(method).str(path);
    let count = w.0.len();
    w.u32(0);
    let mut n = 0u32;
    for (k, v) in headers() {
        w.str(k).bytes(v);
        n += 1;
    }
    w.0[count..count + 4].copy_from_slice(&n.to_le_bytes());
    w.bytes(body);
    encode_context(&mut w, ctx);
    w.0
}

/// An [`HttpResponse`] read in place: headers and body borrow the encoded bytes (1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseRef<'a> {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> HttpResponseRef<'a> {
    /// Decodes it, borrowing from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let status = r.u16()?;
        let n = r.u32()?;
        let headers = (0..n)
            .map(|_| Ok((r.str()?, r.bytes()?)))
            .collect::<Result<_, WireError>>()?;
        Ok(HttpResponseRef {
            status,
            headers,
            body: r.bytes()?,
        })
    }
}

impl HttpResponse {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.encoded_len()));
        self.encode_into(&mut w);
        w.0
    }
    /// Appends it as an `ok` result frame (`ok(&self.encode())`) to `out`, growing it at
    /// most once.
    #[cfg(feature = "guest")]
    pub(crate) fn encode_ok_into(&self, out: &mut Vec<u8>) {
        out.reserve(1 + self.encoded_len());
        let mut w = Writer(std::mem::take(out));
        w.u8(0);
        self.encode_into(&mut w);
        *out = w.0;
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
