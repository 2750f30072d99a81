//! WASM HTTP frontends: the request context, the exports `export_wasm_http_frontend!`
//! generates, and [`key_from_path`].

use super::http_ref::{HttpRequestRef, HttpResponseWriter, key_in_path};
use super::{GuestError, HttpRequest, HttpResponse, frame};
use crate::ErrorCode;
use crate::wire;

std::thread_local! {
    /// The encoded context of the request being handled (empty: anonymous), decoded
    /// only when the handler asks for it.
    static CONTEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The context of the request being handled: what the client presented, as the host
/// read it (1.1). Anonymous outside a request.
pub fn request_context() -> crate::RequestContext {
    CONTEXT.with_borrow(|bytes| {
        if bytes.is_empty() {
            return crate::RequestContext::default();
        }
        wire::decode_context(&mut wire::Reader::new(bytes)).unwrap_or_default()
    })
}

/// A function that handles a WASM HTTP frontend's requests: `fn(HttpRequest) ->
/// HttpResponse`, or (1.8) `fn(&HttpRequestRef<'_>, &mut HttpResponseWriter<'_>)`,
/// which reads the request in place and writes its response straight into the
/// call's result (no allocation for either). [`export_wasm_http_frontend!`](crate::export_wasm_http_frontend)
/// takes both; `Form` tells them apart ([`OwnedHandler`] or [`BorrowingHandler`]).
pub trait HttpHandler<Form> {
    /// Handles the request `req`, writing the response into `res`.
    fn handle(&self, req: &HttpRequestRef<'_>, res: &mut HttpResponseWriter<'_>);
}

/// The form of `fn(HttpRequest) -> HttpResponse` handlers (1.8).
#[derive(Debug)]
pub enum OwnedHandler {}

/// The form of `fn(&HttpRequestRef<'_>, &mut HttpResponseWriter<'_>)` handlers (1.8).
#[derive(Debug)]
pub enum BorrowingHandler {}

impl<F: Fn(HttpRequest) -> HttpResponse> HttpHandler<OwnedHandler> for F {
    fn handle(&self, req: &HttpRequestRef<'_>, res: &mut HttpResponseWriter<'_>) {
        res.send_owned(&self(req.to_owned()));
    }
}

impl<F: Fn(&HttpRequestRef<'_>, &mut HttpResponseWriter<'_>)> HttpHandler<BorrowingHandler> for F {
    fn handle(&self, req: &HttpRequestRef<'_>, res: &mut HttpResponseWriter<'_>) {
        self(req, res)
    }
}

/// Runs an HTTP frontend export.
#[doc(hidden)]
pub fn http_call(handler: fn(HttpRequest) -> HttpResponse, input: &[u8]) -> Vec<u8> {
    http_handle(handler, input)
}

/// Runs an HTTP frontend export, its result frame written into `out` (empty), whose
/// buffer a direct call reuses from request to request (1.4).
#[doc(hidden)]
pub fn http_call_into(handler: fn(HttpRequest) -> HttpResponse, input: &[u8], out: &mut Vec<u8>) {
    http_handle_into(handler, input, out)
}

/// Runs an HTTP frontend export with a handler of either form (1.8).
#[doc(hidden)]
pub fn http_handle<Form>(handler: impl HttpHandler<Form>, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    http_handle_into(handler, input, &mut out);
    out
}

/// Runs an HTTP frontend export with a handler of either form, its result frame written
/// into `out` (1.8).
#[doc(hidden)]
pub fn http_handle_into<Form>(handler: impl HttpHandler<Form>, input: &[u8], out: &mut Vec<u8>) {
    match HttpRequestRef::read(input) {
        Ok((req, context)) => {
            CONTEXT.with_borrow_mut(|c| {
                c.clear();
                c.extend_from_slice(context);
            });
            let mut res = HttpResponseWriter::new(out);
            handler.handle(&req, &mut res);
            if !res.sent() {
                res.send(500, &[], b"the handler sent no response\n");
            }
            CONTEXT.with_borrow_mut(Vec::clear);
        }
        Err(e) => *out = wire::err(ErrorCode::INVALID_INPUT, &e.to_string()),
    }
}

/// Runs an HTTP frontend's `configure` function on its table (1.2).
#[doc(hidden)]
pub fn configure_call(configure: fn(&str) -> Result<(), GuestError>, input: &[u8]) -> Vec<u8> {
    frame((|| {
        let table = std::str::from_utf8(input)
            .map_err(|_| GuestError::invalid_input("config is not UTF-8"))?;
        configure(table)?;
        Ok(Vec::new())
    })())
}

/// The key a request path names under `prefix` (e.g. `"/v1/key/"`): the rest of the
/// path without any `?query`, percent-decoded to bytes (`%2F`, `%00`, UTF-8 all work).
/// `None` if the path is not under `prefix` or the key is empty.
///
/// ```
/// use kvs_plugin_api::guest::key_from_path;
/// assert_eq!(key_from_path("/v1/key/a%2Fb?x=1", "/v1/key/"), Some(b"a/b".to_vec()));
/// assert_eq!(key_from_path("/v1/key/", "/v1/key/"), None);
/// assert_eq!(key_from_path("/other", "/v1/key/"), None);
/// ```
pub fn key_from_path(path: &str, prefix: &str) -> Option<Vec<u8>> {
    key_in_path(path, prefix).map(std::borrow::Cow::into_owned)
}

/// Exports a WASM HTTP frontend: `export_wasm_http_frontend!(handle, name: "wasm-rest",
/// description: "...");` where `fn handle(HttpRequest) -> HttpResponse`, or (1.8)
/// `fn handle(req: &HttpRequestRef<'_>, res: &mut HttpResponseWriter<'_>)`, which
/// reads the request in place and writes the response into the call's result (see
/// [`HttpHandler`](crate::guest::HttpHandler)).
///
/// With `configure: my_configure` before `name:` (1.2), the frontend also takes its
/// config table: `fn my_configure(table: &str) -> Result<(), GuestError>` gets the
/// operator's `[plugins.NAME]` table as TOML text, without the host's sandbox keys, once
/// per instance before that instance serves; an error stops kvs at start-up with its
/// message, so name the bad key. Keep what it parsed in a `static` (`OnceLock`). Without
/// `configure`, any key besides the sandbox keys is refused by the host.
#[macro_export]
macro_rules! export_wasm_http_frontend {
    ($handler:path, configure: $configure:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_wasm_http_frontend!(
            @extism $handler, name: $name, description: $desc, capabilities: [$($($cap),*)?]
        );
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_http_configure() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::configure_call($configure, &input))
        }
        $crate::__kvs_direct_exports!(
            |export: &$crate::wasm_abi::GuestExport, input: &[u8], out: &mut Vec<u8>| {
                match export.name {
                    "kvs_http_handle" => $crate::guest::http_handle_into($handler, input, out),
                    "kvs_http_configure" => {
                        *out = $crate::guest::configure_call($configure, input)
                    }
                    _ => return false,
                }
                true
            }
        );
    };
    ($handler:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_wasm_http_frontend!(@extism $handler, name: $name, description: $desc,
            capabilities: [$($($cap),*)?]);
        $crate::__kvs_direct_exports!(
            |export: &$crate::wasm_abi::GuestExport, input: &[u8], out: &mut Vec<u8>| {
                if export.name != "kvs_http_handle" {
                    return false;
                }
                $crate::guest::http_handle_into($handler, input, out);
                true
            }
        );
    };
    (@extism $handler:path, name: $name:literal, description: $desc:literal,
     capabilities: [$($cap:literal),*]) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_handshake() -> i32 {
            $crate::guest::respond($crate::guest::handshake(
                $crate::PluginKind::FRONTEND,
                $name,
                env!("CARGO_PKG_VERSION"),
                $desc,
                &[$crate::capability::FRONTEND_HTTP $(, $cap)*],
            ))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_http_handle() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::http_handle($handler, &input))
        }
    };
}
