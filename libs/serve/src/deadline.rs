//! How long a connection may take to start talking, and how long it may stay silent.
//!
//! Every listener closes:
//!
//! * a TLS connection whose handshake has not finished `handshake_timeout_ms` after it
//!   was accepted (default 5 s);
//! * a connection that has sent no bytes (after TLS: no request bytes) within
//!   [`FIRST_BYTES_TIMEOUT`] of being accepted (10 s, or `idle_timeout_ms` if shorter):
//!   a client connects to talk, and one that does not only holds a file descriptor;
//! * a connection that has received nothing for `idle_timeout_ms` (default 300 s, like
//!   Redis's `timeout`; 0: never) while it has no request in progress. For HTTP a
//!   request is in progress until its response body has been sent (a gRPC stream that
//!   stays open is not idle); for stream protocols (RESP) only received bytes count.
//!
//! Unauthenticated clients can open connections; these deadlines bound how long one
//! that does nothing keeps its descriptor, and a full listener closes the quietest
//! connection to make room for a new one ([`crate::evict`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

pub use kvs_config::{DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS};

/// Longest a new connection may stay silent before its first bytes.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's deadlines, from its table's `handshake_timeout_ms` and
/// `idle_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The TLS handshake must be done within this of the accept.
    pub handshake: Duration,
    /// A connection with nothing in progress that receives nothing for this long is
    /// closed (`None`: never).
    pub idle: Option<Duration>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            handshake: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            idle: Some(Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS)),
        }
    }
}

impl Deadlines {
    /// From the two config keys; `table` names where they are set, for the error.
    pub fn from_ms(
        handshake_timeout_ms: u64,
        idle_timeout_ms: u64,
        table: &str,
    ) -> Result<Deadlines, kvs_plugin_api::PluginError> {
        if handshake_timeout_ms == 0 {
            return Err(kvs_plugin_api::PluginError::invalid_input(format!(
                "{table}: handshake_timeout_ms must be at least 1"
            )));
        }
        Ok(Deadlines {
            handshake: Duration::from_millis(handshake_timeout_ms),
            idle: (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms)),
        })
    }

    /// How long a new connection may stay silent.
    pub fn first_bytes(&self) -> Duration {
        self.idle
            .map_or(FIRST_BYTES_TIMEOUT, |idle| idle.min(FIRST_BYTES_TIMEOUT))
    }
}

/// `last_received` before any byte arrived.
const NEVER: u64 = u64::MAX;

/// What a connection has been doing, for its deadlines.
#[derive(Debug)]
pub(crate) struct Activity {
    accepted: Instant,
    /// Milliseconds after `accepted` when bytes last arrived (or a request ended).
    last_received: AtomicU64,
    /// Requests in progress (HTTP).
    busy: AtomicUsize,
    /// Told when the listener, full, closes this connection to make room
    /// ([`crate::evict`]).
    pub(crate) evicted: tokio::sync::Notify,
    /// Where it is registered for eviction, if anywhere (removed when dropped).
    registration: Option<crate::evict::Registration>,
}

impl Activity {
    /// A connection accepted now, not registered for eviction.
    #[cfg(test)]
    pub(crate) fn new() -> Arc<Activity> {
        Self::registered(None)
    }

    /// A connection accepted now, with its place in its listener's registry.
    pub(crate) fn registered(registration: Option<crate::evict::Registration>) -> Arc<Activity> {
        Arc::new(Activity {
            accepted: Instant::now(),
            last_received: AtomicU64::new(NEVER),
            busy: AtomicUsize::new(0),
            evicted: tokio::sync::Notify::new(),
            registration,
        })
    }

    /// How long it has received nothing (since it was accepted, if it never has), or
    /// `None` while a request of its own is in progress.
    pub(crate) fn silence(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.accepted.elapsed();
        Some(match self.last_received.load(Ordering::Relaxed) {
            NEVER => now,
            last => now.saturating_sub(Duration::from_millis(last)),
        })
    }

    fn touch(&self) {
        let now = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NEVER - 1);
        self.last_received.store(now, Ordering::Relaxed);
    }

    /// Resolves when the connection has been silent past its deadline with nothing in
    /// progress: the caller then drops (closes) it.
    pub(crate) async fn expired(&self, deadlines: Deadlines) {
        loop {
            let now = self.accepted.elapsed();
            let last = self.last_received.load(Ordering::Relaxed);
            let (silent, limit) = if last == NEVER {
                (now, deadlines.first_bytes())
            } else {
                let Some(idle) = deadlines.idle else {
                    return std::future::pending().await;
                };
                (now.saturating_sub(Duration::from_millis(last)), idle)
            };
            if silent < limit {
                tokio::time::sleep(limit - silent).await;
            } else if self.busy.load(Ordering::Relaxed) > 0 {
                // A request in progress: it touches the clock when it ends.
                tokio::time::sleep(limit).await;
            } else {
                return;
            }
        }
    }
}

/// One request in progress on a connection, until dropped.
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    pub(crate) fn new(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(registration) = self.registration.take() {
            registration.remove();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // The idle period starts when the answer is done, not when the request came.
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's byte stream, noting when bytes arrive.
pub(crate) struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub(crate) fn new(inner: I, activity: &Arc<Activity>) -> Watched<I> {
        Watched {
            inner,
            activity: activity.clone(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs `work` (serving a connection) until it ends or the connection expires; an
/// expired connection is dropped, which closes it.
pub(crate) async fn until_expired(
    work: impl Future<Output = ()>,
    activity: &Activity,
    deadlines: Deadlines,
) {
    tokio::select! {
        () = work => {}
        () = activity.expired(deadlines) => {}
        () = activity.evicted.notified() => {}
    }
}

/// [`until_expired`] for work running as a task of its own: this task is woken only
/// when the work ends or a deadline or eviction fires, whereas a `select!` over the
/// work itself polls the deadline's timer and the eviction notice each time the work
/// wakes (measured: ~330 instructions per RESP request). An expired connection's task
/// is aborted, dropping (closing) it before this returns.
pub(crate) async fn until_task_expired(
    task: tokio::task::JoinHandle<()>,
    activity: &Activity,
    deadlines: Deadlines,
) {
    // Were this watcher dropped (its task cancelled), the connection goes with it.
    let mut task = AbortOnDrop(task);
    tokio::select! {
        _ = &mut task.0 => return,
        () = activity.expired(deadlines) => {}
        () = activity.evicted.notified() => {}
    }
    task.0.abort();
    let _ = (&mut task.0).await;
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_is_ten_seconds_or_the_idle_timeout_if_shorter() {
        let d = Deadlines::default();
        assert_eq!(d.first_bytes(), FIRST_BYTES_TIMEOUT);
        let d = Deadlines::from_ms(1000, 2000, "[t]").unwrap();
        assert_eq!(d.first_bytes(), Duration::from_secs(2));
        let d = Deadlines::from_ms(1000, 0, "[t]").unwrap();
        assert_eq!(d.idle, None);
        assert_eq!(d.first_bytes(), FIRST_BYTES_TIMEOUT);
        assert!(Deadlines::from_ms(0, 1, "[t]").is_err());
    }

    #[tokio::test]
    async fn silent_connections_expire_busy_ones_do_not() {
        let deadlines = Deadlines::from_ms(1000, 200, "[t]").unwrap();
        // Never talks: closed at the first-bytes deadline (here the idle one, shorter).
        let a = Activity::new();
        let started = Instant::now();
        a.expired(deadlines).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        // Busy past the deadline: kept until the request ends, then idle again.
        let a = Activity::new();
        a.touch();
        let busy = Busy::new(&a);
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.expired(deadlines).await }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!waiting.is_finished());
        let ended = Instant::now();
        drop(busy);
        waiting.await.unwrap();
        assert!(ended.elapsed() >= Duration::from_millis(190));
    }
}
