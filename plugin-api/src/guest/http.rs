//! WASM HTTP frontends: the request context, the exports `export_wasm_http_frontend!`
//! generates, and [`key_from_path`].

use super::{GuestError, HttpRequest, HttpResponse, frame};
use crate::ErrorCode;
use crate::wire;

std::thread_local! {
    static CONTEXT: std::cell::RefCell<crate::RequestContext> = Default::default();
}

/// The context of the request being handled: what the client presented, as the host
/// read it (1.1). Anonymous outside a request.
pub fn request_context() -> crate::RequestContext {
    CONTEXT.with(|c| c.borrow().clone())
}

/// Runs an HTTP frontend export.
#[doc(hidden)]
pub fn http_call(handler: fn(HttpRequest) -> HttpResponse, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    http_call_into(handler, input, &mut out);
    out
}

/// Runs an HTTP frontend export, its result frame written into `out` (empty), whose
/// buffer a direct call reuses from request to request (1.4).
#[doc(hidden)]
pub fn http_call_into(handler: fn(HttpRequest) -> HttpResponse, input: &[u8], out: &mut Vec<u8>) {
    match HttpRequest::decode_with_context(input) {
        Ok((req, ctx)) => {
            CONTEXT.with(|c| *c.borrow_mut() = ctx);
            let response = handler(req);
            CONTEXT.with(|c| *c.borrow_mut() = Default::default());
            response.encode_ok_into(out);
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
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let raw = path.strip_prefix(prefix)?.as_bytes();
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
    (!key.is_empty()).then_some(key)
}

/// Exports a WASM HTTP frontend: `export_wasm_http_frontend!(handle, name: "wasm-rest",
/// description: "...");` where `fn handle(HttpRequest) -> HttpResponse`.
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
                    "kvs_http_handle" => $crate::guest::http_call_into($handler, input, out),
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
                $crate::guest::http_call_into($handler, input, out);
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
            $crate::guest::respond($crate::guest::http_call($handler, &input))
        }
    };
}
