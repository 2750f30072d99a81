//! The logger against real files: round trips, torn tails, corruption, repair.

use std::path::Path;

use kvs_plugin_api::{ErrorCode, Event, EventKind, TransactionLogger};

use super::{Config, FileLogger, SyncPolicy};

type Owned = (u64, EventKind, Vec<u8>, Vec<u8>);

fn config(path: &Path) -> Config {
    Config::parse(&format!("path = {path:?}")).unwrap()
}

fn replay_all(logger: &mut FileLogger) -> Result<Vec<Owned>, kvs_plugin_api::PluginError> {
    let mut out = Vec::new();
    logger.replay(&mut |events: &[Event<'_>]| {
        out.extend(
            events
                .iter()
                .map(|e| (e.sequence, e.kind, e.key.to_vec(), e.value.to_vec())),
        );
        Ok(())
    })?;
    Ok(out)
}

fn write_records(path: &Path, n: u64) -> Vec<Owned> {
    let mut logger = FileLogger::open(config(path)).unwrap();
    assert!(replay_all(&mut logger).unwrap().is_empty());
    let mut all = Vec::new();
    for seq in 1..=n {
        let key = format!("key\t{seq}\n").into_bytes();
        let value = vec![seq as u8; (seq * 3) as usize];
        logger.append(&[Event::put(seq, &key, &value)]).unwrap();
        all.push((seq, EventKind::PUT, key, value));
    }
    logger.close().unwrap();
    all
}

#[test]
fn odd_bytes_round_trip_across_reopen_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/kvs.log");
    let big = vec![0x5A; 1 << 20];
    let batch = [
        Event::put(1, b"tab\tkey", b"new\nline"),
        Event::put(2, b"nul\0 space /", b""),
        Event::put(3, "ключ".as_bytes(), &big),
        Event::delete(4, b"tab\tkey"),
    ];
    let mut logger = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut logger).unwrap();
    logger.append(&batch).unwrap();
    logger.close().unwrap();
    let mut again = FileLogger::open(config(&path)).unwrap();
    let got = replay_all(&mut again).unwrap();
    let want: Vec<Owned> = batch
        .iter()
        .map(|e| (e.sequence, e.kind, e.key.to_vec(), e.value.to_vec()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_torn_tail_is_truncated_at_every_cut_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let all = write_records(&path, 5);
    let full = std::fs::read(&path).unwrap();
    let last_len = super::format::RECORD_HEADER_LEN
        + super::format::MIN_BODY_LEN
        + all[4].2.len()
        + all[4].3.len();
    let last_start = full.len() - last_len;
    for cut in last_start + 1..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let mut logger = FileLogger::open(config(&path)).unwrap();
        let got = replay_all(&mut logger).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(got, all[..4], "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            last_start,
            "cut at {cut}"
        );
        // Appending after recovery continues a clean log.
        logger.append(&[Event::put(6, b"after", b"cut")]).unwrap();
        logger.close().unwrap();
        let mut again = FileLogger::open(config(&path)).unwrap();
        assert_eq!(replay_all(&mut again).unwrap().len(), 5, "cut at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_torn_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let all = write_records(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 100]); // file size grew, data never landed
    std::fs::write(&path, &bytes).unwrap();
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all);
}

#[test]
fn space_written_ahead_is_skipped_on_replay_and_trimmed_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let mut logger = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut logger).unwrap();
    let mut all = Vec::new();
    for seq in 1..=3u64 {
        logger
            .append(&[Event::put(seq, b"key", &[seq as u8; 10])])
            .unwrap();
        all.push((seq, EventKind::PUT, b"key".to_vec(), vec![seq as u8; 10]));
    }
    let records_end = logger.len;
    // While open the file runs ahead of its records, in zeros.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, super::WRITE_AHEAD_BYTES);
    assert!(bytes[records_end as usize..].iter().all(|&b| b == 0));
    // A crash now (no close): the zeros are the end of the log, not damage.
    drop(logger);
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all);
    assert_eq!(logger.len, records_end);
    logger.append(&[Event::put(4, b"key", b"four")]).unwrap();
    all.push((4, EventKind::PUT, b"key".to_vec(), b"four".to_vec()));
    logger.close().unwrap();
    let closed_len = std::fs::metadata(&path).unwrap().len();
    let mut again = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut again).unwrap(), all);
    assert_eq!(closed_len, again.len, "close trims the file to its records");
}

#[test]
fn a_few_zeros_after_the_last_record_are_the_end_not_a_torn_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let all = write_records(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 5]); // shorter than a record header
    std::fs::write(&path, &bytes).unwrap();
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all);
    // Nothing was torn: the zeros are left for the next append to overwrite.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
    logger.append(&[Event::put(4, b"key", b"four")]).unwrap();
    logger.close().unwrap();
    let mut again = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut again).unwrap().len(), 4);
}

#[test]
fn a_torn_record_inside_space_written_ahead_is_cut_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let all = write_records(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.len();
    // A fourth record's first bytes reached the disk, the rest of it (and the space
    // after it) is still the zeros written ahead.
    let mut record = Vec::new();
    super::format::encode(&Event::put(4, b"key", b"value"), &mut record);
    bytes.extend_from_slice(&record[..record.len() - 3]);
    bytes.resize(end + 4096, 0);
    std::fs::write(&path, &bytes).unwrap();
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all);
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, end);
}

#[test]
fn a_flipped_byte_mid_file_is_refused_then_repaired_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let all = write_records(&path, 10);
    let mut bytes = std::fs::read(&path).unwrap();
    let size = bytes.len();
    // A byte inside the 4th record's value (records are 12 + 13 + key + value bytes).
    let offset_of = |n: usize| -> usize {
        16 + all[..n]
            .iter()
            .map(|r| 12 + 13 + r.2.len() + r.3.len())
            .sum::<usize>()
    };
    let flip_at = offset_of(3) + 12 + 13 + all[3].2.len() + 2;
    bytes[flip_at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let mut logger = FileLogger::open(config(&path)).unwrap();
    let err = replay_all(&mut logger).unwrap_err();
    assert_eq!(err.code(), ErrorCode::INTERNAL);
    let msg = err.message();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains(&format!("offset {}", offset_of(3)))
            && msg.contains("repair"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        size,
        "refusal must not change the file"
    );

    drop(logger);
    let mut repair = config(&path);
    repair.repair = true;
    assert_eq!(
        super::scan::count_records(
            &std::fs::File::open(&path).unwrap(),
            offset_of(3) as u64,
            size as u64
        ),
        7
    );
    let mut logger = FileLogger::open(repair).unwrap();
    assert_eq!(replay_all(&mut logger).unwrap(), all[..3]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        offset_of(3)
    );
}

#[test]
fn a_damaged_length_mid_file_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    write_records(&path, 10);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[16 + 1] ^= 0x80; // first record's length: would point past the end
    std::fs::write(&path, &bytes).unwrap();
    let mut logger = FileLogger::open(config(&path)).unwrap();
    let err = replay_all(&mut logger).unwrap_err();
    assert!(err.message().contains("damaged record length"), "{err}");
}

#[test]
fn sync_policies_sync_when_they_say_and_config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    for sync in ["always", "interval", "never"] {
        let path = dir.path().join(format!("{sync}.log"));
        let cfg = Config::parse(&format!(
            "path = {path:?}\nsync = {sync:?}\nsync_interval_ms = 5"
        ))
        .unwrap();
        let mut logger = FileLogger::open(cfg).unwrap();
        replay_all(&mut logger).unwrap();
        for seq in 1..=10 {
            logger
                .append(&[Event::put(seq, b"k", sync.as_bytes())])
                .unwrap();
        }
        let after_appends = logger.data_syncs();
        std::thread::sleep(std::time::Duration::from_millis(60));
        let later = logger.data_syncs();
        // What tells the policies apart: who syncs, and when.
        match sync {
            // One fdatasync per batch, made before append returned; none in between.
            "always" => assert_eq!((after_appends, later), (10, 10), "{sync}"),
            // A background thread syncing every 5 ms whether or not a batch came.
            "interval" => assert!(
                later >= after_appends + 3,
                "{sync}: {after_appends} -> {later}"
            ),
            // Nothing until close.
            _ => assert_eq!((after_appends, later), (0, 0), "{sync}"),
        }
        logger.close().unwrap();
        let mut again = FileLogger::open(config(&path)).unwrap();
        assert_eq!(replay_all(&mut again).unwrap()[9].3, sync.as_bytes());
    }
    assert_eq!(
        Config::parse("sync = \"sometimes\"").unwrap_err().code(),
        ErrorCode::INVALID_INPUT
    );
    let err = Config::parse("paht = \"x\"").unwrap_err();
    assert!(err.message().contains("paht"), "{err}");
    assert_eq!(Config::parse("").unwrap().sync, SyncPolicy::Always);

    // A path under a regular file cannot be created: a clear startup error.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = FileLogger::open(config(&blocker.join("kvs.log")))
        .err()
        .unwrap();
    assert!(
        err.message().contains("cannot create the log directory"),
        "{err}"
    );
    // A file that is not a kvs log is refused, not overwritten.
    let other = dir.path().join("not-a-log");
    std::fs::write(&other, b"some other file's contents, longer than a header").unwrap();
    let err = FileLogger::open(config(&other)).err().unwrap();
    assert!(err.message().contains("bad magic"), "{err}");
}

/// Found by the crash-state test: a crash while a log is being created can leave the
/// file's new size on disk without its header — all zeros. Nothing was acknowledged
/// from such a file, so it is started afresh rather than refused forever.
#[test]
fn a_log_whose_creation_was_cut_short_is_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    std::fs::write(&path, [0u8; 16]).unwrap();
    let mut logger = FileLogger::open(config(&path)).unwrap();
    assert!(replay_all(&mut logger).unwrap().is_empty());
    logger.append(&[Event::put(1, b"k", b"v")]).unwrap();
    logger.close().unwrap();
    let mut again = FileLogger::open(config(&path)).unwrap();
    assert_eq!(replay_all(&mut again).unwrap().len(), 1);
    // Zeros where the header belongs but data after it is damage, not a fresh file.
    let damaged = dir.path().join("damaged.log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].fill(0);
    std::fs::write(&damaged, bytes).unwrap();
    let err = FileLogger::open(config(&damaged))
        .err()
        .expect("opened a damaged log");
    assert!(err.message().contains("not a kvs log file"), "{err:?}");
}

/// A failed fdatasync (an I/O error): that batch fails, nothing is retried as if its
/// data were still there, every later write is refused, and a restart replays exactly
/// the batches that were acknowledged.
#[test]
fn a_failed_fsync_fails_its_batch_and_every_later_one_and_replays_only_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let mut logger = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut logger).unwrap();
    logger.append(&[Event::put(1, b"a", b"1")]).unwrap();
    crate::io::faults::fail_syncs(1);
    let failed = logger.append(&[Event::put(2, b"b", b"2")]).unwrap_err();
    assert!(failed.message().contains("fdatasync"), "{failed}");
    // The fsync would succeed now; the logger must not take that as the data being safe.
    let refused = logger.append(&[Event::put(3, b"c", b"3")]).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::UNAVAILABLE);
    assert!(refused.message().contains("restarted"), "{refused}");
    assert!(logger.close().is_err(), "close reports the failure too");
    let mut again = FileLogger::open(config(&path)).unwrap();
    let got = replay_all(&mut again).unwrap();
    assert_eq!(
        got,
        [(1, EventKind::PUT, b"a".to_vec(), b"1".to_vec())],
        "only the acknowledged batch"
    );
}

/// Out of space: the batch fails as STORAGE_FULL, nothing of it is kept, and the
/// logger takes writes again (the full-disk test in the host's suite does this on a
/// real tmpfs; this one checks the error's code).
#[test]
fn out_of_space_is_storage_full() {
    let e = super::io_err(
        &std::path::PathBuf::from("/x"),
        "cannot write",
        std::io::Error::from(std::io::ErrorKind::StorageFull),
    );
    assert_eq!(e.code(), ErrorCode::STORAGE_FULL);
    assert!(e.message().contains("free some space"), "{e}");
}

#[test]
fn a_log_open_elsewhere_is_refused_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvs.log");
    let mut first = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut first).unwrap();
    let err = FileLogger::open(config(&path)).err().expect("opened twice");
    assert_eq!(err.code(), ErrorCode::UNAVAILABLE);
    assert!(
        err.message().contains("is in use") && err.message().contains("kvs.log"),
        "{err}"
    );
    // Closed (as a logger swap does before opening its successor): free again.
    first.close().unwrap();
    let mut second = FileLogger::open(config(&path)).unwrap();
    replay_all(&mut second).unwrap();
    second.close().unwrap();
}

mod batches;
mod compaction;
