//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/plugins`, owned by the host so
//! it works whatever frontends are loaded (or none), like etcd's `--listen-metrics-urls`.
//!
//! Off unless `[admin] listen` is set (the shipped `config.toml` sets `127.0.0.1:9090`).
//! It is served by `kvs-serve`, so it takes the same `tls`, `max_connections` and
//! `max_header_bytes` keys as a frontend's listener.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Result, anyhow};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

pub use kvs_config::AdminConfig;

use crate::lifecycle::{Ask, ReloadSlot};
use crate::store::Store;

/// One plug-in in use, as `/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// `logger` or `frontend`: what kvs uses it as.
    pub role: &'static str,
    /// Its declared name.
    pub name: String,
    /// `native` or `wasm`.
    pub format: String,
    /// Its own version.
    pub version: String,
    /// The plugin-api version it was built against, e.g. `1.2`.
    pub api: String,
    /// The file it was loaded from.
    pub file: String,
    /// Where a frontend serves.
    pub endpoints: Vec<String>,
    /// `ok`, `unhealthy` (a logger reporting trouble), `starting` or `stopping`.
    pub health: String,
    /// The hex SHA-256 of the file as loaded.
    pub sha256: String,
    /// Set when the file at `file` is no longer the one loaded: the SHA-256 of the one
    /// there now (`kvs reload` would swap it in), or `missing`. Filled in when asked.
    pub waiting: Option<String>,
}

/// What `/plugins` lists; filled in as kvs starts its plug-ins.
pub type PluginList = Arc<RwLock<Vec<PluginStatus>>>;

#[derive(Clone)]
struct AdminState {
    store: Arc<Store>,
    plugins: PluginList,
    reload: ReloadSlot,
}

/// The running admin listener.
pub struct Admin {
    server: kvs_serve::Server,
    tls: bool,
}

impl Admin {
    /// Binds and serves.
    pub fn start(
        config: &AdminConfig,
        store: Arc<Store>,
        plugins: PluginList,
        reload: ReloadSlot,
    ) -> Result<Admin> {
        let settings = kvs_serve::Settings {
            listen: &config.listen,
            table: "[admin]",
            worker_threads: 1,
            max_blocking_threads: Some(1),
            thread_name: "kvs-admin",
            protocol: "HTTP",
            tls: config.tls.as_ref(),
            alpn: kvs_serve::Settings::HTTP_ALPN,
            max_connections: config.max_connections,
            max_connections_per_peer: config.max_connections_per_peer,
            // The admin listener is what the descriptor reserve is kept for.
            descriptor_reserve: false,
            max_header_bytes: config.max_header_bytes,
            deadlines: kvs_serve::Deadlines::from_ms(
                config.handshake_timeout_ms,
                config.idle_timeout_ms,
                "[admin]",
            )?,
            log: crate::telemetry::listener_log,
        };
        let server = kvs_serve::Server::start(&settings, |_stopping| {
            axum::Router::new()
                .route("/metrics", get(metrics))
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/readyz", get(readyz))
                .route("/plugins", get(plugins_json))
                .route("/reload", axum::routing::post(reload_now))
                // A HEAD would otherwise run the GET handler: a whole backup.
                .route(
                    "/backup",
                    get(backup)
                        .head(|| async { (StatusCode::METHOD_NOT_ALLOWED, "GET /backup only\n") }),
                )
                .route("/migrate", axum::routing::post(migrate_now))
                .with_state(AdminState {
                    store,
                    plugins,
                    reload,
                })
        })
        .map_err(|e| anyhow!("cannot start the admin listener: {e}"))?;
        Ok(Admin {
            server,
            tls: config.tls.is_some(),
        })
    }

    /// Its URL, e.g. `http://127.0.0.1:9090`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.server.local_addr())
    }

    /// Stops serving (scrapes in flight get a second to finish).
    pub fn stop(mut self) {
        let _ = self.server.stop(Duration::from_secs(1));
    }
}

/// With `[auth]` on, `/metrics` and `/plugins` need a caller to whom
/// `[auth.principals]` gives a role (the request hook's `check_admin`): 401 with
/// `WWW-Authenticate: Bearer` without credentials or with a bad token, 403 for a
/// caller without a role. `/healthz` and `/readyz` stay public.
fn refused(store: &Store, request: &axum::extract::Request) -> Option<Response> {
    refused_unless(store, request, |store, caller| store.admit_admin(caller))
}

/// [`refused`], deciding with `admit`.
fn refused_unless(
    store: &Store,
    request: &axum::extract::Request,
    admit: impl FnOnce(&Store, &crate::caller::Caller<'_>) -> Result<(), kvs_plugin_api::PluginError>,
) -> Option<Response> {
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let mut ctx = kvs_plugin_api::RequestContext::from_headers(headers);
    if let Some(axum::extract::ConnectInfo(peer)) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<kvs_serve::Peer>>()
    {
        ctx.peer = Some(String::from(&*peer.text));
        ctx.client_identity = peer.identity.as_deref().map(String::from);
    }
    let caller = crate::caller::Caller::from_context("admin", &ctx, std::time::Instant::now());
    let error = admit(store, &caller).err()?;
    let mut response = if error.code() == kvs_plugin_api::ErrorCode::UNAUTHENTICATED {
        let mut r = (StatusCode::UNAUTHORIZED, format!("{}\n", error.message())).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    } else {
        (StatusCode::FORBIDDEN, format!("{}\n", error.message())).into_response()
    };
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Some(response)
}

async fn metrics(State(state): State<AdminState>, request: axum::extract::Request) -> Response {
    if let Some(refused) = refused(&state.store, &request) {
        return refused;
    }
    let store = &state.store;
    let m = store.metrics();
    // What is cheap to read now rather than to count as it happens.
    m.keys.set(store.len() as i64);
    m.queue_depth.set(store.queue_depth() as i64);
    store.overload().publish();
    m.logger_healthy.set(i64::from(store.logger_healthy()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.store.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn plugins_json(
    State(state): State<AdminState>,
    request: axum::extract::Request,
) -> Response {
    if let Some(refused) = refused(&state.store, &request) {
        return refused;
    }
    use crate::store::Phase;
    let phase = state.store.phase();
    let logger_healthy = state.store.logger_healthy();
    let list: Vec<PluginStatus> = state
        .plugins
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .map(|mut p| {
            p.health = match phase {
                Phase::Starting => "starting",
                Phase::Draining | Phase::Stopped => "stopping",
                Phase::Serving if p.role == "logger" && !logger_healthy => "unhealthy",
                Phase::Serving => "ok",
            }
            .into();
            p.waiting = match std::fs::read(&p.file) {
                Ok(bytes) => {
                    let now = hex_sha256(&bytes);
                    (now != p.sha256).then_some(now)
                }
                Err(_) => Some("missing".into()),
            };
            p
        })
        .collect();
    let body = serde_json::to_string_pretty(&list).expect("plain data serializes");
    ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /reload`: what `kvs reload` and SIGHUP do — re-read the config file and the
/// plugins directory and apply what changed. Answers the report as JSON: 200 when
/// everything was applied, 422 when something was refused (the report says what and
/// why; what could be applied was). Asked of `check_admin`, like `/plugins`.
async fn reload_now(State(state): State<AdminState>, request: axum::extract::Request) -> Response {
    if let Some(refused) = refused(&state.store, &request) {
        return refused;
    }
    let Some(reload) = state.reload.get().cloned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "kvs is still starting (or was started without a config to reload); retry later\n",
        )
            .into_response();
    };
    answer(reload, Ask::Reload).await
}

/// Runs `ask` on the control loop and answers its report.
async fn answer(reload: crate::lifecycle::ReloadFn, ask: Ask) -> Response {
    let report = match tokio::task::spawn_blocking(move || reload(ask)).await {
        Ok(report) => report,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the reload failed: {e}\n"),
            )
                .into_response();
        }
    };
    let status = if report.refused.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = serde_json::to_string_pretty(&report).expect("plain data serializes");
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

/// `POST /migrate?to=NAME`: what `kvs migrate --to NAME` does — move the store to the
/// logger NAME while it serves (`lifecycle::migrate`). Answers like `/reload`. With
/// `[auth]` on, the caller needs a role that may read and write every key.
async fn migrate_now(State(state): State<AdminState>, request: axum::extract::Request) -> Response {
    if let Some(refused) =
        refused_unless(&state.store, &request, |s, c| s.admit_whole_store(c, true))
    {
        return refused;
    }
    let to = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "to").then(|| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        });
    let Some(to) = to.filter(|to| !to.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "name the logger to move to: POST /migrate?to=NAME\n",
        )
            .into_response();
    };
    let Some(reload) = state.reload.get().cloned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "kvs is still starting (or was started without a config); retry later\n",
        )
            .into_response();
    };
    answer(reload, Ask::Migrate { to }).await
}

/// How long a backup waits for its client to take the next chunk.
const BACKUP_STALL: Duration = Duration::from_secs(60);

/// `GET /backup`: a snapshot of the whole store as of one point in its write order
/// (`backup::write_snapshot`), streamed while kvs serves; what `kvs backup FILE` saves.
/// The body is the snapshot file's bytes; if anything fails midway the body ends early,
/// and the snapshot's missing trailer tells the client. With `[auth]` on, the caller
/// needs a role that may read every key.
async fn backup(State(state): State<AdminState>, request: axum::extract::Request) -> Response {
    if let Some(refused) =
        refused_unless(&state.store, &request, |s, c| s.admit_whole_store(c, false))
    {
        return refused;
    }
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let (began, beginning) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let store = state.store.clone();
    let runtime = tokio::runtime::Handle::current();
    // Its own thread: the admin listener's one blocking thread stays free for reloads.
    let spawned = std::thread::Builder::new()
        .name("kvs-backup".into())
        .spawn(move || {
            let mut began = Some(began);
            let written = crate::backup::write_snapshot(&store, &mut |chunk| {
                if let Some(began) = began.take() {
                    let _ = began.send(Ok(()));
                }
                // A client that takes nothing for a minute is not waited for: the cut
                // would hold what writes replace for as long.
                runtime
                    .block_on(chunks.send_timeout(Ok(chunk), BACKUP_STALL))
                    .map_err(|e| match e {
                        tokio::sync::mpsc::error::SendTimeoutError::Timeout(_) => {
                            "the client took nothing for 60 s".to_string()
                        }
                        tokio::sync::mpsc::error::SendTimeoutError::Closed(_) => {
                            "the client went away".to_string()
                        }
                    })
            });
            match written {
                Ok(w) => tracing::info!(
                    point = w.point,
                    keys = w.keys,
                    bytes = w.bytes,
                    elapsed_ms = w.elapsed.as_millis() as u64,
                    "backup written"
                ),
                Err(why) => {
                    tracing::warn!("backup failed: {why}");
                    match began.take() {
                        Some(began) => {
                            let _ = began.send(Err(why));
                        }
                        None => {
                            let _ = chunks.try_send(Err(std::io::Error::other(why)));
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start the backup: {e}\n"),
        )
            .into_response();
    }
    match beginning.await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
        }
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "the backup stopped\n").into_response();
        }
    }
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
