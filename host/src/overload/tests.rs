//! Overload through a running host (the real store and writer) over a logger whose
//! appends wait for the test's go-ahead: expired writes never reach the logger; a
//! connection with a write in flight is shed while the queue is slow, another is not.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs_plugin_api::{Limits, PluginError};

use super::*;
use crate::lifecycle::{Builder, Running};
use crate::ports::recording::{Recorded, Recording};

struct Host {
    running: Running,
    go: Sender<()>,
    logged: Recorded,
}

/// A host over a logger whose appends each wait for one go-ahead on `go`.
fn start() -> Host {
    let (go, gate) = channel();
    let logged = Recorded::default();
    let log = Recording {
        gate: Some(gate),
        ..Recording::into(&logged)
    };
    let limits = Limits {
        max_key_bytes: 64,
        max_value_bytes: 64,
    };
    let running = Builder::with_open_logger(Box::new(log), "gated", limits)
        .start()
        .expect("start");
    Host {
        running,
        go,
        logged,
    }
}

type Outcome = std::sync::mpsc::Receiver<Result<(), PluginError>>;

/// A put from the client at `peer`, with an optional deadline.
fn put(host: &Host, key: &str, peer: &str, deadline: Option<Instant>) -> Outcome {
    let (tx, rx) = channel();
    let caller = Caller {
        frontend: "test",
        peer: Some(peer),
        deadline,
        ..Caller::default()
    };
    host.running.store.put_as(
        &caller,
        key.as_bytes().to_vec(),
        b"v".to_vec(),
        Completion::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx
}

fn wait(outcome: &Outcome) -> Result<(), PluginError> {
    outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("the write was never answered")
}

/// Waits until the writer is inside an append (its queue is empty again).
fn until_taken(host: &Host) {
    let started = Instant::now();
    while host.running.store.queue_depth() > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never taken");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
}

fn refused(host: &Host, reason: &str) -> u64 {
    host.running
        .store
        .metrics()
        .writes_refused
        .with_label_values(&[reason])
        .get()
}

#[test]
fn a_write_whose_deadline_passed_while_queued_never_reaches_the_logger() {
    let host = start();
    let first = put(&host, "first", "127.0.0.1:1", None);
    until_taken(&host);
    // The logger is busy with `first`: these two queue behind it.
    let late = put(
        &host,
        "late",
        "127.0.0.1:2",
        Some(Instant::now() + Duration::from_millis(50)),
    );
    let kept = put(&host, "kept", "127.0.0.1:3", None);
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..2 {
        host.go.send(()).unwrap();
    }
    wait(&first).unwrap();
    wait(&kept).unwrap();
    let err = wait(&late).unwrap_err();
    assert_eq!(err.code(), kvs_plugin_api::ErrorCode::DEADLINE_EXCEEDED);
    assert!(err.message().contains("deadline passed"), "{err}");
    assert_eq!(
        Recording::keys(&host.logged),
        [b"first".to_vec(), b"kept".to_vec()],
        "the logger saw the expired write"
    );
    assert_eq!(host.running.store.get(b"late").unwrap(), None);
    assert_eq!(refused(&host, "deadline"), 1);
    drop(host.go);
    host.running.stop().unwrap();
}

#[test]
fn while_the_queue_is_slow_a_connection_with_a_write_in_flight_is_shed_and_others_are_not() {
    let host = start();
    // One batch that takes 600 ms: the writer's time per write is 600 ms now.
    let first = put(&host, "x", "127.0.0.1:1", None);
    until_taken(&host);
    std::thread::sleep(Duration::from_millis(600));
    host.go.send(()).unwrap();
    wait(&first).unwrap();
    // `greedy1` is in the logger; `queued` waits behind it.
    let greedy1 = put(&host, "greedy1", "127.0.0.2:1", None);
    until_taken(&host);
    let queued = put(&host, "queued", "127.0.0.3:1", None);
    // Past the burst of `greedy1`: a second request, not the rest of the first.
    std::thread::sleep(BURST);
    assert!(host.running.store.overload().wait_estimate(1) >= Duration::from_millis(550));
    // The greedy connection again, with `greedy1` in flight (its share of the two in
    // flight): a write queued now would wait ~600 ms, past the default target (500
    // ms), so it is refused at once.
    let started = Instant::now();
    let err = wait(&put(&host, "greedy2", "127.0.0.2:1", None)).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(err.code(), kvs_plugin_api::ErrorCode::UNAVAILABLE);
    assert!(err.message().contains("overloaded"), "{err}");
    // Another connection of the same address, with nothing in flight, is admitted.
    let polite = put(&host, "polite", "127.0.0.2:2", None);
    for _ in 0..3 {
        host.go.send(()).unwrap();
    }
    wait(&greedy1).unwrap();
    wait(&queued).unwrap();
    wait(&polite).unwrap();
    assert_eq!(refused(&host, "shed"), 1);
    assert_eq!(host.running.store.get(b"greedy2").unwrap(), None);
    drop(host.go);
    host.running.stop().unwrap();
}

#[test]
fn the_queue_is_bounded_in_bytes() {
    let metrics = crate::metrics::Metrics::new(false);
    let overload = Arc::new(Overload::new(
        20,
        100,
        metrics.refusal_counters(),
        metrics.queue_delay.clone(),
    ));
    let (a, _) = overload
        .admit(None, 0, 60, Completion::new(|_| {}))
        .ok()
        .unwrap();
    // 60 + 60 > 100: refused, naming the setting.
    let Err((e, _)) = overload.admit(None, 0, 60, Completion::new(|_| {})) else {
        panic!("admitted past queue_max_bytes");
    };
    assert!(e.message().contains("writer.queue_max_bytes"), "{e}");
    // Taken by the writer: room again.
    overload.taken(&a, true, Instant::now());
    assert!(overload.admit(None, 0, 60, Completion::new(|_| {})).is_ok());
    // One write larger than the bound is admitted into an empty queue (the value
    // limit, not this, decides whether it is too large).
    let empty = Arc::new(Overload::new(
        20,
        100,
        metrics.refusal_counters(),
        metrics.queue_delay.clone(),
    ));
    assert!(empty.admit(None, 0, 500, Completion::new(|_| {})).is_ok());
    assert_eq!(
        metrics
            .writes_refused
            .with_label_values(&["queue_bytes"])
            .get(),
        1
    );
}

#[test]
fn the_wait_is_the_queue_times_the_recent_time_per_write() {
    let metrics = crate::metrics::Metrics::new(false);
    let overload = Arc::new(Overload::new(
        20,
        1 << 20,
        metrics.refusal_counters(),
        metrics.queue_delay.clone(),
    ));
    let greedy = Caller {
        frontend: "test",
        peer: Some("127.0.0.1:1"),
        ..Caller::default()
    };
    let other = Caller {
        peer: Some("127.0.0.1:2"),
        ..greedy
    };
    // Admitted writes stay in flight (their completions held) until the test ends.
    let in_flight = Mutex::new(Vec::new());
    let admit = |caller: &Caller<'_>, queued| match overload.admit(
        Some(caller),
        queued,
        1,
        Completion::new(|_| {}),
    ) {
        Ok((_, done)) => {
            in_flight.lock().unwrap().push(done);
            true
        }
        Err(_) => false,
    };
    overload.batch_done(16, Duration::from_millis(16));
    assert_eq!(overload.wait_estimate(30), Duration::from_millis(30));
    // The measured delay: the first write of a batch; 0 once the queue is empty.
    let now = Instant::now();
    let waited = Admitted {
        queued: Some(now - Duration::from_millis(5)),
        ..Admitted::default()
    };
    overload.taken(&waited, true, now);
    assert_eq!(overload.queue_delay(), Duration::from_millis(5));
    overload.idle();
    assert_eq!(overload.queue_delay(), Duration::ZERO);
    // Alone, a connection is never shed, however long the queue.
    assert!(admit(&greedy, 1000));
    assert!(admit(&greedy, 1000));
    // Another connection has a write in flight too: the greedy one holds more than its
    // share.
    assert!(
        admit(&other, 1000),
        "a connection's first write is never shed"
    );
    assert!(
        admit(&greedy, 10),
        "10 queued: about 10 ms, under the target"
    );
    assert!(
        admit(&greedy, 30),
        "30 queued: over the target, but within the burst of its first write"
    );
    std::thread::sleep(BURST);
    assert!(!admit(&greedy, 30), "30 queued: about 30 ms, over it");
    assert!(admit(&other, 30), "the other holds less than its share");
    // One slow batch (a 500 ms fsync) moves the average by an eighth of it; quick
    // batches bring it back.
    overload.batch_done(1, Duration::from_millis(500));
    assert!(!admit(&greedy, 1));
    for _ in 0..40 {
        overload.batch_done(16, Duration::from_millis(16));
    }
    assert!(admit(&greedy, 10));
    for done in in_flight.into_inner().unwrap() {
        done.complete(Ok(()));
    }
}
