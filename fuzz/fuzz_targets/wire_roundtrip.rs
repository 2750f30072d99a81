//! The host<->guest wire format (`kvs_plugin_api::wire`) from the other side: arbitrary
//! structured values, encoded, then decoded — both directions (host -> guest: HTTP
//! request, request context, appended events, stream open; guest -> host: handshake,
//! HTTP response, log record, stream output, replayed events, result frames).
//!
//! Checks: decode(encode(v)) == v, also with arbitrary bytes after the message (a later
//! minor may append fields; readers ignore bytes they do not know); a context's
//! deadline comes back whole milliseconds (sub-millisecond parts dropped, saturating).
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use kvs_plugin_api::context::RequestContext;
use kvs_plugin_api::error::ErrorCode;
use kvs_plugin_api::event::EventKind;
use kvs_plugin_api::handshake::PluginKind;
use kvs_plugin_api::log::Level;
use kvs_plugin_api::wire::{
    self, Event, Handshake, HttpRequest, HttpResponse, LogRecord, Reader, StreamOutput, Writer,
    decode_context, decode_events, encode_context, encode_events,
};
use libfuzzer_sys::fuzz_target;

fn headers(u: &mut Unstructured<'_>) -> Result<Vec<(String, Vec<u8>)>> {
    u.arbitrary_iter()?.collect()
}

fn context(u: &mut Unstructured<'_>) -> Result<RequestContext> {
    Ok(RequestContext {
        bearer_token: u.arbitrary()?,
        client_identity: u.arbitrary()?,
        traceparent: u.arbitrary()?,
        tracestate: u.arbitrary()?,
        deadline: u.arbitrary::<Option<Duration>>()?,
        peer: u.arbitrary()?,
    })
}

/// What a context is once it has crossed the wire: the deadline in whole milliseconds.
fn on_the_wire(ctx: &RequestContext) -> RequestContext {
    RequestContext {
        deadline: ctx
            .deadline
            .map(|d| Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        ..ctx.clone()
    }
}

#[derive(Debug)]
struct Input<'a> {
    handshake: Handshake,
    request: HttpRequest,
    ctx: RequestContext,
    response: HttpResponse,
    log: LogRecord,
    stream: StreamOutput,
    events: Vec<(u64, u8, &'a [u8], &'a [u8])>,
    code: u8,
    message: String,
    payload: &'a [u8],
    trailer: &'a [u8],
}

impl<'a> Arbitrary<'a> for Input<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Input {
            handshake: Handshake {
                api_major: u.arbitrary()?,
                api_minor: u.arbitrary()?,
                kind: PluginKind(u.arbitrary()?),
                name: u.arbitrary()?,
                version: u.arbitrary()?,
                description: u.arbitrary()?,
                capabilities: u.arbitrary()?,
            },
            request: HttpRequest {
                method: u.arbitrary()?,
                path: u.arbitrary()?,
                headers: headers(u)?,
                body: u.arbitrary()?,
            },
            ctx: context(u)?,
            response: HttpResponse {
                status: u.arbitrary()?,
                headers: headers(u)?,
                body: u.arbitrary()?,
            },
            log: LogRecord {
                level: Level(u.arbitrary()?),
                target: u.arbitrary()?,
                message: u.arbitrary()?,
                fields: u.arbitrary()?,
            },
            stream: StreamOutput {
                close: u.arbitrary()?,
                data: u.arbitrary()?,
            },
            events: u.arbitrary()?,
            code: u.arbitrary()?,
            message: u.arbitrary()?,
            payload: u.arbitrary()?,
            trailer: u.arbitrary()?,
        })
    }
}

/// `msg` followed by the trailer: what a newer minor's encoder might send.
fn with(msg: &[u8], trailer: &[u8]) -> Vec<u8> {
    [msg, trailer].concat()
}

fuzz_target!(|input: Input<'_>| {
    let t = input.trailer;

    // Guest -> host.
    let h = &input.handshake;
    assert_eq!(Handshake::decode(&with(&h.encode(), t)).unwrap(), *h);
    assert_eq!(
        Handshake::decode_version(&h.encode()).unwrap(),
        (h.api_major, h.api_minor)
    );
    let resp = &input.response;
    assert_eq!(
        HttpResponse::decode(&with(&resp.encode(), t)).unwrap(),
        *resp
    );
    let log = &input.log;
    assert_eq!(LogRecord::decode(&with(&log.encode(), t)).unwrap(), *log);
    let out = &input.stream;
    assert_eq!(StreamOutput::decode(&with(&out.encode(), t)).unwrap(), *out);
    assert_eq!(
        wire::result(&wire::ok(input.payload)).unwrap(),
        Ok(input.payload)
    );
    let code = ErrorCode(input.code);
    let want = if input.code == 0 {
        ErrorCode::INTERNAL
    } else {
        code
    };
    assert_eq!(
        wire::result(&with(&wire::err(code, &input.message), t)).unwrap(),
        Err((want, input.message.clone()))
    );

    // Events: appended (host -> guest) and replayed (guest -> host) alike.
    let events: Vec<Event<'_>> = input
        .events
        .iter()
        .map(|&(sequence, kind, key, value)| Event {
            sequence,
            kind: EventKind(kind),
            key,
            value,
        })
        .collect();
    let mut w = Writer::default();
    encode_events(&mut w, events.iter().copied());
    let len = w.0.len();
    w.0.extend_from_slice(t);
    let mut r = Reader::new(&w.0);
    assert_eq!(decode_events(&mut r).unwrap(), events);
    assert_eq!(r.rest(), t, "the events' bytes, no more, no less ({len})");

    // Host -> guest.
    let req = &input.request;
    let ctx = &input.ctx;
    assert_eq!(HttpRequest::decode(&with(&req.encode(), t)).unwrap(), *req);
    let both = req.encode_with_context(ctx);
    // A 1.0 reader ignores the context; a 1.1 reader gets it back.
    assert_eq!(HttpRequest::decode(&both).unwrap(), *req);
    assert_eq!(
        HttpRequest::decode_with_context(&with(&both, t)).unwrap(),
        (req.clone(), on_the_wire(ctx))
    );
    // A stream's open message: conn:u64 context.
    let mut w = Writer::default();
    w.u64(7);
    encode_context(&mut w, ctx);
    w.0.extend_from_slice(t);
    let mut r = Reader::new(&w.0);
    assert_eq!(r.u64().unwrap(), 7);
    assert_eq!(decode_context(&mut r).unwrap(), on_the_wire(ctx));
    assert_eq!(r.rest(), t);
});
