//! A network frontend's server: bind, serve an axum app over plain TCP or TLS on the
//! frontend's own tokio runtime, cap connections and header sizes, stop gracefully
//! within a deadline; or, for stream protocols, a plain-TCP listener ([`tcp`]).
//!
//! Shared by kvs's own frontends (`rest`, `grpc` and the host's WASM HTTP frontend over
//! HTTP; `resp` and the host's WASM stream frontend over [`tcp`]) so the listener's
//! duties live in one place: TLS and mTLS ([`tls`]), certificate reload on SIGHUP,
//! per-listener connection and header limits, handshake and idle deadlines
//! ([`deadline`]), refusing requests with more than one `Authorization` header, graceful
//! stop. Not part of the plug-in
//! contract: a third party's frontend is free to serve however it likes. Runtimes do not
//! cross the plug-in boundary, which is why each frontend owns one.

mod connection;
pub mod deadline;
pub mod evict;
mod peers;
mod reserve;
mod reuse;
pub mod tcp;
pub mod tls;

pub use reserve::DESCRIPTOR_RESERVE;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use kvs_plugin_api::PluginError;
use kvs_plugin_api::log::Level;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

pub use deadline::Deadlines;
pub use kvs_config::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES};
pub use peers::DEFAULT_MAX_CONNECTIONS_PER_PEER;
pub use tls::TlsConfig;

/// The client's address and, under mTLS, its verified identity, worked out once per
/// connection: frontends put them into the context of every request. Handlers extract
/// it as `axum::extract::ConnectInfo<Peer>`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The address.
    pub addr: SocketAddr,
    /// The address as text, e.g. `127.0.0.1:50432`.
    pub text: Arc<str>,
    /// The common name of the client certificate the TLS handshake verified, if any.
    pub identity: Option<Arc<str>>,
}

/// The smallest header cap hyper can enforce for HTTP/1.1.
const MIN_HEADER_BYTES: usize = 8192;

/// Where a server's messages go: the plug-in's host log, or the host's own `tracing`.
pub type LogFn = fn(Level, &str);

/// Logs through plugin-api's host log service (what a plug-in uses).
pub fn plugin_log(level: Level, message: &str) {
    kvs_plugin_api::log::log(level, "kvs_serve", message, &[]);
}

/// How a [`Server`] is set up.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// Address to bind; port 0 picks a free one.
    pub listen: &'a str,
    /// Where an operator sets `listen`, for the bind error, e.g. `[plugins.rest]`.
    pub table: &'a str,
    /// The runtime's worker threads.
    pub worker_threads: usize,
    /// Its blocking-pool threads (tokio's default if `None`).
    pub max_blocking_threads: Option<usize>,
    /// Thread name, e.g. `kvs-rest`.
    pub thread_name: &'a str,
    /// What the server serves, for messages: `HTTP`, `gRPC`.
    pub protocol: &'a str,
    /// TLS, if the listener's table has a `tls` table.
    pub tls: Option<&'a TlsConfig>,
    /// ALPN protocols offered under TLS, preferred first.
    pub alpn: &'a [&'a [u8]],
    /// Most connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most connections one client address may have open at once (0: no per-peer cap);
    /// more from it are closed as soon as they are accepted.
    pub max_connections_per_peer: usize,
    /// Close a connection that would take one of the last descriptors the process may
    /// open ([`DESCRIPTOR_RESERVE`]): true for every frontend, false for the host's
    /// admin listener, which the reserve is kept for.
    pub descriptor_reserve: bool,
    /// Largest request header block in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// How long a connection may take to start talking and stay silent.
    pub deadlines: Deadlines,
    /// Where messages go.
    pub log: LogFn,
}

impl Settings<'_> {
    /// ALPN for a server of HTTP/2 and HTTP/1.1.
    pub const HTTP_ALPN: &'static [&'static [u8]] = &[b"h2", b"http/1.1"];
    /// ALPN for a gRPC server (HTTP/2 only).
    pub const GRPC_ALPN: &'static [&'static [u8]] = &[b"h2"];
}

/// A running server on its own runtime.
pub struct Server {
    runtime: Option<Runtime>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Carries the drain deadline to the acceptor.
    shutdown: Option<oneshot::Sender<Duration>>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
    protocol: String,
}

impl Server {
    /// Binds, builds the runtime, and serves the app `make` returns (given the flag that
    /// turns true when stopping begins: readiness should say 503 from then on). Clients'
    /// addresses reach handlers as `ConnectInfo<Peer>`.
    pub fn start(
        settings: &Settings<'_>,
        make: impl FnOnce(Arc<AtomicBool>) -> Router,
    ) -> Result<Server, PluginError> {
        let table = settings.table;
        let tls = load_tls(settings.tls, settings.alpn, table, settings.log)?;
        if settings.max_connections == 0 || settings.max_header_bytes < MIN_HEADER_BYTES {
            return Err(PluginError::invalid_input(format!(
                "{table}: max_connections must be at least 1 and max_header_bytes at least \
                 {MIN_HEADER_BYTES}"
            )));
        }
        let (listener, addr) = bind(settings.listen, table)?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(settings.worker_threads)
            .thread_name(settings.thread_name)
            .enable_all();
        if let Some(n) = settings.max_blocking_threads {
            builder.max_blocking_threads(n);
        }
        let runtime = builder.build()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let app = make(stopping.clone());
        let (shutdown, shutdown_rx) = oneshot::channel::<Duration>();
        let accept = Acceptor {
            app,
            tls: tls.clone(),
            http: http_builder(settings.max_header_bytes),
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            max_connections: settings.max_connections,
            peers: peers::PeerSlots::new(settings.max_connections_per_peer),
            registry: evict::Registry::default(),
            reserve: reserve::Reserve::new(settings.descriptor_reserve),
            deadlines: settings.deadlines,
            last_full_warning: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            log: settings.log,
            table: table.to_string(),
            stopping: stopping.clone(),
            requests: Arc::new(AtomicU64::new(0)),
        };
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            accept.run(listener, shutdown_rx).await;
            Ok(())
        });
        if let Some(tls) = tls {
            let _guard = runtime.enter();
            reload_on_sighup(tls, table.to_string(), settings.log)?;
        }
        Ok(Server {
            runtime: Some(runtime),
            task: Some(task),
            shutdown: Some(shutdown),
            stopping,
            addr,
            protocol: settings.protocol.to_string(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The runtime, to spawn the frontend's own background tasks on.
    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }

    /// The flag that turns true when stopping begins.
    pub fn stopping(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// Raises the stopping flag (readiness goes 503) without stopping yet.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Stops gracefully: stop accepting at once, let open connections' requests finish
    /// until `deadline`, then shut the runtime down. Idempotent.
    pub fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        self.begin_stopping();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(deadline);
        }
        let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) else {
            return Ok(());
        };
        let finished = runtime.block_on(async { tokio::time::timeout(deadline, task).await });
        runtime.shutdown_timeout(Duration::from_millis(100));
        let protocol = &self.protocol;
        match finished {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(PluginError::internal(format!(
                "{protocol} server failed: {e}"
            ))),
            Ok(Err(e)) => Err(PluginError::internal(format!(
                "{protocol} server task failed: {e}"
            ))),
            Err(_) => Err(PluginError::unavailable(format!(
                "requests still in flight after the {} ms deadline were cut off",
                deadline.as_millis()
            ))),
        }
    }
}

/// Loads a listener's TLS files, if it has a `tls` table; logs what looks wrong with
/// them (say, a key others can read); the error names the table and the file.
fn load_tls(
    config: Option<&TlsConfig>,
    alpn: &[&[u8]],
    table: &str,
    log: LogFn,
) -> Result<Option<Arc<tls::Tls>>, PluginError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let tls = tls::Tls::load(config, alpn)
        .map_err(|e| PluginError::invalid_input(format!("{table} tls: {e}")))?;
    for warning in tls.warnings() {
        log(Level::WARN, &format!("{table} tls: {warning}"));
    }
    Ok(Some(Arc::new(tls)))
}

/// Binds `listen` (non-blocking, for tokio); the error says which table sets it.
///
/// A newer build of the same frontend, started by the host while this one still serves
/// (a live swap), takes over the very socket this one listens on (a duplicate of its
/// descriptor, `reuse::listener_of_this_process`): both accept from one queue until
/// this one stops, and no connection is lost between them. Otherwise a plain bind is
/// tried first, so another process on the port (another kvs, say) is an "address in
/// use" error, and the listener is bound with `SO_REUSEPORT` (kept for kernels or
/// sandboxes where `/proc/self/fd` cannot be read: a replacement then binds beside it).
fn bind(listen: &str, table: &str) -> Result<(std::net::TcpListener, SocketAddr), PluginError> {
    let in_use = |e: std::io::Error| {
        PluginError::invalid_input(format!(
            "cannot listen on {listen}: {e}; set {table} listen to a free address"
        ))
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .map_err(in_use)?
        .next()
        .ok_or_else(|| in_use(std::io::Error::other("the name resolves to no address")))?;
    let shared = (addr.port() != 0)
        .then(|| reuse::listener_of_this_process(addr))
        .flatten();
    let listener = match shared {
        Some(listener) => listener,
        None => {
            if addr.port() != 0 {
                drop(std::net::TcpListener::bind(addr).map_err(in_use)?);
            }
            reuse::bind_shared(addr).map_err(in_use)?
        }
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// hyper's server settings: HTTP/1.1 and HTTP/2 on one port, header blocks capped.
fn http_builder(max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(max_header_bytes.max(MIN_HEADER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Accepts connections and serves each on its own task.
struct Acceptor {
    app: Router,
    tls: Option<Arc<tls::Tls>>,
    http: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    peers: peers::PeerSlots,
    /// Open connections, to close the quietest when full.
    registry: evict::Registry,
    reserve: reserve::Reserve,
    deadlines: Deadlines,
    /// Seconds since `started`, plus one, when "at max_connections" was last logged
    /// (0: never). Logged at most every 10 s, however many connections are refused.
    last_full_warning: Arc<AtomicU64>,
    started: Instant,
    log: LogFn,
    table: String,
    /// Raised when stopping begins: HTTP/1 responses then say `Connection: close`.
    stopping: Arc<AtomicBool>,
    /// Requests begun on every connection, to see when clients have gone quiet.
    requests: Arc<AtomicU64>,
}

impl Acceptor {
    async fn run(
        self,
        listener: tokio::net::TcpListener,
        mut shutdown: oneshot::Receiver<Duration>,
    ) {
        let graceful = GracefulShutdown::new();
        let deadline = loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather
                        // than spin; the listener itself stays fine.
                        (self.log)(Level::WARN, &format!("{}: accept failed: {e}", self.table));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                deadline = &mut shutdown => break deadline.unwrap_or(Duration::ZERO),
            };
            self.admit(tcp, addr, &graceful);
        };
        // Connections the kernel has already queued on this listener would be reset when
        // it closes (a replacement bound beside it takes the new ones from then on):
        // take them first. A zero timeout still polls `accept` once.
        while let Ok(Ok((tcp, addr))) =
            tokio::time::timeout(Duration::ZERO, listener.accept()).await
        {
            self.admit(tcp, addr, &graceful);
        }
        drop(listener);
        // First let clients leave on their own: every HTTP/1 response now says
        // `Connection: close`, so a busy keep-alive client moves to a new connection
        // after its next answer, and none is closed under a request it is sending. This
        // lasts while requests keep coming (up to 1 s, or half the deadline); then the
        // rest are closed gracefully: HTTP/2 gets GOAWAY, idle HTTP/1 connections are
        // closed at once, busy ones after their response.
        let leave_by = Instant::now() + (deadline / 2).min(Duration::from_secs(1));
        let mut seen = self.requests.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        while self.connections.available_permits() < self.max_connections
            && Instant::now() < leave_by
            && quiet_since.elapsed() < Duration::from_millis(200)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.requests.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
        }
        // Open connections finish their requests; `Server::stop` bounds the wait.
        graceful.shutdown().await;
    }

    /// Serves one accepted connection on its own task, unless a cap refuses it.
    fn admit(&self, tcp: tokio::net::TcpStream, addr: SocketAddr, graceful: &GracefulShutdown) {
        if !self.reserve.admits(std::os::fd::AsRawFd::as_raw_fd(&tcp)) {
            self.warn_refusing(|table, _| reserve::refusal(table));
            return; // dropping `tcp` closes it
        }
        let Some(peer_slot) = self.peers.take(addr.ip(), &self.table, self.log) else {
            return; // dropping `tcp` closes it
        };
        // Full: the quietest connection makes room, or the new one is refused.
        let permit = match self.connections.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if self.registry.evict_quietest(evict::EVICT_AFTER_SILENCE) => None,
            Err(_) => {
                self.warn_refusing(|table, max| {
                    format!(
                        "{table}: {max} connections are open (max_connections) and none has \
                         been silent for {}s; closing new ones until some close",
                        evict::EVICT_AFTER_SILENCE.as_secs()
                    )
                });
                return;
            }
        };
        let connections = self.connections.clone();
        let _ = tcp.set_nodelay(true);
        let connection = connection::Connection {
            app: self.app.clone(),
            http: self.http.clone(),
            watcher: graceful.watcher(),
            activity: self.registry.register(),
            deadlines: self.deadlines,
            stopping: self.stopping.clone(),
            requests: self.requests.clone(),
        };
        let tls = self.tls.clone();
        let handshake = self.deadlines.handshake;
        tokio::spawn(async move {
            // After an eviction, the slot is free once the evicted connection's task
            // has ended.
            let permit = match permit {
                Some(permit) => permit,
                None => {
                    match tokio::time::timeout(Duration::from_secs(1), connections.acquire_owned())
                        .await
                    {
                        Ok(Ok(permit)) => permit,
                        _ => return,
                    }
                }
            };
            let _permit = (permit, peer_slot);
            let text: Arc<str> = addr.to_string().into();
            match tls {
                None => {
                    let peer = Peer {
                        addr,
                        text,
                        identity: None,
                    };
                    connection.serve(tcp, peer).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    // A failed or stalled handshake (wrong CA, no client
                    // certificate under mTLS, plain HTTP) just closes the
                    // connection: rustls has already sent the client its alert.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let identity = tls::client_identity(stream.get_ref().1);
                    let peer = Peer {
                        addr,
                        text,
                        identity,
                    };
                    connection.serve(stream, peer).await;
                }
            }
        });
    }

    /// Logs why new connections are being closed, at most every 10 s.
    fn warn_refusing(&self, why: impl FnOnce(&str, usize) -> String) {
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.last_full_warning.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10)
            && self
                .last_full_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            (self.log)(Level::WARN, &why(&self.table, self.max_connections));
        }
    }
}

/// Re-reads the listener's certificate and key on SIGHUP. A file that fails to load
/// is reported and the certificate in use stays; open connections are never touched.
pub(crate) fn reload_on_sighup(
    tls: Arc<tls::Tls>,
    table: String,
    log: LogFn,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => log(
                    Level::INFO,
                    &format!(
                        "{table} tls: SIGHUP: reloaded {}",
                        tls.cert_path().display()
                    ),
                ),
                Err(e) => log(
                    Level::ERROR,
                    &format!("{table} tls: SIGHUP: {e}; still serving the previous certificate"),
                ),
            }
        }
    });
    Ok(())
}
