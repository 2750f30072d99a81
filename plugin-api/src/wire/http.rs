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
