//! Template: a minimal WASM frontend. The host owns the HTTP listener and calls this
//! handler per request; it answers `GET {prefix}{key}` from the store. It takes one
//! setting from its `[plugins.NAME]` table, `prefix` (default `/v1/key/`), through the
//! optional `configure` export (plugin-api 1.2). See `wasm-plugins/rest` for the full API.

use std::sync::OnceLock;

use kvs_plugin_api::export_wasm_http_frontend;
use kvs_plugin_api::guest::{self, GuestError, HttpRequest, HttpResponse};
use serde::Deserialize;

/// The frontend's own keys in its table (the host has taken out its sandbox keys).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The path under which keys are served.
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_prefix() -> String {
    "/v1/key/".into()
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Called once per instance, before it serves; an error stops kvs at start-up.
fn configure(table: &str) -> Result<(), GuestError> {
    let config: Config =
        toml::from_str(table).map_err(|e| GuestError::invalid_input(e.to_string()))?;
    let _ = CONFIG.set(config);
    Ok(())
}

fn reply(status: u16, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body,
    }
}

fn handle(req: HttpRequest) -> HttpResponse {
    let prefix = CONFIG.get().map_or("/v1/key/", |c| c.prefix.as_str());
    match (req.method.as_str(), guest::key_from_path(&req.path, prefix)) {
        ("GET", Some(key)) => match guest::get(&key) {
            Ok(Some(value)) => reply(200, value),
            Ok(None) => reply(404, b"no such key\n".to_vec()),
            Err(e) => reply(e.http_status(), e.message.into_bytes()),
        },
        _ => reply(404, b"not found\n".to_vec()),
    }
}

export_wasm_http_frontend!(
    handle,
    configure: configure,
    name: "template-wasm-frontend",
    description: "template: read-only HTTP"
);
