//! `wasm-rest`: the book's REST API in the WASM sandbox, with the native `rest`
//! plug-in's statuses. The host owns the listener, enforces the body limit (413) and
//! answers `/healthz` and `/readyz`; this handler sees every other request.

use kvs_plugin_api::export_wasm_http_frontend;
use kvs_plugin_api::guest::{self, HttpRequest, HttpResponse};

fn text(status: u16, message: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), b"text/plain; charset=utf-8".to_vec())],
        body: format!("{message}\n").into_bytes(),
    }
}

fn handle(req: HttpRequest) -> HttpResponse {
    let prefix = if req.path.starts_with("/v1/key/") {
        "/v1/key/"
    } else if req.path.starts_with("/v1/") {
        "/v1/"
    } else {
        return text(404, "not found");
    };
    if !matches!(req.method.as_str(), "GET" | "HEAD" | "PUT" | "DELETE") {
        let mut r = text(405, "method not allowed");
        r.headers
            .push(("allow".into(), b"GET,HEAD,PUT,DELETE".to_vec()));
        return r;
    }
    let Some(key) = guest::key_from_path(&req.path, prefix) else {
        return text(400, "empty key");
    };
    let result = match req.method.as_str() {
        "PUT" => guest::put(&key, &req.body).map(|()| HttpResponse {
            status: 201,
            ..Default::default()
        }),
        "DELETE" => guest::delete(&key).map(|()| HttpResponse {
            status: 200,
            ..Default::default()
        }),
        _ => guest::get(&key).map(|value| match value {
            Some(body) => HttpResponse {
                status: 200,
                headers: vec![("content-type".into(), b"application/octet-stream".to_vec())],
                body,
            },
            None => text(404, "no such key"),
        }),
    };
    result.unwrap_or_else(|e| text(e.http_status(), &e.message))
}

export_wasm_http_frontend!(
    handle,
    name: "wasm-rest",
    description: "the book's REST API, served from the WASM sandbox",
    capabilities: ["protocol:kvs-rest"],
);
