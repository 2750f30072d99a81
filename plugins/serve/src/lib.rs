//! A network frontend's server: bind, run an axum app on the frontend's own tokio
//! runtime, stop gracefully within a deadline.
//!
//! Shared by kvs's own frontends (`rest`, `grpc`, and the host's WASM HTTP frontend) so
//! the "own runtime + serve + stop" dance lives in one place. Not part of the plug-in
//! contract: a third party's frontend is free to serve however it likes. Runtimes do not
//! cross the plug-in boundary, which is why each frontend owns one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use kvs_plugin_api::PluginError;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The client's address, formatted once per connection: frontends put it into the
/// context of every request, and formatting a `SocketAddr` per request costs more than
/// copying a few bytes. Handlers extract it as `axum::extract::ConnectInfo<Peer>`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The address.
    pub addr: SocketAddr,
    /// The address as text, e.g. `127.0.0.1:50432`.
    pub text: Arc<str>,
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        let addr = *stream.remote_addr();
        Peer {
            addr,
            text: addr.to_string().into(),
        }
    }
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
}

/// A running server on its own runtime.
pub struct Server {
    runtime: Option<Runtime>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    shutdown: Option<oneshot::Sender<()>>,
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
        let listener = std::net::TcpListener::bind(settings.listen).map_err(|e| {
            PluginError::invalid_input(format!(
                "cannot listen on {}: {e}; set {} listen to a free address",
                settings.listen, settings.table
            ))
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
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
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await
        });
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
            let _ = tx.send(());
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
