//! Compaction against real files: rewriting while appends go on, a leftover rewrite
//! after a crash, which records a rewrite keeps.

use super::*;

#[test]
fn compaction_runs_while_writing_keeps_the_state_and_shrinks_the_file() {
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let cfg = Config::parse(&format!(
        "path = {path:?}\nsync = \"never\"\ncompact_min_bytes = 20000\ncompact_growth_percent = 100"
    ))
    .unwrap();
    let mut logger = FileLogger::open(cfg.clone()).unwrap();
    replay_all(&mut logger).unwrap();
    let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let (mut max_size, mut shrank) = (0u64, false);
    let value = [b'x'; 50];
    let mut seq = 0u64;
    let started = std::time::Instant::now();
    while seq < 3000 || !shrank {
        assert!(started.elapsed().as_secs() < 30, "no compaction happened");
        seq += 1;
        let key = format!("key-{}", seq % 10).into_bytes();
        if seq.is_multiple_of(7) {
            logger.append(&[Event::delete(seq, &key)]).unwrap();
            expected.remove(&key);
        } else {
            logger
                .append(&[Event::put(seq, &key, &value[..(seq % 50) as usize])])
                .unwrap();
            expected.insert(key, value[..(seq % 50) as usize].to_vec());
        }
        let size = std::fs::metadata(&path).unwrap().len();
        shrank |= size < max_size;
        max_size = max_size.max(size);
    }
    // The rewrite renamed over the log carries the log's lock: a second opener is
    // still refused.
    let err = FileLogger::open(cfg.clone())
        .err()
        .expect("opened a compacted log twice");
    assert!(err.message().contains("is in use"), "{err}");
    logger.close().unwrap();
    assert!(!compact_tmp_exists(&path));
    // Without compaction the log would hold every record ever written.
    let uncompacted: u64 = 16
        + (1..=seq)
            .map(|s| {
                12 + 13
                    + format!("key-{}", s % 10).len() as u64
                    + if s.is_multiple_of(7) { 0 } else { s % 50 }
            })
            .sum::<u64>();
    let final_size = std::fs::metadata(&path).unwrap().len();
    // How much smaller depends on how far writes outran the background rewrite; that
    // one happened at all (`shrank`) and removed data is what holds on any machine.
    assert!(
        final_size < uncompacted,
        "{final_size} vs {uncompacted} uncompacted"
    );

    let mut again = FileLogger::open(cfg).unwrap();
    let mut state = BTreeMap::new();
    let mut last = 0;
    for (s, kind, k, v) in replay_all(&mut again).unwrap() {
        assert!(s > last, "sequence {s} after {last}");
        last = s;
        if kind == EventKind::PUT {
            state.insert(k, v);
        } else {
            state.remove(&k);
        }
    }
    assert_eq!(state, expected);
}

fn compact_tmp_exists(log: &Path) -> bool {
    crate::compact::temp_path(log).exists()
}

#[test]
fn a_leftover_compaction_file_is_removed_and_the_log_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let all = write_records(&path, 4);
    std::fs::write(crate::compact::temp_path(&path), b"half-written rewrite").unwrap();
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all);
    assert!(!compact_tmp_exists(&path));
}

#[test]
fn compaction_keeps_the_newest_record_and_drops_expired_puts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let mut logger = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut logger).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let until = |deadline: u64| [deadline.to_le_bytes().as_slice(), b"v"].concat();
    let (past, future) = (until(now - 1000), until(now + 3_600_000));
    for seq in 1..=20 {
        logger.append(&[Event::put(seq, b"a", b"v")]).unwrap();
    }
    fn expiring<'a>(seq: u64, key: &'a [u8], value: &'a [u8]) -> Event<'a> {
        Event {
            kind: EventKind::PUT_UNTIL,
            ..Event::put(seq, key, value)
        }
    }
    logger.append(&[expiring(21, b"gone", &past)]).unwrap();
    logger.append(&[expiring(22, b"lease", &future)]).unwrap();
    logger.append(&[Event::delete(23, b"a")]).unwrap();
    logger.close().unwrap();
    let source = std::fs::File::open(&path).unwrap();
    let covered = source.metadata().unwrap().len();
    let temp = crate::compact::temp_path(&path);
    let rewritten = crate::compact::rewrite(&source, &temp, covered)
        .unwrap()
        .expect("most records are superseded");
    drop(rewritten);
    std::fs::rename(&temp, &path).unwrap();
    let mut again = FileLogger::open(config(&path)).unwrap();
    let kept: Vec<(u64, EventKind, Vec<u8>)> = replay_all(&mut again)
        .unwrap()
        .into_iter()
        .map(|(s, k, key, _)| (s, k, key))
        .collect();
    assert_eq!(
        kept,
        [
            (22, EventKind::PUT_UNTIL, b"lease".to_vec()),
            (23, EventKind::DELETE, b"a".to_vec()),
        ],
        "the live put, and the newest record so its sequence number is not reused"
    );
}
