//! Template: a minimal WASM frontend. The host owns the HTTP listener and calls this
//! handler per request; it answers `GET /v1/key/{key}` from the store. See
//! `wasm-plugins/rest` for the full API.

use kvs_plugin_api::export_wasm_http_frontend;
use kvs_plugin_api::guest::{self, HttpRequest, HttpResponse};

fn reply(status: u16, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body,
    }
}

fn handle(req: HttpRequest) -> HttpResponse {
    match (req.method.as_str(), req.path.strip_prefix("/v1/key/")) {
        ("GET", Some(key)) => match guest::get(key.as_bytes()) {
            Ok(Some(value)) => reply(200, value),
            Ok(None) => reply(404, b"no such key\n".to_vec()),
            Err(e) => reply(503, e.message.into_bytes()),
        },
        _ => reply(404, b"not found\n".to_vec()),
    }
}

export_wasm_http_frontend!(handle, name: "template-wasm-frontend", description: "template: read-only HTTP");
