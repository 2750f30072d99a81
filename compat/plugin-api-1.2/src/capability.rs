//! Capability strings a plug-in may list in its handshake: what it asks of the host, or
//! what it promises. Unknown ones are ignored, so a minor version may add more.

/// A WASM logger asks for the directory the operator grants (`data_dir`), mounted at
/// `/data` in the sandbox.
pub const FS_DATA_DIR: &str = "fs:data-dir";

/// A WASM frontend in HTTP mode (the host owns the listener and calls its handler per
/// request). Every WASM frontend declares it; `export_wasm_http_frontend!` does.
pub const FRONTEND_HTTP: &str = "frontend:http";

/// A frontend that serves the book's REST API at its first endpoint: `PUT`, `GET` and
/// `DELETE /v1/key/{key}` answered 201, 200 / 404 and 200. `kvs plugins check` then
/// round-trips a key through it (1.2). Frontends that speak something else declare no
/// protocol and are checked for start, endpoint and stop only.
pub const PROTOCOL_KVS_REST: &str = "protocol:kvs-rest";
