//! docs/wasm-abi.md, the WASM contract as a language-neutral specification, lists every
//! host function and export of [`wasm_abi`]'s table with the minor that introduced it
//! and its WebAssembly type: a row added to the table (a new minor's host function or
//! export) fails this test until the specification describes it.

use kvs_plugin_api::wasm_abi::{self, ValType};

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/wasm-abi.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let results = if results.is_empty() {
        "()".to_string()
    } else {
        list(results)
    };
    format!("({}) -> {results}", list(params))
}

#[test]
fn the_specification_lists_every_host_function_and_export() {
    let spec = spec();
    assert!(
        spec.contains(&format!("`{}`", wasm_abi::HOST_MODULE)),
        "docs/wasm-abi.md does not name the host functions' module {}",
        wasm_abi::HOST_MODULE
    );
    let mut missing = Vec::new();
    for f in wasm_abi::HOST_FUNCTIONS {
        let row = format!(
            "| `{}` | 1.{} | `{}` |",
            f.name,
            f.since_minor,
            signature(f.params, f.results)
        );
        if !spec.lines().any(|l| l.starts_with(&row)) {
            missing.push(row);
        }
    }
    for e in wasm_abi::GUEST_EXPORTS {
        let row = format!(
            "| `{}` | 1.{} | `{}` | {} | {} |",
            e.name,
            e.since_minor,
            signature(e.params, e.results),
            e.exporter.describe(),
            if e.required { "yes" } else { "no" }
        );
        if !spec.lines().any(|l| l.starts_with(&row)) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/wasm-abi.md lacks these rows of its host-function and export tables \
         (describe each in its own section too):\n{}",
        missing.join("\n")
    );
}

/// The worked examples of docs/wasm-abi.md (section 6.11), each encoded here with the
/// Rust codec the host uses: name, what the spec says it is, bytes.
fn examples() -> Vec<(&'static str, Vec<u8>)> {
    use kvs_plugin_api::wire::{self, Event, HttpRequest, HttpResponse, LogRecord, Writer};
    use kvs_plugin_api::{Action, ErrorCode, EventKind, PluginKind, RequestContext, log::Level};

    let events = [
        Event {
            sequence: 7,
            kind: EventKind::PUT,
            key: b"k",
            value: b"v1",
        },
        Event {
            sequence: 8,
            kind: EventKind::DELETE,
            key: b"k",
            value: b"",
        },
    ];
    let mut batch = Writer::default();
    wire::encode_events(&mut batch, events.iter().copied());
    let mut replay = Writer::default();
    replay.u8(0).u64(0).u8(1);
    wire::encode_events(&mut replay, events.iter().copied());
    let request = HttpRequest {
        method: "PUT".into(),
        path: "/v1/key/a%2Fb".into(),
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
        body: b"hi".to_vec(),
    };
    let context = RequestContext {
        bearer_token: Some("t".into()),
        peer: Some("127.0.0.1:9".into()),
        ..RequestContext::default()
    };
    let response = HttpResponse {
        status: 201,
        headers: vec![],
        body: vec![],
    };
    let mut put = Writer::default();
    put.bytes(b"a/b").bytes(b"hi");
    let mut found = Writer::default();
    found.u8(1).bytes(b"hi");
    let mut check = Writer::default();
    check.u8(Action::PUT.0).bytes(b"k");
    let mut stats = Writer::default();
    stats.u64(2).u64(10);
    let mut stream_in = Writer::default();
    stream_in.u64(3).bytes(b"PING\r\n");
    let stream_out = wire::StreamOutput {
        close: false,
        data: b"+PONG\r\n".to_vec(),
    };
    vec![
        (
            "handshake",
            wire::Handshake {
                api_major: 1,
                api_minor: 1,
                kind: PluginKind::LOGGER,
                name: "c-logger".into(),
                version: "0.1.0".into(),
                description: "d".into(),
                capabilities: vec!["fs:data-dir".into()],
            }
            .encode(),
        ),
        ("events", batch.0),
        ("replay_out", replay.0),
        ("http_request", request.encode_with_context(&context)),
        ("http_response_out", wire::ok(&response.encode())),
        ("kvs_put_in", put.0),
        ("kvs_get_out_found", wire::ok(&found.0)),
        ("kvs_get_out_missing", wire::ok(&[0])),
        ("error_frame", wire::err(ErrorCode::PERMISSION_DENIED, "no")),
        (
            "log_record",
            LogRecord {
                level: Level::INFO,
                target: String::new(),
                message: "hi".into(),
                fields: vec![("k".into(), "v".into())],
            }
            .encode(),
        ),
        ("kvs_stats_out", wire::ok(&stats.0)),
        ("kvs_check_in", check.0),
        ("stream_data_in", stream_in.0),
        ("stream_data_out", wire::ok(&stream_out.encode())),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The spec's example blocks: "```text" blocks whose first line is `example NAME`,
/// then hex bytes (whitespace-separated; `#` starts a comment).
fn spec_examples(spec: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```text" {
            continue;
        }
        let mut block: Vec<&str> = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            block.push(l);
        }
        let Some(name) = block
            .first()
            .and_then(|l| l.trim().strip_prefix("example "))
        else {
            continue;
        };
        let bytes = block[1..]
            .iter()
            .flat_map(|l| l.split('#').next().unwrap().split_whitespace())
            .map(|h| {
                u8::from_str_radix(h, 16)
                    .unwrap_or_else(|_| panic!("example {name}: {h:?} is not a hex byte"))
            })
            .collect();
        out.push((name.to_string(), bytes));
    }
    out
}

#[test]
fn the_specification_s_examples_are_what_the_codec_encodes() {
    let ours = examples();
    if std::env::var_os("KVS_PRINT_EXAMPLES").is_some() {
        for (name, bytes) in &ours {
            println!("```text\nexample {name}\n{}\n```\n", hex(bytes));
        }
    }
    let spec = spec_examples(&spec());
    let mut problems = Vec::new();
    for (name, bytes) in &ours {
        match spec.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("example {name} is missing")),
            Some((_, theirs)) if theirs != bytes => problems.push(format!(
                "example {name} differs; the codec encodes:\n{}",
                hex(bytes)
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &spec {
        if !ours.iter().any(|(n, _)| n == name) {
            problems.push(format!(
                "example {name} is not checked: add it to this test"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/wasm-abi.md's worked examples:\n{}",
        problems.join("\n")
    );
}
