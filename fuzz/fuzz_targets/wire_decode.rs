//! The host<->guest wire format (`kvs_plugin_api::wire`) decoding arbitrary bytes: what
//! a `.wasm` guest hands the host (handshake, HTTP response, log record, stream output,
//! replayed events, result frames) and what the host hands a guest (HTTP request and
//! its context, appended events, a stream's context).
//!
//! Checks: every decode function returns a value or a `WireError`, never panics or
//! over-allocates; whatever decodes, encoded again, decodes to the same value (the
//! encoding is canonical for everything a decoder accepts).
#![no_main]

use kvs_plugin_api::wire::{
    self, Handshake, HttpRequest, HttpResponse, LogRecord, Reader, StreamOutput, Writer,
    decode_context, decode_events, encode_context, encode_events,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((major, minor)) = Handshake::decode_version(data) {
        assert_eq!(
            &data[8..12],
            [major.to_le_bytes(), minor.to_le_bytes()].concat()
        );
    }
    if let Ok(h) = Handshake::decode(data) {
        assert!(Handshake::decode_version(data).is_ok());
        assert_eq!(Handshake::decode(&h.encode()).unwrap(), h);
    }
    if let Ok(req) = HttpRequest::decode(data) {
        assert_eq!(HttpRequest::decode(&req.encode()).unwrap(), req);
    }
    if let Ok((req, ctx)) = HttpRequest::decode_with_context(data) {
        let again = HttpRequest::decode_with_context(&req.encode_with_context(&ctx)).unwrap();
        assert_eq!(again, (req.clone(), ctx));
        assert_eq!(HttpRequest::decode(data).unwrap(), req);
    }
    if let Ok(resp) = HttpResponse::decode(data) {
        assert_eq!(HttpResponse::decode(&resp.encode()).unwrap(), resp);
    }
    if let Ok(log) = LogRecord::decode(data) {
        assert_eq!(LogRecord::decode(&log.encode()).unwrap(), log);
    }
    if let Ok(out) = StreamOutput::decode(data) {
        assert_eq!(StreamOutput::decode(&out.encode()).unwrap(), out);
    }
    let mut r = Reader::new(data);
    if let Ok(events) = decode_events(&mut r) {
        let mut w = Writer::default();
        encode_events(&mut w, events.iter().copied());
        assert_eq!(decode_events(&mut Reader::new(&w.0)).unwrap(), events);
        // Exactly the events' bytes were read; the rest is left for what follows.
        assert_eq!(data.len() - r.rest().len(), w.0.len());
    }
    // A stream's open message: conn:u64 context.
    let mut r = Reader::new(data);
    if let Ok(ctx) = r.u64().and_then(|_| decode_context(&mut r)) {
        let mut w = Writer::default();
        encode_context(&mut w, &ctx);
        assert_eq!(decode_context(&mut Reader::new(&w.0)).unwrap(), ctx);
    }
    // A stream's data message: conn:u64 data:bytes.
    let mut r = Reader::new(data);
    if let Ok(bytes) = r.u64().and_then(|_| r.bytes()) {
        assert!(bytes.len() <= data.len() - 12);
    }
    match wire::result(data) {
        Ok(Ok(payload)) => assert_eq!(wire::ok(payload), data),
        Ok(Err((code, message))) => {
            assert_ne!(code.0, 0);
            assert_eq!(
                wire::result(&wire::err(code, &message)).unwrap(),
                Err((code, message))
            );
        }
        Err(_) => {}
    }
});
