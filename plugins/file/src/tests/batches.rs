//! Format 2's batches (`log:atomic_batch`): replayed whole or not at all, repaired at
//! their start; a format-1 log upgraded before its first framed batch.

use super::*;

/// `log:atomic_batch`: a batch cut anywhere by a crash — even with all but its last
/// record whole — is dropped whole, never replayed in part; the batches before it stay.
#[test]
fn a_batch_cut_anywhere_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let first = [Event::put(1, b"a", b"1"), Event::put(2, b"b", b"2")];
    let second = [
        Event::put(3, b"c", b"3"),
        Event::put(4, b"d", b"4"),
        Event::delete(5, b"a"),
    ];
    let mut logger = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut logger).unwrap();
    logger.append(&first).unwrap();
    // The header and two records of 12 + 13 + 1 + 1 bytes (the file's size would count
    // the space written ahead).
    let second_start = 16 + 2 * 27;
    logger.append(&second).unwrap();
    logger.close().unwrap();
    let full = std::fs::read(&path).unwrap();
    let owned = |events: &[Event<'_>]| -> Vec<Owned> {
        events
            .iter()
            .map(|e| (e.sequence, e.kind, e.key.to_vec(), e.value.to_vec()))
            .collect()
    };
    let mut whole = owned(&first);
    whole.extend(owned(&second));
    assert_eq!(
        replay_all(&mut FileLogger::open(config(&path)).unwrap()).unwrap(),
        whole
    );
    for cut in second_start + 1..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let mut logger = FileLogger::open(config(&path)).unwrap();
        let got = replay_all(&mut logger).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(got, owned(&first), "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            second_start,
            "cut at {cut}: truncated to the batch's start"
        );
        logger.append(&[Event::put(6, b"after", b"cut")]).unwrap();
        logger.close().unwrap();
        let mut again = FileLogger::open(config(&path)).unwrap();
        assert_eq!(replay_all(&mut again).unwrap().len(), 3, "cut at {cut}");
    }
}

/// A format-1 log (no batch framing) replays as before and takes batches of one
/// record unchanged (an older logger can still open it); before the first batch of
/// several its header names format 2, so an older file logger refuses it by its version.
#[test]
fn a_format_1_log_replays_and_is_upgraded_before_its_first_framed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let mut all = write_records(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&crate::format::FORMAT_VERSION_1.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let version = || crate::format::header_version(&std::fs::read(&path).unwrap()[..16]);
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all);
    logger.append(&[Event::put(4, b"one", b"1")]).unwrap();
    assert_eq!(version(), 1, "a batch of one record needs no framing");
    logger
        .append(&[Event::put(5, b"two", b"2"), Event::delete(6, b"one")])
        .unwrap();
    assert_eq!(version(), 2);
    logger.close().unwrap();
    all.push((4, EventKind::PUT, b"one".to_vec(), b"1".to_vec()));
    all.push((5, EventKind::PUT, b"two".to_vec(), b"2".to_vec()));
    all.push((6, EventKind::DELETE, b"one".to_vec(), Vec::new()));
    let mut again = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut again).unwrap(), all);
    again.close().unwrap();
    let header = std::fs::read(&path).unwrap()[..16].to_vec();
    let mut newer = header.clone();
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    let why = crate::format::check_header(&newer).unwrap_err();
    assert!(why.contains("version 3"), "{why}");
}

/// Repair drops a corrupt record with the rest of its batch: what it keeps ends where a
/// batch ends.
#[test]
fn repair_cuts_a_corrupt_batch_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let mut logger = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut logger).unwrap();
    logger.append(&[Event::put(1, b"a", b"1")]).unwrap();
    // The header, then one record of 12 + 13 + 1 + 1 bytes (space written ahead
    // follows the log, so the file's size says nothing).
    let batch_start = 16 + 27;
    logger
        .append(&[Event::put(2, b"b", b"2"), Event::put(3, b"c", b"3")])
        .unwrap();
    logger.append(&[Event::put(4, b"d", b"4")]).unwrap();
    logger.close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // The value byte of the batch's second record.
    let second = batch_start + 12 + 13 + 2;
    bytes[second + 12 + 13 + 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(replay_all(&mut FileLogger::open(config(&path)).unwrap()).is_err());
    let mut repair = config(&path);
    repair.repair = true;
    let got = replay_all(&mut FileLogger::open(repair).unwrap()).unwrap();
    assert_eq!(got, [(1, EventKind::PUT, b"a".to_vec(), b"1".to_vec())]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        batch_start
    );
}
