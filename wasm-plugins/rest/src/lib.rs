//! `wasm-rest`: the book's REST API in the WASM sandbox, with the native `rest`
//! plug-in's statuses. The host owns the listener, enforces the body limit (413) and
//! answers `/healthz` and `/readyz`; this handler sees every other request.
//!
//! It is a borrowing handler (plugin-api 1.8): the request is read where the host wrote
//! it and the response written straight into the call's result, and a GET's value is
//! answered from the buffer the host wrote it into — nothing is allocated per request
//! but for errors and percent-escaped keys.

use kvs_plugin_api::export_wasm_http_frontend;
use kvs_plugin_api::guest::{self, HttpRequestRef, HttpResponseWriter};

const TEXT: &[(&str, &[u8])] = &[("content-type", b"text/plain; charset=utf-8")];
const OCTETS: &[(&str, &[u8])] = &[("content-type", b"application/octet-stream")];

fn handle(req: &HttpRequestRef<'_>, res: &mut HttpResponseWriter<'_>) {
    let prefix = if req.path.starts_with("/v1/key/") {
        "/v1/key/"
    } else if req.path.starts_with("/v1/") {
        "/v1/"
    } else {
        return res.send(404, TEXT, b"not found\n");
    };
    if !matches!(req.method, "GET" | "HEAD" | "PUT" | "DELETE") {
        let allow = [TEXT[0], ("allow", b"GET,HEAD,PUT,DELETE".as_slice())];
        return res.send(405, &allow, b"method not allowed\n");
    }
    let Some(key) = req.key(prefix) else {
        return res.send(400, TEXT, b"empty key\n");
    };
    let result = match req.method {
        "PUT" => guest::put(&key, req.body).map(|()| res.send(201, &[], b"")),
        "DELETE" => guest::delete(&key).map(|()| res.send(200, &[], b"")),
        _ => guest::get_with(&key, |value| match value {
            Some(body) => res.send(200, OCTETS, body),
            None => res.send(404, TEXT, b"no such key\n"),
        }),
    };
    if let Err(e) = result {
        res.send(e.http_status(), TEXT, format!("{}\n", e.message).as_bytes());
    }
}

export_wasm_http_frontend!(
    handle,
    name: "wasm-rest",
    description: "the book's REST API, served from the WASM sandbox",
    capabilities: ["protocol:kvs-rest"],
);
