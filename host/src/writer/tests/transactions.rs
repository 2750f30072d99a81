//! Transactions in the writer's batches: positions, visibility to later writes, failure.

use super::*;

type Replied = Arc<Mutex<Vec<Result<crate::write_request::Reply, PluginError>>>>;

/// Queues `transaction`, whose reply lands in `replies`.
fn queue_transaction(tx: &WriteQueue, transaction: kvs_plugin_api::Transaction, replies: &Replied) {
    let replies = replies.clone();
    let request = WriteRequest {
        op: WriteOp::Transaction(Box::new(transaction)),
        done: Completion::with_reply(move |r| replies.lock().unwrap().push(r)),
        trace: tracing::Span::none(),
        admitted: Default::default(),
    };
    assert!(tx.send(Msg::Write(request)).is_ok());
}

/// Transactions in a batch between plain writes: each step that writes takes the next
/// position (one that writes nothing takes none), later writes see the transaction's
/// effects, a failed transaction logs nothing, and each outcome's revision is its
/// step's position.
#[test]
fn transactions_take_consecutive_positions_among_the_batch_writes() {
    use crate::write_request::Reply;
    use kvs_plugin_api::{Change, Condition, Transaction, Update};
    let batches = Recorded::default();
    let map = Arc::new(Map::default());
    let tx = WriteQueue::new(64);
    let (puts, updates, replies) = (Outcomes::default(), Updated::default(), Replied::default());
    queue_put(&tx, "a", &puts);
    queue_transaction(
        &tx,
        Transaction::new()
            .and(Update::new("b", Change::Put(b"1".to_vec())).when(Condition::Absent))
            // Absent: changes nothing, logs nothing, in the middle.
            .and(Update::new("zz", Change::Delete))
            .and(Update::new("a", Change::Append(b"!".to_vec())))
            .and(Update::new("b", Change::Increment(1))),
        &replies,
    );
    // Sees the transaction's b (= 2): fails, logs nothing.
    queue_transaction(
        &tx,
        Transaction::new()
            .and(Update::new("c", Change::Put(b"x".to_vec())))
            .and(Update::new("b", Change::Put(b"y".to_vec())).when(Condition::Absent)),
        &replies,
    );
    queue_update(&tx, Update::new("b", Change::Increment(10)), &updates);
    let settings = settings(7, 64, true);
    let stats = run_to_end(Recording::into(&batches), &map, tx.clone(), settings);
    let batches = batches.lock().unwrap();
    assert_eq!(batches.len(), 1, "one group commit");
    let logged: Vec<(u64, &[u8])> = batches[0]
        .iter()
        .map(|(s, _, key)| (*s, key.as_slice()))
        .collect();
    assert_eq!(
        logged,
        [(7, &b"a"[..]), (8, b"b"), (9, b"a"), (10, b"b"), (11, b"b")]
    );
    assert_eq!(stats.writes, 5);
    let replies = replies.lock().unwrap();
    let Ok(Reply::Many(first)) = &replies[0] else {
        panic!("{:?}", replies[0])
    };
    let revisions: Vec<(bool, u64)> = first.iter().map(|o| (o.applied, o.revision)).collect();
    assert_eq!(revisions, [(true, 8), (false, 0), (true, 9), (true, 10)]);
    assert_eq!(first[3].value.as_deref(), Some(&b"2"[..]));
    let Ok(Reply::Many(second)) = &replies[1] else {
        panic!("{:?}", replies[1])
    };
    assert!(second.iter().all(|o| !o.applied), "{second:?}");
    assert_eq!(second[1].revision, 10, "b as the first transaction left it");
    let incremented = updates.lock().unwrap()[0].clone().unwrap();
    assert_eq!(
        (incremented.value.as_deref(), incremented.revision),
        (Some(&b"12"[..]), 11)
    );
    assert_eq!(map.get(b"a").unwrap(), b"v!");
    assert_eq!(map.get(b"c"), None);
    assert_eq!(map.entry(b"b").unwrap().revision(), 11);
}

/// A logger that refuses a batch too large to append all or none (TOO_LARGE, as etcd's
/// does over one transaction's limits) gets it again in parts of whole requests: no
/// request is split, every write that fits is made in queue order, and a request too
/// large alone fails with the logger's error.
#[test]
fn a_batch_too_large_for_one_append_is_appended_in_parts_between_requests() {
    use crate::write_request::Reply;
    use kvs_plugin_api::{Change, ErrorCode, Transaction, Update};
    let batches = Recorded::default();
    let map = Arc::new(Map::default());
    let tx = WriteQueue::new(64);
    let (puts, replies) = (Outcomes::default(), Replied::default());
    let transaction = |keys: &[&str]| {
        keys.iter().fold(Transaction::new(), |t, key| {
            t.and(Update::new(*key, Change::Put(b"t".to_vec())))
        })
    };
    queue_put(&tx, "a", &puts);
    queue_put(&tx, "b", &puts);
    queue_transaction(&tx, transaction(&["c", "d", "e"]), &replies);
    queue_put(&tx, "f", &puts);
    queue_transaction(&tx, transaction(&["h", "i", "j", "k"]), &replies);
    queue_put(&tx, "g", &puts);
    let log = Recording {
        batches: batches.clone(),
        max_events: Some(3),
        ..Recording::default()
    };
    run_to_end(log, &map, tx.clone(), settings(1, 64, true));
    let batches = batches.lock().unwrap();
    let appended: Vec<Vec<&[u8]>> = batches
        .iter()
        .map(|b| b.iter().map(|(_, _, key)| key.as_slice()).collect())
        .collect();
    assert_eq!(
        appended,
        [
            vec![&b"a"[..]],
            vec![b"b"],
            vec![b"c", b"d", b"e"],
            vec![b"f"],
            vec![b"g"]
        ],
        "whole requests, in queue order"
    );
    let sequences: Vec<u64> = batches.iter().flatten().map(|e| e.0).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "numbers rise: {sequences:?}"
    );
    let puts = puts.lock().unwrap();
    assert!(puts.iter().all(|(_, r)| r.is_ok()), "{puts:?}");
    let replies = replies.lock().unwrap();
    assert!(matches!(&replies[0], Ok(Reply::Many(o)) if o.iter().all(|o| o.applied)));
    match &replies[1] {
        Err(e) => assert_eq!(e.code(), ErrorCode::TOO_LARGE, "{e}"),
        other => panic!("a transaction too large alone: {other:?}"),
    }
    for key in ["a", "b", "c", "d", "e", "f", "g"] {
        assert!(map.get(key.as_bytes()).is_some(), "{key}");
    }
    assert!(map.get(b"h").is_none());
}
