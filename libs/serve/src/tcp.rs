//! A TCP listener for stream protocols (the Redis frontends, native and WASM): its own
//! tokio runtime, TLS and mTLS if the listener's table has a `tls` table (the same
//! [`crate::tls`] as the HTTP listeners, reloaded on SIGHUP), a cap on open connections,
//! and a stop that lets open connections finish what they have read within a deadline.
//! The protocol is the handler's business: it gets a byte stream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvs_plugin_api::PluginError;
use kvs_plugin_api::log::Level;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::{LogFn, TlsConfig, tls};

/// How a [`TcpServer`] is set up.
#[derive(Debug, Clone)]
pub struct TcpSettings<'a> {
    /// Address to bind; port 0 picks a free one.
    pub listen: &'a str,
    /// Where an operator sets `listen`, for messages, e.g. `[plugins.resp]`.
    pub table: &'a str,
    /// The runtime's worker threads. With 1 (and `blocks_in_place` false) the runtime
    /// is tokio's current-thread scheduler on a thread of its own: no work-stealing
    /// bookkeeping per task poll (measured: about 600 fewer instructions per RESP
    /// request).
    pub worker_threads: usize,
    /// The handler calls `tokio::task::block_in_place`, which only a multi-threaded
    /// runtime allows: keep one even with a single worker thread.
    pub blocks_in_place: bool,
    /// Thread name, e.g. `kvs-resp`.
    pub thread_name: &'a str,
    /// Most connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most connections one client address may have open at once (0: no per-peer cap).
    pub max_connections_per_peer: usize,
    /// As [`crate::Settings::descriptor_reserve`]: true for every frontend.
    pub descriptor_reserve: bool,
    /// TLS, if the listener's table has a `tls` table.
    pub tls: Option<&'a TlsConfig>,
    /// How long a connection may take to start talking and stay silent (see
    /// [`crate::deadline`]; only received bytes count as activity).
    pub deadlines: crate::Deadlines,
    /// Where messages go.
    pub log: LogFn,
    /// Called on a runtime thread that has run out of work, before it sleeps:
    /// where a frontend that commits its own writes commits them (see [`IdleHook`]).
    pub when_idle: Option<IdleHook>,
}

/// Work for a runtime thread that has nothing left to run, before it waits for the
/// network (tokio's `on_thread_park`): what Redis does before its event loop sleeps.
/// A thread that always has a ready connection never calls it.
#[derive(Clone)]
pub struct IdleHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for IdleHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleHook")
    }
}

/// A connection's bytes both ways: plain TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One accepted connection, for the handler.
pub struct Accepted {
    /// The connection (`TCP_NODELAY` set; under TLS, the handshake done).
    pub stream: Box<dyn Stream>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Under mTLS, the common name of the client certificate the handshake verified.
    pub identity: Option<Arc<str>>,
    /// Turns true when the server begins to stop: finish what was read, then close.
    pub stopping: watch::Receiver<bool>,
}

impl Accepted {
    /// What the client presented by connecting: its address and, under mTLS, its
    /// verified identity — the context its store calls carry.
    pub fn request_context(&self) -> kvs_plugin_api::RequestContext {
        kvs_plugin_api::RequestContext {
            peer: Some(self.peer.to_string()),
            client_identity: self.identity.as_deref().map(String::from),
            ..Default::default()
        }
    }
}

/// How many connections a [`TcpServer`] has open (for `INFO`-like reports).
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// The number open now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A server's tokio runtime: multi-threaded, or one thread driving a current-thread
/// runtime (which needs a thread inside `block_on` to run its tasks).
struct ServerRuntime {
    /// `None` once shut down.
    runtime: Option<Arc<Runtime>>,
    /// The current-thread runtime's driving thread.
    driver: Option<Driver>,
}

/// A current-thread runtime's driving thread: what ends its `block_on`, and what tells
/// that it returned (the sender is dropped as the thread ends).
struct Driver {
    end: tokio::sync::oneshot::Sender<()>,
    ended: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerRuntime {
    fn new(settings: &TcpSettings<'_>) -> std::io::Result<ServerRuntime> {
        let many = settings.worker_threads > 1 || settings.blocks_in_place;
        let mut builder = if many {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(settings.worker_threads);
            builder
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        builder.thread_name(settings.thread_name).enable_all();
        if let Some(IdleHook(hook)) = settings.when_idle.clone() {
            builder.on_thread_park(move || hook());
        }
        let runtime = Arc::new(builder.build()?);
        if many {
            return Ok(ServerRuntime {
                runtime: Some(runtime),
                driver: None,
            });
        }
        let (end, ending) = tokio::sync::oneshot::channel::<()>();
        let (signal, ended) = std::sync::mpsc::channel::<()>();
        let driving = runtime.clone();
        let thread = std::thread::Builder::new()
            .name(settings.thread_name.to_string())
            .spawn(move || {
                let _signal = signal;
                let _ = driving.block_on(ending);
            })?;
        Ok(ServerRuntime {
            runtime: Some(runtime),
            driver: Some(Driver { end, ended, thread }),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("not shut down")
    }

    fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime().enter()
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        self.runtime().spawn(future);
    }

    /// Ends the runtime's tasks. With `wait`, for at most about `timeout`: the driving
    /// thread's `block_on` returns once the task it is running yields (a connection may
    /// be in a logger's append), then the tasks get what is left; a driving thread still
    /// busy at the deadline is left to drop the runtime when it returns. Without `wait`,
    /// nothing blocks (as `shutdown_background`).
    fn shutdown(&mut self, timeout: Duration, wait: bool) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let until = Instant::now() + timeout;
        if let Some(driver) = self.driver.take() {
            let _ = driver.end.send(());
            // Never from the driving thread itself (a task stopping its own server).
            let on_driver = driver.thread.thread().id() == std::thread::current().id();
            let returned = wait
                && !on_driver
                && matches!(
                    driver
                        .ended
                        .recv_timeout(until.saturating_duration_since(Instant::now())),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                );
            if returned {
                let _ = driver.thread.join();
            }
        }
        // If the driving thread still holds it, it drops the runtime when it returns.
        if let Ok(runtime) = Arc::try_unwrap(runtime) {
            if wait {
                runtime.shutdown_timeout(until.saturating_duration_since(Instant::now()));
            } else {
                runtime.shutdown_background();
            }
        }
    }
}

impl Drop for ServerRuntime {
    /// A start that failed after the runtime was built: its accept task is closed (and
    /// the port given back) before the error is returned.
    fn drop(&mut self) {
        self.shutdown(Duration::from_millis(100), true);
    }
}

/// A running plain-TCP server.
pub struct TcpServer {
    runtime: Option<ServerRuntime>,
    stop: watch::Sender<bool>,
    open: OpenConnections,
    addr: SocketAddr,
}

impl TcpServer {
    /// Binds, builds the runtime, and runs `handle` on its own task for every accepted
    /// connection. `make` builds the handler once the address is bound (a handler may
    /// report its port) and is given the open-connection count.
    pub fn start<H, F>(
        settings: &TcpSettings<'_>,
        make: impl FnOnce(SocketAddr, OpenConnections) -> H,
    ) -> Result<TcpServer, PluginError>
    where
        H: Fn(Accepted) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let table = settings.table;
        let tls = crate::load_tls(settings.tls, &[], table, settings.log)?;
        if settings.max_connections == 0 || settings.worker_threads == 0 {
            return Err(PluginError::invalid_input(format!(
                "{table}: max_connections and worker_threads must be at least 1"
            )));
        }
        let (listener, addr) = crate::bind(settings.listen, table)?;
        let runtime = ServerRuntime::new(settings)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let open = OpenConnections::default();
        let handle = make(addr, open.clone());
        let (stop, stopping) = watch::channel(false);
        let accept = Acceptor {
            open: open.clone(),
            max_connections: settings.max_connections,
            peers: crate::peers::PeerSlots::new(settings.max_connections_per_peer),
            registry: crate::evict::Registry::default(),
            reserve: crate::reserve::Reserve::new(settings.descriptor_reserve),
            deadlines: settings.deadlines,
            tls: tls.clone(),
            table: table.to_string(),
            log: settings.log,
        };
        runtime.spawn(accept.run(listener, Arc::new(handle), stopping));
        if let Some(tls) = tls {
            let _guard = runtime.enter();
            crate::reload_on_sighup(tls, table.to_string(), settings.log)?;
        }
        Ok(TcpServer {
            runtime: Some(runtime),
            stop,
            open,
            addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.count()
    }

    /// Stops accepting at once, tells open connections to finish (`Accepted::stopping`)
    /// and waits for them until `deadline`; then shuts the runtime down, closing any
    /// still open (an error says how many). Idempotent.
    pub fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        let _ = self.stop.send(true);
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let until = Instant::now() + deadline;
        while self.open.count() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let open = self.open.count();
        let mut runtime = runtime;
        runtime.shutdown(Duration::from_millis(100), true);
        if open > 0 {
            return Err(PluginError::unavailable(format!(
                "{open} connection(s) still open at the stop deadline were closed"
            )));
        }
        Ok(())
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = self.stop.send(true);
            let mut runtime = runtime;
            runtime.shutdown(Duration::ZERO, false);
        }
    }
}

/// One open connection in the count, for as long as it lives.
struct Counted(OpenConnections);

impl Counted {
    fn new(open: &OpenConnections) -> Counted {
        open.0.fetch_add(1, Ordering::Relaxed);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Acceptor {
    open: OpenConnections,
    max_connections: usize,
    peers: crate::peers::PeerSlots,
    /// Open connections, to close the quietest when full.
    registry: crate::evict::Registry,
    reserve: crate::reserve::Reserve,
    deadlines: crate::Deadlines,
    tls: Option<Arc<tls::Tls>>,
    table: String,
    log: LogFn,
}

impl Acceptor {
    async fn run<H, F>(
        self,
        listener: tokio::net::TcpListener,
        handle: Arc<H>,
        mut stopping: watch::Receiver<bool>,
    ) where
        H: Fn(Accepted) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut last_warning: Option<Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: back off rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopping.changed() => return,
            };
            let open = self.open.count();
            let refused = if !self
                .reserve
                .admits(std::os::fd::AsRawFd::as_raw_fd(&stream))
            {
                Some(crate::reserve::refusal(&self.table))
            } else if open >= self.max_connections
                && !self
                    .registry
                    .evict_quietest(crate::evict::EVICT_AFTER_SILENCE)
            {
                // (After an eviction the count is one over for the moment the evicted
                // connection takes to close.)
                Some(format!(
                    "{}: refusing connections: {open} open, the limit is max_connections = {}, \
                     and none has been silent for {}s",
                    self.table,
                    self.max_connections,
                    crate::evict::EVICT_AFTER_SILENCE.as_secs()
                ))
            } else {
                None
            };
            if let Some(why) = refused {
                // Logged at most every 10 s, however many are refused; dropping the
                // stream closes it.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_warning = Some(Instant::now());
                    (self.log)(Level::WARN, &why);
                }
                continue;
            }
            let Some(peer_slot) = self.peers.take(peer.ip(), &self.table, self.log) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counted = Counted::new(&self.open);
            let (handle, stopping, tls) = (handle.clone(), stopping.clone(), self.tls.clone());
            let deadlines = self.deadlines;
            let activity = self.registry.register();
            tokio::spawn(async move {
                // Uncounted when the task ends, however it ends.
                let _counted = (counted, peer_slot);
                let (stream, identity): (Box<dyn Stream>, _) = match tls {
                    None => (
                        Box::new(crate::deadline::Watched::new(stream, &activity)),
                        None,
                    ),
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                        // A failed or stalled handshake (wrong CA, no client certificate
                        // under mTLS, plain text) just closes the connection: rustls has
                        // already sent the client its alert.
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(deadlines.handshake, acceptor.accept(stream))
                                .await
                        else {
                            return;
                        };
                        let identity = tls::client_identity(stream.get_ref().1);
                        // Only what the client sends after the handshake counts.
                        let stream = crate::deadline::Watched::new(stream, &activity);
                        (Box::new(stream), identity)
                    }
                };
                let served = tokio::spawn(handle(Accepted {
                    stream,
                    peer,
                    identity,
                    stopping,
                }));
                // A silent connection is dropped, closing it; writes it queued complete
                // in the store regardless.
                crate::deadline::until_task_expired(served, &activity, deadlines).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(_: Level, _: &str) {}

    /// A one-thread listener whose connection blocks its thread (as a connection inside
    /// a logger's fsync does) still stops within its deadline, and dropping one never
    /// waits for the thread.
    #[test]
    fn a_one_thread_listener_stops_within_its_deadline_while_a_connection_blocks() {
        let settings = TcpSettings {
            listen: "127.0.0.1:0",
            table: "[test]",
            worker_threads: 1,
            blocks_in_place: false,
            thread_name: "kvs-test-tcp",
            max_connections: 8,
            max_connections_per_peer: 0,
            descriptor_reserve: false,
            tls: None,
            deadlines: crate::Deadlines::default(),
            log: quiet,
            when_idle: None,
        };
        for drop_instead in [false, true] {
            let (blocking, blocked) = std::sync::mpsc::channel::<()>();
            let blocking = std::sync::Mutex::new(blocking);
            let mut server = TcpServer::start(&settings, |_, _| {
                move |accepted: Accepted| {
                    let blocking = blocking.lock().unwrap().clone();
                    async move {
                        let _stream = accepted.stream;
                        let _ = blocking.send(());
                        std::thread::sleep(Duration::from_secs(3));
                    }
                }
            })
            .unwrap();
            let _client = std::net::TcpStream::connect(server.local_addr()).unwrap();
            blocked.recv_timeout(Duration::from_secs(10)).unwrap();
            let started = Instant::now();
            if drop_instead {
                drop(server);
            } else {
                assert!(server.stop(Duration::from_millis(200)).is_err());
            }
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{} took {took:?}",
                if drop_instead { "drop" } else { "stop" }
            );
        }
    }
}
