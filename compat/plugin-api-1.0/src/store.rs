//! [`Store`]: the host's key-value store, as a frontend uses it.

use std::sync::Arc;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RVec},
};
use tokio::sync::oneshot;

use crate::error::PluginError;
use crate::native::{Limits, StoreBox, WriteCallback, WriteCallback_TO};

/// A cheap-to-clone handle on the host's store, handed to a frontend when it starts.
///
/// Reads answer from memory. Writes resolve once the host's logger has made them durable;
/// they never block the calling thread, so they suit an async frontend. Dropping a write's
/// future does not cancel the write: it is already queued and will still be logged.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreBox>,
}

struct OneshotCallback(Option<oneshot::Sender<Result<(), PluginError>>>);

impl WriteCallback for OneshotCallback {
    fn complete(&mut self, result: RResult<(), PluginError>) {
        if let Some(tx) = self.0.take() {
            // The receiver may be gone (client hung up); the write happened regardless.
            let _ = tx.send(result.into());
        }
    }
}

fn callback() -> (
    WriteCallback_TO<'static, abi_stable::std_types::RBox<()>>,
    oneshot::Receiver<Result<(), PluginError>>,
) {
    let (tx, rx) = oneshot::channel();
    (
        WriteCallback_TO::from_value(OneshotCallback(Some(tx)), TD_Opaque),
        rx,
    )
}

async fn outcome(rx: oneshot::Receiver<Result<(), PluginError>>) -> Result<(), PluginError> {
    rx.await.unwrap_or_else(|_| {
        Err(PluginError::internal(
            "the host dropped a write without completing it",
        ))
    })
}

impl Store {
    /// Wraps the store object the host passed to `start_frontend`.
    pub fn new(store: StoreBox) -> Self {
        Store {
            inner: Arc::new(store),
        }
    }

    /// The value under `key`, or `None`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        let value: Result<_, _> = self.inner.get(key.into()).into();
        Ok(value?.into_option().map(RVec::into_vec))
    }

    /// Stores `value` under `key`, resolving once durable.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), PluginError> {
        let (done, rx) = callback();
        self.inner.put(key.into(), value.into(), done);
        outcome(rx).await
    }

    /// Removes `key`, resolving once durable. A missing key is not an error.
    pub async fn delete(&self, key: Vec<u8>) -> Result<(), PluginError> {
        let (done, rx) = callback();
        self.inner.delete(key.into(), done);
        outcome(rx).await
    }

    /// [`Store::put`] for threads that may block (not async worker threads).
    pub fn put_blocking(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), PluginError> {
        let (done, rx) = callback();
        self.inner.put(key.into(), value.into(), done);
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(PluginError::internal("write dropped by the host")))
    }

    /// [`Store::delete`] for threads that may block (not async worker threads).
    pub fn delete_blocking(&self, key: Vec<u8>) -> Result<(), PluginError> {
        let (done, rx) = callback();
        self.inner.delete(key.into(), done);
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(PluginError::internal("write dropped by the host")))
    }

    /// False while the host is starting or stopping: answer readiness probes with this.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// The host's key and value size limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits()
    }
}
