//! The store on its own (no writer): limits, phases, the request hook and the queue.

use std::sync::{Arc, Mutex};

use kvs_plugin_api::ErrorCode;

use super::*;
use crate::caller::Action;

type Outcome = Arc<Mutex<Option<Result<(), PluginError>>>>;

fn completion() -> (Completion, Outcome) {
    let outcome = Outcome::default();
    let seen = outcome.clone();
    (
        Completion::new(move |r| *seen.lock().unwrap() = Some(r)),
        outcome,
    )
}

/// The error code a write was answered with; `None` while it is unanswered (queued).
fn code(outcome: &Outcome) -> Option<ErrorCode> {
    match outcome.lock().unwrap().as_ref() {
        None => None,
        Some(Ok(())) => panic!("answered ok without a writer"),
        Some(Err(e)) => Some(e.code()),
    }
}

/// A store in `phase` whose queue holds at most `capacity` writes (nothing takes them).
fn store(
    phase: Phase,
    capacity: usize,
    hook: Option<Arc<dyn RequestHook>>,
) -> (Store, Arc<WriteQueue>) {
    let queue = WriteQueue::new(capacity);
    let limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
    };
    let metrics = Metrics::new(false);
    let store = Store::new(
        Arc::new(Map::default()),
        queue.clone(),
        limits,
        None,
        hook,
        metrics.clone(),
        crate::overload::Overload::with_defaults(&metrics),
    );
    store.set_phase(phase);
    (store, queue)
}

#[test]
fn oversized_and_empty_keys_and_values_are_refused_before_queueing() {
    let (store, rx) = store(Phase::Serving, 8, None);
    for (key, value, want) in [
        (Vec::new(), b"v".to_vec(), ErrorCode::INVALID_INPUT),
        (b"123456789".to_vec(), b"v".to_vec(), ErrorCode::TOO_LARGE),
        (b"k".to_vec(), vec![0; 17], ErrorCode::TOO_LARGE),
    ] {
        let (done, outcome) = completion();
        store.put(key, value, done);
        assert_eq!(code(&outcome), Some(want));
    }
    assert!(rx.is_empty(), "nothing refused reaches the writer");
    let (done, outcome) = completion();
    store.put(b"12345678".to_vec(), vec![0; 16], done);
    assert_eq!(
        code(&outcome),
        None,
        "at the limits: queued, not yet answered"
    );
    assert_eq!(rx.len(), 1);
}

#[test]
fn nothing_is_served_while_starting_and_no_write_after_stopping() {
    let (starting, rx) = store(Phase::Starting, 8, None);
    let err = starting.get(b"k").unwrap_err();
    assert_eq!(err.code(), ErrorCode::UNAVAILABLE);
    let (done, outcome) = completion();
    starting.put(b"k".to_vec(), b"v".to_vec(), done);
    assert_eq!(code(&outcome), Some(ErrorCode::UNAVAILABLE));
    let (stopped, _rx2) = store(Phase::Stopped, 8, None);
    let (done, outcome) = completion();
    stopped.delete(b"k".to_vec(), done);
    assert_eq!(code(&outcome), Some(ErrorCode::UNAVAILABLE));
    assert!(rx.is_empty());
    // Draining: frontends finish their requests, so writes are still taken.
    let (draining, rx3) = store(Phase::Draining, 8, None);
    let (done, _) = completion();
    draining.put(b"k".to_vec(), b"v".to_vec(), done);
    assert_eq!(rx3.len(), 1);
}

#[test]
fn a_full_queue_answers_unavailable_at_once() {
    let (store, rx) = store(Phase::Serving, 1, None);
    let (first, _) = completion();
    store.put(b"a".to_vec(), b"v".to_vec(), first);
    let (second, outcome) = completion();
    store.put(b"b".to_vec(), b"v".to_vec(), second);
    assert_eq!(code(&outcome), Some(ErrorCode::UNAVAILABLE));
    assert!(
        format!("{:?}", outcome.lock().unwrap()).contains("queue is full"),
        "says why"
    );
    assert_eq!(rx.len(), 1);
}

/// Refuses writes to keys under `ro/` and records what it was asked.
struct ReadOnlyPrefix(Mutex<Vec<Asked>>);

/// What the hook was asked: the action, the key, the caller's token.
type Asked = (Action, Vec<u8>, Option<String>);

impl RequestHook for ReadOnlyPrefix {
    fn check(&self, op: Action, key: &[u8], caller: &Caller<'_>) -> Result<(), PluginError> {
        let token = caller.bearer_token.map(str::to_string);
        self.0.lock().unwrap().push((op, key.to_vec(), token));
        if op != Action::Get && key.starts_with(b"ro/") {
            return Err(PluginError::new(ErrorCode::PERMISSION_DENIED, "read-only"));
        }
        Ok(())
    }
}

#[test]
fn the_request_hook_sees_every_call_as_its_caller_and_a_refused_write_is_never_queued() {
    let hook = Arc::new(ReadOnlyPrefix(Mutex::new(Vec::new())));
    let (store, rx) = store(Phase::Serving, 8, Some(hook.clone()));
    let caller = Caller {
        bearer_token: Some("t0ken"),
        ..Caller::anonymous("rest")
    };
    let (done, outcome) = completion();
    store.put_as(&caller, b"ro/x".to_vec(), b"v".to_vec(), done);
    assert_eq!(code(&outcome), Some(ErrorCode::PERMISSION_DENIED));
    assert!(rx.is_empty(), "a refused write is not queued");
    assert_eq!(store.get_as(&caller, b"ro/x").unwrap(), None);
    let (done, _) = completion();
    store.delete_as(&caller, b"rw/x".to_vec(), done);
    assert_eq!(rx.len(), 1);
    let seen = hook.0.lock().unwrap();
    let want = [
        (Action::Put, b"ro/x".to_vec()),
        (Action::Get, b"ro/x".to_vec()),
        (Action::Delete, b"rw/x".to_vec()),
    ];
    assert_eq!(seen.len(), want.len());
    for ((op, key, token), (want_op, want_key)) in seen.iter().zip(want) {
        assert_eq!((*op, key.clone()), (want_op, want_key));
        assert_eq!(token.as_deref(), Some("t0ken"), "the caller as presented");
    }
}
