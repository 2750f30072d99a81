//! The writer's part in migrations: a cut, the tee, the switch.

use super::*;

/// Waits for the outcomes of `n` writes.
fn wait_for(outcomes: &Outcomes, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while outcomes.lock().unwrap().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "writes never completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_migration_copies_the_cut_then_every_later_batch_and_switches_with_nothing_lost() {
    let (old, new) = (Recorded::default(), Recorded::default());
    let map = Arc::new(Map::default());
    let (writer, tx) = spawn(Recording::into(&old), &map, true);
    let outcomes = Outcomes::default();
    for key in ["a", "b", "c"] {
        queue_put(&tx, key, &outcomes);
    }
    // The cut: as of the three puts (7, 8, 9); its 3 keys take 10..=12 in the new log.
    let (batches, rest) = crossbeam_channel::unbounded();
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let tee = Tee {
        batches,
        pending_bytes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        max_pending_bytes: 1 << 20,
    };
    tx.send(Msg::Cut(CutRequest {
        tee: Some(tee),
        reply,
    }))
    .unwrap();
    let cut = answer.recv().unwrap().unwrap();
    assert_eq!((cut.point(), cut.keys()), (9, 3));
    assert!(
        map.begin_cut(9).is_none(),
        "one cut at a time: a backup now would be refused"
    );
    queue_put(&tx, "d", &outcomes); // 13: after the skipped numbers
    wait_for(&outcomes, 4);
    let mut copied = Vec::new();
    for shard in 0..cut.shards() {
        map.read_cut(&cut, shard, |r| copied.push((r.key.to_vec(), r.revision)));
    }
    map.end_cut(&cut);
    copied.sort();
    assert_eq!(
        copied,
        [(b"a".to_vec(), 7), (b"b".to_vec(), 8), (b"c".to_vec(), 9)],
        "d came after the cut"
    );
    // The migration took "d" from the tee already; "e" is left for the switch.
    let teed: Vec<LoggedEvent> = rest.recv().unwrap();
    assert_eq!((teed[0].sequence, &teed[0].key[..]), (13, &b"d"[..]));
    queue_put(&tx, "e", &outcomes);
    wait_for(&outcomes, 5);
    let (done, switched) = std::sync::mpsc::sync_channel(1);
    tx.send(Msg::Switch(Switch {
        to: Box::new(Recording::into(&new)),
        stores_expiry: true,
        atomic_batch: true,
        rest,
        done,
    }))
    .unwrap();
    let switched = switched.recv().unwrap().unwrap();
    assert_eq!(switched.caught_up, 1, "e, appended during the pause");
    queue_put(&tx, "f", &outcomes);
    let (_, closed) = writer.stop();
    closed.unwrap();
    let logged = |r: &Recorded| -> Vec<(u64, Vec<u8>)> {
        r.lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|(s, _, k)| (*s, k.clone()))
            .collect()
    };
    assert_eq!(
        logged(&old),
        [
            (7, b"a".to_vec()),
            (8, b"b".to_vec()),
            (9, b"c".to_vec()),
            (13, b"d".to_vec()),
            (14, b"e".to_vec())
        ]
    );
    assert_eq!(
        logged(&new),
        [(14, b"e".to_vec()), (15, b"f".to_vec())],
        "the switch's catch-up, then the writer's own appends"
    );
    assert!(outcomes.lock().unwrap().iter().all(|(_, r)| r.is_ok()));
}
