use super::*;
use crate::context::RequestContext;
use crate::error::ErrorCode;
use crate::event::EventKind;
use crate::handshake::PluginKind;
use crate::log::Level;

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
