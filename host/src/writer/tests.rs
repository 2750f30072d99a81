//! The writer against a log that records what it is handed: group commit, sequence
//! numbers, log-then-apply, and a refused batch.

use std::sync::{Arc, Mutex};

use kvs_plugin_api::{EventKind, PluginError};

use super::*;
use crate::ports::recording::{Recorded, Recording};
pub(super) use crate::write_request::{LoggedEvent, WriteOp};

type Outcomes = Arc<Mutex<Vec<(Vec<u8>, Result<(), PluginError>)>>>;

/// Queues a put of `key` whose outcome lands in `outcomes`.
fn queue_put(tx: &WriteQueue, key: &str, outcomes: &Outcomes) {
    let outcomes = outcomes.clone();
    let name = key.as_bytes().to_vec();
    let request = WriteRequest {
        op: WriteOp::Put(key.as_bytes().into(), b"v".to_vec().into()),
        done: Completion::new(move |r| outcomes.lock().unwrap().push((name, r))),
        trace: tracing::Span::none(),
        admitted: Default::default(),
    };
    assert!(tx.send(Msg::Write(request)).is_ok());
}

/// A local log's writer settings: numbering from `next_sequence`, batches of at most
/// `max_batch`, a logger that appends batches whole.
fn settings(next_sequence: u64, max_batch: usize, stores_expiry: bool) -> WriterSettings {
    WriterSettings {
        next_sequence,
        max_batch,
        acknowledge: Acknowledge::Apply,
        stores_expiry,
        atomic_batch: true,
        max_value_bytes: 1 << 20,
        overload: crate::overload::Overload::with_defaults(&Metrics::new(false)),
    }
}

/// Runs a writer over `log` and `map` until it has taken everything queued on
/// `queue`, then stops it.
fn run_to_end(
    log: impl Log + 'static,
    map: &Arc<Map>,
    queue: Arc<WriteQueue>,
    settings: WriterSettings,
) -> WriterStats {
    let writer = Writer::spawn(
        Box::new(log),
        map.clone(),
        queue,
        settings,
        Metrics::new(false),
    )
    .unwrap_or_else(|(e, _)| panic!("{e}"));
    let (stats, closed) = writer.stop();
    closed.unwrap();
    stats
}

/// Runs a writer over `log` with `keys` queued before it starts, then stops it.
fn run_writer(
    log: Recording,
    keys: &[&str],
    max_batch: usize,
) -> (Arc<Map>, Outcomes, WriterStats) {
    let map = Arc::new(Map::default());
    let tx = WriteQueue::new(64);
    let outcomes = Outcomes::default();
    for key in keys {
        queue_put(&tx, key, &outcomes);
    }
    let settings = settings(7, max_batch, true);
    let writer = match Writer::spawn(
        Box::new(log),
        map.clone(),
        tx.clone(),
        settings,
        Metrics::new(false),
    ) {
        Ok(writer) => writer,
        Err((e, _)) => panic!("cannot start the writer: {e}"),
    };
    let (stats, closed) = writer.stop();
    closed.unwrap();
    (map, outcomes, stats)
}

#[test]
fn queued_writes_share_appends_up_to_max_batch_in_order() {
    let batches = Recorded::default();
    let log = Recording::into(&batches);
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let (map, outcomes, stats) = run_writer(log, &keys, 4);
    let batches = batches.lock().unwrap();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [4, 4, 2], "group commit up to max_batch");
    let logged: Vec<(u64, Vec<u8>)> = batches
        .iter()
        .flatten()
        .map(|(seq, kind, key)| {
            assert_eq!(*kind, EventKind::PUT);
            (*seq, key.clone())
        })
        .collect();
    let want: Vec<(u64, Vec<u8>)> = keys
        .iter()
        .zip(7u64..)
        .map(|(k, seq)| (seq, k.as_bytes().to_vec()))
        .collect();
    assert_eq!(logged, want, "consecutive sequence numbers, queue order");
    assert_eq!(map.len(), keys.len());
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes.len(), keys.len());
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()));
    assert_eq!((stats.batches, stats.writes, stats.failed), (3, 10, 0));
}

#[test]
fn a_refused_batch_is_answered_with_its_error_applied_nowhere_and_its_numbers_never_reused() {
    let batches = Recorded::default();
    let log = Recording {
        batches: batches.clone(),
        refuse: vec![0],
        ..Recording::default()
    };
    let (map, outcomes, stats) = run_writer(log, &["a", "b", "c"], 2);
    let batches = batches.lock().unwrap();
    let seqs: Vec<Vec<u64>> = batches
        .iter()
        .map(|b| b.iter().map(|e| e.0).collect())
        .collect();
    assert_eq!(
        seqs,
        [vec![7, 8], vec![9]],
        "the refused batch's 7 and 8 are not reused"
    );
    assert!(
        map.get(b"a").is_none() && map.get(b"b").is_none(),
        "refused, not applied"
    );
    assert!(map.get(b"c").is_some());
    let outcomes = outcomes.lock().unwrap();
    for (key, result) in outcomes.iter() {
        match key.as_slice() {
            b"a" | b"b" => assert_eq!(
                result.as_ref().unwrap_err().message(),
                "disk full",
                "the logger's error reaches the caller"
            ),
            _ => assert!(result.is_ok()),
        }
    }
    assert_eq!((stats.batches, stats.writes, stats.failed), (2, 1, 2));
}

type Updated = Arc<Mutex<Vec<Result<kvs_plugin_api::Outcome, PluginError>>>>;

/// Queues `update`, whose outcome lands in `outcomes`.
fn queue_update(tx: &WriteQueue, update: kvs_plugin_api::Update, outcomes: &Updated) {
    let outcomes = outcomes.clone();
    let request = WriteRequest {
        op: WriteOp::Update(Box::new(update)),
        done: Completion::with_outcome(move |r| outcomes.lock().unwrap().push(r)),
        trace: tracing::Span::none(),
        admitted: Default::default(),
    };
    assert!(tx.send(Msg::Write(request)).is_ok());
}

fn spawn(log: Recording, map: &Arc<Map>, stores_expiry: bool) -> (Writer, Arc<WriteQueue>) {
    let tx = WriteQueue::new(64);
    let settings = settings(7, 64, stores_expiry);
    match Writer::spawn(
        Box::new(log),
        map.clone(),
        tx.clone(),
        settings,
        Metrics::new(false),
    ) {
        Ok(writer) => (writer, tx),
        Err((e, _)) => panic!("cannot start the writer: {e}"),
    }
}

#[test]
fn updates_in_one_batch_see_the_writes_before_them_and_log_only_their_effect() {
    use kvs_plugin_api::{Change, Condition, Expiry, Update};
    let batches = Recorded::default();
    let log = Recording::into(&batches);
    let map = Arc::new(Map::default());
    let tx = WriteQueue::new(64);
    let (puts, updates) = (Outcomes::default(), Updated::default());
    // All queued before the writer starts: one batch.
    queue_put(&tx, "a", &puts);
    queue_update(
        &tx,
        Update::new("a", Change::Append(b"w".to_vec())),
        &updates,
    );
    queue_update(
        &tx,
        Update::new("a", Change::Put(b"x".to_vec())).when(Condition::Absent),
        &updates,
    );
    queue_update(&tx, Update::new("n", Change::Increment(41)), &updates);
    queue_update(&tx, Update::new("n", Change::Increment(1)), &updates);
    queue_update(&tx, Update::new("a", Change::Increment(1)), &updates);
    let deadline = crate::map::now_ms() + 60_000;
    queue_update(
        &tx,
        Update::new("t", Change::Put(b"v".to_vec())).expiring(Expiry::At(deadline)),
        &updates,
    );
    let settings = settings(7, 64, true);
    let stats = run_to_end(log, &map, tx.clone(), settings);
    let batches = batches.lock().unwrap();
    assert_eq!(batches.len(), 1, "one group commit");
    let logged: Vec<(u64, EventKind, &[u8])> = batches[0]
        .iter()
        .map(|(s, k, key)| (*s, *k, key.as_slice()))
        .collect();
    assert_eq!(
        logged,
        [
            (7, EventKind::PUT, &b"a"[..]),
            (8, EventKind::PUT, b"a"),
            (9, EventKind::PUT, b"n"),
            (10, EventKind::PUT, b"n"),
            (11, EventKind::PUT_UNTIL, b"t"),
        ],
        "the failed condition and the failed increment log nothing"
    );
    assert_eq!(stats.writes, 5);
    let updates = updates.lock().unwrap();
    let appended = updates[0].as_ref().unwrap();
    assert_eq!((appended.length, appended.revision), (2, 8), "vw");
    let refused = updates[1].as_ref().unwrap();
    assert!(!refused.applied);
    assert_eq!(
        refused.revision, 8,
        "the revision of the batch's earlier write"
    );
    assert_eq!(
        updates[2].as_ref().unwrap().value.as_deref(),
        Some(&b"41"[..])
    );
    assert_eq!(
        updates[3].as_ref().unwrap().value.as_deref(),
        Some(&b"42"[..])
    );
    let not_a_number = updates[4].as_ref().unwrap_err();
    assert!(
        not_a_number.message().contains("not an integer"),
        "{not_a_number}"
    );
    assert_eq!(updates[5].as_ref().unwrap().expires_at, Some(deadline));
    assert_eq!(map.get(b"a").unwrap(), b"vw");
    assert_eq!(map.entry(b"n").unwrap().revision(), 10);
    assert_eq!(map.entry(b"t").unwrap().deadline(), Some(deadline));
}

#[test]
fn the_sweep_logs_the_removal_of_an_expired_key_unless_it_was_set_again() {
    let batches = Recorded::default();
    let log = Recording::into(&batches);
    let map = Arc::new(Map::default());
    let past = crate::map::now_ms() - 1;
    map.insert(b"old", b"v", 3, Some(past));
    map.insert(b"kept", b"v", 4, None);
    let (writer, _tx) = spawn(log, &map, true);
    let waited = Instant::now();
    while map.entry(b"old").is_some() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(5),
            "never swept"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (_, closed) = writer.stop();
    closed.unwrap();
    let batches = batches.lock().unwrap();
    assert_eq!(batches.concat(), [(7, EventKind::DELETE, b"old".to_vec())]);
    assert!(map.get(b"kept").is_some());
}

#[test]
fn a_deadline_the_logger_cannot_store_is_refused_and_nothing_logged() {
    use kvs_plugin_api::{Change, Expiry, Update};
    let batches = Recorded::default();
    let log = Recording::into(&batches);
    let map = Arc::new(Map::default());
    let (writer, tx) = spawn(log, &map, false);
    let updates = Updated::default();
    let deadline = crate::map::now_ms() + 60_000;
    queue_update(
        &tx,
        Update::new("t", Change::Put(b"v".to_vec())).expiring(Expiry::At(deadline)),
        &updates,
    );
    queue_update(&tx, Update::new("n", Change::Increment(1)), &updates);
    let (_, closed) = writer.stop();
    closed.unwrap();
    let updates = updates.lock().unwrap();
    assert!(
        updates[0]
            .as_ref()
            .unwrap_err()
            .message()
            .contains("expiry")
    );
    assert!(updates[1].is_ok(), "an update without a deadline is fine");
    assert_eq!(batches.lock().unwrap().concat().len(), 1);
    assert!(map.get(b"t").is_none());
}

/// Runs a writer over `first`, queues `a`, a swap whose `open` and `reopen` are given,
/// then `b`; returns the swap's outcome and every write's.
fn swap_between(
    first: Recording,
    open: crate::write_request::OpenLog,
    reopen: crate::write_request::OpenLog,
) -> (crate::write_request::SwapOutcome, Outcomes) {
    let map = Arc::new(Map::default());
    let tx = WriteQueue::new(64);
    let outcomes = Outcomes::default();
    queue_put(&tx, "a", &outcomes);
    let (done, answer) = std::sync::mpsc::sync_channel(1);
    let swap = crate::write_request::LogSwap {
        open,
        reopen,
        stores_expiry: true,
        atomic_batch: true,
        done,
    };
    assert!(tx.send(Msg::SwapLog(swap)).is_ok());
    queue_put(&tx, "b", &outcomes);
    let settings = settings(1, 64, true);
    let writer = Writer::spawn(
        Box::new(first),
        map,
        tx.clone(),
        settings,
        Metrics::new(false),
    )
    .unwrap_or_else(|(e, _)| panic!("cannot start the writer: {e}"));
    let swapped = answer.recv().expect("the swap is answered");
    let (_, closed) = writer.stop();
    closed.unwrap();
    (swapped, outcomes)
}

#[test]
fn a_swap_lands_between_two_writes_and_numbering_goes_on() {
    let (old, new) = (Recorded::default(), Recorded::default());
    let next = new.clone();
    let (swapped, outcomes) = swap_between(
        Recording::into(&old),
        Box::new(move || Ok(Box::new(Recording::into(&next)) as Box<dyn Log>)),
        Box::new(|| Err("never asked".into())),
    );
    assert!(swapped.is_ok(), "the swap failed");
    let keys = |r: &Recorded| -> Vec<(u64, Vec<u8>)> {
        let batches = r.lock().unwrap();
        batches
            .iter()
            .flatten()
            .map(|(s, _, k)| (*s, k.clone()))
            .collect()
    };
    assert_eq!(
        keys(&old),
        [(1, b"a".to_vec())],
        "queued before the swap: the old log"
    );
    assert_eq!(
        keys(&new),
        [(2, b"b".to_vec())],
        "after it: the new one, numbered on"
    );
    assert!(outcomes.lock().unwrap().iter().all(|(_, r)| r.is_ok()));
}

#[test]
fn a_new_logger_that_does_not_open_leaves_the_old_one_reopened() {
    let (old, again) = (Recorded::default(), Recorded::default());
    let reopened = again.clone();
    let (swapped, outcomes) = swap_between(
        Recording::into(&old),
        Box::new(|| Err("the new build refuses its table".into())),
        Box::new(move || Ok(Box::new(Recording::into(&reopened)) as Box<dyn Log>)),
    );
    let Err((why, _)) = swapped else {
        panic!("the swap was reported done")
    };
    assert!(
        why.contains("refuses its table") && why.contains("reopened"),
        "{why}"
    );
    assert_eq!(again.lock().unwrap().len(), 1, "b went to the reopened log");
    assert!(outcomes.lock().unwrap().iter().all(|(_, r)| r.is_ok()));
}

#[test]
fn when_neither_opens_writes_fail_and_none_is_acknowledged() {
    let old = Recorded::default();
    let (swapped, outcomes) = swap_between(
        Recording::into(&old),
        Box::new(|| Err("new: no".into())),
        Box::new(|| Err("old: no".into())),
    );
    let Err((why, health)) = swapped else {
        panic!("the swap was reported done")
    };
    assert!(why.contains("restarted"), "{why}");
    assert!(
        health.is_some_and(|healthy| !healthy()),
        "readiness says so"
    );
    let outcomes = outcomes.lock().unwrap();
    assert!(outcomes[0].1.is_ok(), "a, before the swap, was logged");
    let err = outcomes[1].1.as_ref().unwrap_err();
    assert!(err.message().contains("restart kvs"), "{err}");
}

mod deferred;
mod migrate;
mod transactions;
