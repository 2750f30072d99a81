//! Borrowed HTTP handlers (1.8): a request read in place from the call's input and a
//! response written straight into the call's result frame, so that reading a request
//! and answering it allocate nothing. The bytes the host sends and reads are the same
//! [`wire`](crate::wire) frames as for `fn(HttpRequest) -> HttpResponse`; only the
//! guest's side of them changed. Like every module built with this crate, a guest
//! using either form says 1.8 in its handshake, so it needs a kvs of 1.8 or later.

use std::borrow::Cow;

use super::{HttpRequest, HttpResponse};
use crate::wire::{Reader, WireError, Writer};

/// An HTTP request read in place from the call's input (1.8): what a borrowing handler
/// (`fn(&HttpRequestRef<'_>, &mut HttpResponseWriter<'_>)`) gets.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestRef<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path and query as received, still percent-encoded.
    pub path: &'a str,
    /// The headers.
    pub headers: HttpHeaders<'a>,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> HttpRequestRef<'a> {
    /// Reads a request from `input`; returns it and the bytes after it (the caller's
    /// context).
    pub(crate) fn read(input: &'a [u8]) -> Result<(Self, &'a [u8]), WireError> {
        let mut r = Reader::new(input);
        let method = r.str()?;
        let path = r.str()?;
        let count = r.u32()?;
        let start = r.rest();
        // Checked once here, so that iterating later cannot fail.
        for _ in 0..count {
            r.str()?;
            r.bytes()?;
        }
        let encoded = &start[..start.len() - r.rest().len()];
        let body = r.bytes()?;
        let request = HttpRequestRef {
            method,
            path,
            headers: HttpHeaders { count, encoded },
            body,
        };
        Ok((request, r.rest()))
    }

    /// The key the path names under `prefix`, as [`key_in_path`] reads it.
    pub fn key(&self, prefix: &str) -> Option<Cow<'a, [u8]>> {
        key_in_path(self.path, prefix)
    }

    /// An owned copy, as `fn(HttpRequest) -> HttpResponse` handlers get it.
    pub fn to_owned(&self) -> HttpRequest {
        HttpRequest {
            method: self.method.to_string(),
            path: self.path.to_string(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

/// A request's headers, read in place (1.8): names lower-case, values as received.
#[derive(Debug, Clone, Copy)]
pub struct HttpHeaders<'a> {
    count: u32,
    /// `count` encoded (name, value) pairs, checked when the request was read.
    encoded: &'a [u8],
}

impl<'a> HttpHeaders<'a> {
    /// Every header, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut r = Reader::new(self.encoded);
        (0..self.count).map_while(move |_| Some((r.str().ok()?, r.bytes().ok()?)))
    }

    /// The first value of the header `name` (any case).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Where a borrowing handler writes its response (1.8): straight into the call's result
/// frame. A handler that sends nothing answers 500.
#[derive(Debug)]
pub struct HttpResponseWriter<'o> {
    out: &'o mut Vec<u8>,
    sent: bool,
}

impl<'o> HttpResponseWriter<'o> {
    pub(crate) fn new(out: &'o mut Vec<u8>) -> Self {
        out.clear();
        HttpResponseWriter { out, sent: false }
    }

    /// Sends the response; a second call replaces the first.
    pub fn send(&mut self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) {
        let header_bytes: usize = headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut w = Writer(std::mem::take(self.out));
        w.0.clear();
        w.0.reserve(1 + 2 + 4 + header_bytes + 4 + body.len());
        w.u8(0).u16(status).u32(headers.len() as u32);
        for (k, v) in headers {
            w.str(k).bytes(v);
        }
        w.bytes(body);
        *self.out = w.0;
        self.sent = true;
    }

    /// Sends an owned response, encoded as before 1.8.
    pub(crate) fn send_owned(&mut self, response: &HttpResponse) {
        self.out.clear();
        response.encode_ok_into(self.out);
        self.sent = true;
    }

    /// Whether a response was sent.
    pub fn sent(&self) -> bool {
        self.sent
    }
}

/// The key a request path names under `prefix` (e.g. `"/v1/key/"`), as
/// [`key_from_path`](super::key_from_path) reads it, borrowed from the path unless it
/// has percent-escapes (1.8).
///
/// ```
/// use std::borrow::Cow;
/// use kvs_plugin_api::guest::key_in_path;
/// assert_eq!(key_in_path("/v1/key/ab?x=1", "/v1/key/"), Some(Cow::Borrowed(&b"ab"[..])));
/// assert_eq!(key_in_path("/v1/key/a%2Fb", "/v1/key/").as_deref(), Some(&b"a/b"[..]));
/// assert_eq!(key_in_path("/v1/key/", "/v1/key/"), None);
/// ```
pub fn key_in_path<'p>(path: &'p str, prefix: &str) -> Option<Cow<'p, [u8]>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let raw = path.strip_prefix(prefix)?.as_bytes();
    if raw.is_empty() {
        return None;
    }
    if !raw.contains(&b'%') {
        return Some(Cow::Borrowed(raw));
    }
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
    Some(Cow::Owned(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestContext;
    use crate::wire::{HttpResponseRef, encode_request};

    fn encoded(headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
        let ctx = RequestContext {
            peer: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        encode_request(
            "GET",
            "/v1/key/a%2Fb?x=1",
            || headers.iter().copied(),
            body,
            &ctx,
        )
    }

    #[test]
    fn a_request_is_read_in_place_with_its_context_after_it() {
        let bytes = encoded(&[("host", b"h"), ("x-two", b"\x00\xff")], b"body");
        let (req, context) = HttpRequestRef::read(&bytes).unwrap();
        assert_eq!(
            (req.method, req.path, req.body),
            ("GET", "/v1/key/a%2Fb?x=1", &b"body"[..])
        );
        assert_eq!(req.headers.len(), 2);
        let all: Vec<_> = req.headers.iter().collect();
        assert_eq!(all, [("host", &b"h"[..]), ("x-two", &b"\x00\xff"[..])]);
        assert_eq!(req.headers.get("X-Two"), Some(&b"\x00\xff"[..]));
        assert_eq!(req.headers.get("absent"), None);
        assert_eq!(req.key("/v1/key/").as_deref(), Some(&b"a/b"[..]));
        let ctx = crate::wire::decode_context(&mut Reader::new(context)).unwrap();
        assert_eq!(ctx.peer.as_deref(), Some("127.0.0.1:9"));
        let owned = req.to_owned();
        assert_eq!(
            owned.headers[1],
            ("x-two".to_string(), b"\x00\xff".to_vec())
        );
    }

    #[test]
    fn a_truncated_request_is_an_error_not_a_panic() {
        let bytes = encoded(&[("host", b"h")], b"body");
        for cut in 0..bytes.len() - 1 {
            let _ = HttpRequestRef::read(&bytes[..cut]);
        }
        // Cut inside the headers: refused, not read with fewer headers.
        assert!(HttpRequestRef::read(&bytes[..30]).is_err());
    }

    #[test]
    fn a_response_is_written_as_the_host_reads_it() {
        let mut out = vec![9, 9, 9];
        let mut res = HttpResponseWriter::new(&mut out);
        assert!(!res.sent());
        res.send(500, &[], b"first");
        res.send(201, &[("content-type", b"text/plain")], b"made");
        assert!(res.sent());
        assert_eq!(out[0], 0, "an ok frame");
        let r = HttpResponseRef::decode(&out[1..]).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.headers, [("content-type", &b"text/plain"[..])]);
        assert_eq!(r.body, b"made");
    }

    #[test]
    fn keys_are_borrowed_unless_escaped() {
        assert!(matches!(
            key_in_path("/v1/key/plain", "/v1/key/"),
            Some(Cow::Borrowed(b"plain"))
        ));
        assert!(matches!(key_in_path("/v1/key/%41", "/v1/key/"), Some(Cow::Owned(k)) if k == b"A"));
        assert_eq!(key_in_path("/v1/key/?q", "/v1/key/"), None);
        assert_eq!(key_in_path("/v2/key/a", "/v1/key/"), None);
    }
}
