//! Serving one accepted HTTP connection: the app behind the idle and handshake
//! deadlines' bookkeeping, a refusal of requests with more than one `Authorization`
//! header, and a response body that counts as work in progress until it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use crate::{Deadlines, Peer, deadline};

/// One accepted connection, about to be served.
pub(crate) struct Connection {
    pub(crate) app: Router,
    pub(crate) http: auto::Builder<TokioExecutor>,
    pub(crate) watcher: Watcher,
    pub(crate) activity: Arc<deadline::Activity>,
    pub(crate) deadlines: Deadlines,
    /// The server's stopping flag: HTTP/1 responses say `Connection: close` once raised.
    pub(crate) stopping: Arc<AtomicBool>,
    /// Counts requests begun, server-wide.
    pub(crate) requests: Arc<AtomicU64>,
}

impl Connection {
    pub(crate) async fn serve<I>(self, io: I, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app;
        let activity = self.activity;
        let io = deadline::Watched::new(io, &activity);
        let requests = activity.clone();
        let (stopping, begun) = (self.stopping, self.requests);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            begun.fetch_add(1, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            let http1 = request.version() < hyper::Version::HTTP_2;
            let stopping = stopping.clone();
            let mut app = app.clone();
            let refused = ambiguous_credentials(&request);
            // In progress (not idle) until the response body is done with.
            let busy = deadline::Busy::new(&requests);
            async move {
                let mut response = match refused {
                    Some(response) => response,
                    None => match app.call(request.map(axum::body::Body::new)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                };
                // Draining: the client's next request goes to a new connection (the
                // replacement's, in a live swap), never to one about to close.
                if http1 && stopping.load(Ordering::Acquire) {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| InProgress { body, _busy: busy }),
                )
            }
        });
        let served = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        // Errors here are the client's (reset, bad request line, oversized header
        // block, which hyper has answered 431): nothing for the server to do.
        let watched = async {
            let _ = self.watcher.watch(served).await;
        };
        deadline::until_expired(watched, &activity, self.deadlines).await;
    }
}

/// A response body that keeps its connection busy (not idle) until it is dropped.
struct InProgress {
    body: axum::body::Body,
    _busy: deadline::Busy,
}

impl hyper::body::Body for InProgress {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Refuses a request that carries more than one `Authorization` header (or gRPC
/// `authorization` metadata entry): which of them names the caller would be a guess —
/// a proxy may check the first while kvs reads the last — so no credential is picked.
/// HTTP gets 400; a gRPC call (`content-type: application/grpc...`) gets
/// `INVALID_ARGUMENT`. Done here, before routing, so every kvs listener (rest, grpc,
/// the WASM HTTP frontends, admin) refuses alike.
fn ambiguous_credentials<B>(request: &hyper::Request<B>) -> Option<axum::response::Response> {
    use axum::http::{HeaderValue, StatusCode, header};
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    values.next()?;
    values.next()?;
    const WHY: &str = "more than one Authorization header: send exactly one";
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    if grpc {
        // A trailers-only gRPC answer: status 3, INVALID_ARGUMENT.
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("3"));
        headers.insert("grpc-message", HeaderValue::from_static(WHY));
    } else {
        *response.status_mut() = StatusCode::BAD_REQUEST;
        *response.body_mut() = axum::body::Body::from(format!("{WHY}\n"));
    }
    Some(response)
}
