//! A write on its way to the writer: what to do ([`WriteOp`]), whom to tell ([`Completion`]),
//! and the queue message that carries it ([`Msg`]).
//!
//! Its own module so that the store (which queues writes) and the writer (which takes
//! them) both depend on it and not on each other.

use kvs_plugin_api::PluginError;

/// A write waiting for the writer.
pub enum WriteOp {
    /// Set a key.
    Put(Box<[u8]>, Box<[u8]>),
    /// Remove a key.
    Delete(Box<[u8]>),
}

/// A write and whom to tell when it is done.
pub struct WriteRequest {
    /// What to write.
    pub op: WriteOp,
    /// Called once with the outcome.
    pub done: Completion,
    /// The request's store span (disabled when tracing is off): the writer's batch
    /// span and it link to each other.
    pub trace: tracing::Span,
}

/// What the writer's queue carries.
pub enum Msg {
    /// A write to log and apply.
    Write(WriteRequest),
    /// Log what is queued, close the logger, exit.
    Stop,
}

type Callback = Box<dyn FnOnce(Result<(), PluginError>) + Send>;

/// Tells a writer's caller the outcome, exactly once. If dropped uncompleted (a write
/// still queued when the writer exited), it completes with `unavailable`, so no caller
/// waits forever and none is told "ok" for a write that was not logged.
pub struct Completion(Option<Callback>);

impl Completion {
    /// Wraps the function to call with the outcome.
    pub fn new(f: impl FnOnce(Result<(), PluginError>) + Send + 'static) -> Self {
        Completion(Some(Box::new(f)))
    }

    /// Delivers the outcome.
    pub fn complete(mut self, result: Result<(), PluginError>) {
        if let Some(f) = self.0.take() {
            f(result);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(PluginError::unavailable(
                "kvs shut down before this write was logged; it was not applied",
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_still_queued_when_the_writer_is_gone_completes_with_unavailable() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let request = WriteRequest {
            trace: tracing::Span::none(),
            op: WriteOp::Delete(b"k".to_vec().into()),
            done: Completion::new(move |r| done_tx.send(r).unwrap()),
        };
        assert!(tx.send(Msg::Write(request)).is_ok());
        // The writer exits with this write still in its queue: the queue is dropped.
        drop(rx);
        drop(tx);
        let outcome = done_rx.recv().expect("the caller was never told");
        let err = outcome.unwrap_err();
        assert_eq!(err.code(), kvs_plugin_api::ErrorCode::UNAVAILABLE);
        assert!(err.message().contains("not applied"), "{err}");
    }
}
