//! The writer against a log that records what it is handed: group commit, sequence
//! numbers, log-then-apply, and a refused batch.

use std::sync::{Arc, Mutex};

use kvs_plugin_api::{EventKind, PluginError};

use super::*;
use crate::ports::{HealthCheck, Log};

type Recorded = Arc<Mutex<Vec<Vec<(u64, EventKind, Vec<u8>)>>>>;

/// Keeps every batch it is given; refuses the appends whose number is in `refuse`.
struct Recording {
    batches: Recorded,
    refuse: Vec<usize>,
}

impl Log for Recording {
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        let mut batches = self.batches.lock().unwrap();
        let number = batches.len();
        batches.push(
            batch
                .iter()
                .map(|e| (e.sequence, e.kind, e.key.to_vec()))
                .collect(),
        );
        if self.refuse.contains(&number) {
            return Err(PluginError::unavailable("disk full"));
        }
        Ok(())
    }
    fn replay(
        &mut self,
        _sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
    fn health(&self) -> Option<HealthCheck> {
        None
    }
}

type Outcomes = Arc<Mutex<Vec<(Vec<u8>, Result<(), PluginError>)>>>;

/// Queues a put of `key` whose outcome lands in `outcomes`.
fn queue_put(tx: &Sender<Msg>, key: &str, outcomes: &Outcomes) {
    let outcomes = outcomes.clone();
    let name = key.as_bytes().to_vec();
    let request = WriteRequest {
        op: WriteOp::Put(key.as_bytes().into(), b"v".to_vec().into()),
        done: Completion::new(move |r| outcomes.lock().unwrap().push((name, r))),
        trace: tracing::Span::none(),
    };
    assert!(tx.send(Msg::Write(request)).is_ok());
}

/// Runs a writer over `log` with `keys` queued before it starts, then stops it.
fn run_writer(
    log: Recording,
    keys: &[&str],
    max_batch: usize,
) -> (Arc<Map>, Outcomes, WriterStats) {
    let map = Arc::new(Map::default());
    let (tx, rx) = crossbeam_channel::bounded(64);
    let outcomes = Outcomes::default();
    for key in keys {
        queue_put(&tx, key, &outcomes);
    }
    let settings = WriterSettings {
        next_sequence: 7,
        max_batch,
        acknowledge: Acknowledge::Apply,
    };
    let writer = match Writer::spawn(
        Box::new(log),
        map.clone(),
        (tx, rx),
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
    let log = Recording {
        batches: batches.clone(),
        refuse: Vec::new(),
    };
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
