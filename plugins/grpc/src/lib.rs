//! The `grpc` frontend: the book's `KeyValue` service, and `kvs.v1.KeyValue` with bytes,
//! served by tonic on the plug-in's own runtime, with the standard health service and
//! server reflection (so grpcurl and other generic tools work; with `[auth]` on, only for
//! callers with a valid token or client certificate: the host decides).
//!
//! * `KeyValue` (the book's `keyvalue.proto`, no package): `string` keys and values. A
//!   key must be non-empty; a stored value that is not UTF-8 cannot be returned as a
//!   proto3 `string`, so `Get` answers FAILED_PRECONDITION naming `kvs.v1.KeyValue`.
//! * `kvs.v1.KeyValue`: the same calls with `bytes`, for any key and value; and
//!   conditional puts and deletes (`Condition`: absent, present, at a revision, holding
//!   a value), `Increment`, TTLs on `Put`, and each key's revision and deadline on `Get`.
//!
//! Store errors become statuses in one place, [`status_of`]. Client deadlines
//! (`grpc-timeout`) are honoured: a call past its deadline ends with DEADLINE_EXCEEDED.
//! `grpc.health.v1.Health` reports SERVING only while kvs is ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use kvs_plugin_api::{
    Consistency, ErrorCode, Frontend, PluginError, RequestContext, Store, export_plugin,
};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

use kvs_proto::{FILE_DESCRIPTOR_SET, book, v1};

mod kvs_v1;

/// The `[plugins.grpc]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:50051`; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Threads of the plug-in's tokio runtime. Default 2.
    #[serde(default = "default_workers")]
    pub worker_threads: usize,
    /// TLS (`tls = { cert = "...", key = "...", client_ca = "..." }`); plain TCP without.
    pub tls: Option<kvs_serve::TlsConfig>,
    /// Most connections open at once; more are closed on accept. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections one client address may have open at once; more from it are
    /// closed on accept. 0: no per-peer cap (behind a proxy on one address). Default 256.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request header block in bytes (431 beyond it). Default 32768.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Longest a TLS handshake may take, in ms (see kvs-serve's `deadline`). Default
    /// 5000.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A connection that receives nothing for this long with no request in progress is
    /// closed (one that never sends a byte, after 10 s or this if shorter). 0: never.
    /// Default 300000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_listen() -> String {
    "127.0.0.1:50051".into()
}
fn default_workers() -> usize {
    2
}
fn default_max_connections_per_peer() -> usize {
    kvs_serve::DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_max_connections() -> usize {
    kvs_serve::DEFAULT_MAX_CONNECTIONS
}
fn default_max_header_bytes() -> usize {
    kvs_serve::DEFAULT_MAX_HEADER_BYTES
}
fn default_handshake_timeout_ms() -> u64 {
    kvs_serve::deadline::DEFAULT_HANDSHAKE_TIMEOUT_MS
}
fn default_idle_timeout_ms() -> u64 {
    kvs_serve::deadline::DEFAULT_IDLE_TIMEOUT_MS
}

impl Config {
    /// Parses the plug-in's TOML table; errors name the bad key.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let c: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("[plugins.grpc]: {e}")))?;
        if c.worker_threads == 0 {
            return Err(PluginError::invalid_input(
                "[plugins.grpc]: worker_threads must be at least 1",
            ));
        }
        Ok(c)
    }
}

/// Store errors as gRPC statuses: the one place they are decided.
pub fn status_of(e: PluginError) -> Status {
    let message = e.message().to_string();
    match e.code() {
        ErrorCode::NOT_FOUND => Status::not_found(message),
        ErrorCode::INVALID_INPUT | ErrorCode::TOO_LARGE => Status::invalid_argument(message),
        ErrorCode::UNAVAILABLE => Status::unavailable(message),
        ErrorCode::UNAUTHENTICATED => Status::unauthenticated(message),
        ErrorCode::PERMISSION_DENIED => Status::permission_denied(message),
        ErrorCode::STORAGE_FULL | ErrorCode::RATE_LIMITED => Status::resource_exhausted(message),
        ErrorCode::DEADLINE_EXCEEDED => Status::deadline_exceeded(message),
        _ => Status::internal(message),
    }
}

/// The client's deadline from the `grpc-timeout` header, if it sent one.
fn deadline_of<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What the client presented: `authorization` (Bearer), `traceparent` and `tracestate`
/// metadata, its `grpc-timeout` and its address. Carried to the host, which decides.
fn context_of<T>(request: &Request<T>) -> RequestContext {
    let ascii = request.metadata().iter().filter_map(|entry| match entry {
        tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str(), v.as_bytes())),
        tonic::metadata::KeyAndValueRef::Binary(..) => None,
    });
    let mut ctx = RequestContext::from_headers(ascii).with_deadline(deadline_of(request));
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<kvs_serve::Peer>>() {
        ctx.peer = Some(String::from(&*peer.text));
        ctx.client_identity = peer.identity.as_deref().map(String::from);
    }
    ctx
}

/// Runs a call within the client's deadline, answering DEADLINE_EXCEEDED past it. The
/// deadline went to the store with the call: a write still queued when it passes is
/// never made, one the logger had already taken completes.
async fn within<T>(
    deadline: Option<Duration>,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => call.await,
        Some(d) => tokio::time::timeout(d, call).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(
                "the client's deadline passed before the call completed; a write may still be applied",
            ))
        }),
    }
}

#[derive(Clone)]
struct Service {
    store: Store,
}

/// The read consistency a call's metadata asks for (`kvs-consistency`).
fn consistency_of<T>(request: &Request<T>) -> Consistency {
    let value = request
        .metadata()
        .get(Consistency::HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    Consistency::from_headers([(Consistency::HEADER, value)])
}

impl Service {
    async fn get(
        &self,
        ctx: RequestContext,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> Result<Vec<u8>, Status> {
        let result = if consistency == Consistency::LINEARIZABLE {
            // A linearizable read may wait for a quorum barrier (until the call's
            // deadline or the cluster timeout): on a blocking thread, not an async worker.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.get_consistent(&ctx, &key, consistency))
                .await
                .map_err(|e| Status::internal(format!("the read failed: {e}")))?
        } else {
            self.store.get_consistent(&ctx, &key, consistency)
        };
        match result.map_err(status_of)? {
            Some(value) => Ok(value),
            None => Err(Status::not_found("no such key")),
        }
    }
}

#[tonic::async_trait]
impl book::key_value_server::KeyValue for Service {
    async fn get(
        &self,
        request: Request<book::GetRequest>,
    ) -> Result<Response<book::GetResponse>, Status> {
        let value = Service::get(
            self,
            context_of(&request),
            request.get_ref().key.as_bytes().to_vec(),
            consistency_of(&request),
        )
        .await?;
        let value = String::from_utf8(value).map_err(|_| {
            Status::failed_precondition(
                "the value is not UTF-8, so it cannot be a proto3 string; read it with kvs.v1.KeyValue/Get",
            )
        })?;
        Ok(Response::new(book::GetResponse { value }))
    }

    async fn put(
        &self,
        request: Request<book::PutRequest>,
    ) -> Result<Response<book::PutResponse>, Status> {
        let ctx = context_of(&request);
        let book::PutRequest { key, value } = request.into_inner();
        let write = self
            .store
            .put_with(&ctx, key.into_bytes(), value.into_bytes());
        let deadline = ctx.deadline;
        within(deadline, async { write.await.map_err(status_of) }).await?;
        Ok(Response::new(book::PutResponse {}))
    }

    async fn delete(
        &self,
        request: Request<book::DeleteRequest>,
    ) -> Result<Response<book::DeleteResponse>, Status> {
        let ctx = context_of(&request);
        let write = self
            .store
            .delete_with(&ctx, request.into_inner().key.into_bytes());
        let deadline = ctx.deadline;
        within(deadline, async { write.await.map_err(status_of) }).await?;
        Ok(Response::new(book::DeleteResponse {}))
    }
}

/// The standard `grpc.health.v1.Health` service, answering for the whole server ("")
/// and for each KeyValue service. Written here rather than taken from tonic-health's
/// reporter because its `Watch` streams never end, which would hold graceful shutdown
/// until the deadline: ours send NOT_SERVING, then end.
struct HealthService {
    store: Store,
    stopping: Arc<AtomicBool>,
    /// Status changes for `Watch`, published by a task that follows the store.
    changes: watch::Receiver<Option<ServingStatus>>,
}

fn serving_status(store: &Store, stopping: &AtomicBool) -> ServingStatus {
    if store.is_ready() && !stopping.load(Ordering::Acquire) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

const HEALTH_NAMES: [&str; 3] = ["", "KeyValue", "kvs.v1.KeyValue"];

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !HEALTH_NAMES.contains(&request.get_ref().service.as_str()) {
            return Err(Status::not_found("unknown service"));
        }
        let status = serving_status(&self.store, &self.stopping);
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if !HEALTH_NAMES.contains(&request.get_ref().service.as_str()) {
            return Err(Status::not_found("unknown service"));
        }
        let stream = WatchStream::new(self.changes.clone())
            .take_while(Option::is_some)
            .map(|status| {
                Ok(HealthCheckResponse {
                    status: status.unwrap_or(ServingStatus::NotServing) as i32,
                })
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A running gRPC frontend.
pub struct GrpcFrontend {
    /// Health status; `None` ends every `Watch` stream (set on stop).
    health: watch::Sender<Option<ServingStatus>>,
    server: kvs_serve::Server,
    tls: bool,
}

impl GrpcFrontend {
    /// Binds the listener and starts serving `store`.
    pub fn start(store: Store, config: Config) -> Result<GrpcFrontend, PluginError> {
        // A message may carry a maximal key and value plus framing.
        let limits = store.limits();
        let max_message = usize::try_from(limits.max_key_bytes + limits.max_value_bytes + 1024)
            .unwrap_or(usize::MAX);
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| PluginError::internal(format!("reflection: {e}")))?;
        let service = Service {
            store: store.clone(),
        };
        let (health, health_rx) = watch::channel(Some(ServingStatus::NotServing));
        let settings = kvs_serve::Settings {
            listen: &config.listen,
            table: "[plugins.grpc]",
            worker_threads: config.worker_threads,
            max_blocking_threads: None,
            thread_name: "kvs-grpc",
            protocol: "gRPC",
            tls: config.tls.as_ref(),
            alpn: kvs_serve::Settings::GRPC_ALPN,
            max_connections: config.max_connections,
            max_connections_per_peer: config.max_connections_per_peer,
            descriptor_reserve: true,
            max_header_bytes: config.max_header_bytes,
            deadlines: kvs_serve::Deadlines::from_ms(
                config.handshake_timeout_ms,
                config.idle_timeout_ms,
                "[plugins.grpc]",
            )?,
            log: kvs_serve::plugin_log,
        };
        // Served by kvs-serve (hyper; HTTP/2 by prior knowledge or ALPN) rather than
        // tonic::transport::Server: tonic's server wraps every call in a timeout layer
        // that answers an expired `grpc-timeout` with CANCELLED, while gRPC says
        // DEADLINE_EXCEEDED, which the handlers answer themselves.
        let server = kvs_serve::Server::start(&settings, |stopping| {
            let health_service = HealthServer::new(HealthService {
                store: store.clone(),
                stopping,
                changes: health_rx,
            });
            // Reflection describes the service to authenticated callers only: the host
            // checks the call's credentials (a read of the empty key, which with
            // `[auth]` on refuses an anonymous caller as UNAUTHENTICATED). Health stays
            // public.
            let reflection_store = store.clone();
            let reflection = tonic::service::interceptor::InterceptedService::new(
                reflection.clone(),
                move |request: Request<()>| match reflection_store
                    .get_with(&context_of(&request), b"")
                {
                    Err(e) if e.code() == ErrorCode::UNAUTHENTICATED => Err(status_of(e)),
                    _ => Ok(request),
                },
            );
            tonic::service::Routes::new(health_service)
                .add_service(reflection)
                .add_service(
                    book::key_value_server::KeyValueServer::new(service.clone())
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(max_message),
                )
                .add_service(
                    v1::key_value_server::KeyValueServer::new(service)
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(max_message),
                )
                .prepare()
                .into_axum_router()
        })?;
        // Readiness follows the store: NOT_SERVING while replaying or stopping.
        let status = health.clone();
        let stopping = server.stopping();
        if let Some(runtime) = server.handle() {
            runtime.spawn(async move {
                loop {
                    let now = serving_status(&store, &stopping);
                    status.send_if_modified(|s| match s {
                        Some(old) if *old != now => {
                            *old = now;
                            true
                        }
                        _ => false,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        Ok(GrpcFrontend {
            health,
            server,
            tls: config.tls.is_some(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

impl Frontend for GrpcFrontend {
    fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "grpcs" } else { "grpc" };
        vec![format!("{scheme}://{}", self.local_addr())]
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        self.server.begin_stopping();
        // Watchers see NOT_SERVING, then their streams end so the drain can finish.
        self.health.send_replace(Some(ServingStatus::NotServing));
        std::thread::sleep(Duration::from_millis(50));
        self.health.send_replace(None);
        self.server.stop(deadline)
    }
}

fn start(store: Store, config: &str) -> Result<GrpcFrontend, PluginError> {
    GrpcFrontend::start(store, Config::parse(config)?)
}

export_plugin!(
    frontend: start,
    name: "grpc",
    description: "the book's KeyValue gRPC service plus kvs.v1.KeyValue (bytes), with health and reflection"
);
