//! Helpers the fuzz targets share: driving the file logger against a real file.

use std::path::{Path, PathBuf};

use kvs_plugin_api::{Event, EventKind, PluginError, TransactionLogger};
use kvs_plugin_file::{Config, FileLogger, SyncPolicy, format};

/// An event as replay hands it over, owned.
pub type Owned = (u64, EventKind, Vec<u8>, Vec<u8>);

/// The log file this fuzzing process uses, on tmpfs if there is one (a fuzz target
/// writes it thousands of times a second). One per process: `-fork`/`-jobs` workers
/// do not share it.
pub fn log_path() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("kvs-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch directory");
        dir
    });
    dir.join("kvs.log")
}

/// A logger configuration for `path`: no syncs (tmpfs), no compaction.
pub fn config(path: &Path, repair: bool) -> Config {
    Config {
        path: path.to_path_buf(),
        sync: SyncPolicy::Never,
        sync_interval_ms: 1000,
        repair,
        compact_min_bytes: u64::MAX,
        compact_growth_percent: 0,
    }
}

/// Opens the log at `path` and replays it.
pub fn open_and_replay(path: &Path, repair: bool) -> Result<(FileLogger, Vec<Owned>), PluginError> {
    let mut logger = FileLogger::open(config(path, repair))?;
    let mut out = Vec::new();
    logger.replay(&mut |events: &[Event<'_>]| {
        out.extend(
            events
                .iter()
                .map(|e| (e.sequence, e.kind, e.key.to_vec(), e.value.to_vec())),
        );
        Ok(())
    })?;
    Ok((logger, out))
}

/// The bytes the logger's own encoder writes for `events`, after the file header.
pub fn encoded(events: &[Owned]) -> Vec<u8> {
    let mut out = Vec::new();
    for (sequence, kind, key, value) in events {
        let e = Event {
            sequence: *sequence,
            kind: *kind,
            key: key.as_slice().into(),
            value: value.as_slice().into(),
        };
        format::encode(&e, &mut out);
    }
    out
}

/// What every replay must satisfy, whatever the file held: the events are in strictly
/// increasing sequence, of a known kind, and they are exactly what the (possibly
/// truncated) file now holds after its header: its records decode to them, the last
/// ends a batch (a replay never hands over part of one), then nothing or zeros (space
/// written ahead).
pub fn check_replay(events: &[Owned], file: &[u8]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "sequence {} after {}",
            pair[1].0,
            pair[0].0
        );
    }
    for e in events {
        assert!(
            e.1 == EventKind::PUT || e.1 == EventKind::DELETE,
            "kind {}",
            e.1.0
        );
    }
    // (The header's api_major is written but not checked on read.)
    format::check_header(file).expect("the file header");
    let mut at = format::HEADER_LEN as usize;
    let mut goes_on = false;
    for e in events {
        let header: [u8; format::RECORD_HEADER_LEN] = file
            .get(at..at + format::RECORD_HEADER_LEN)
            .expect("replayed more than the file holds")
            .try_into()
            .unwrap();
        let format::RecordHeader::Valid { len, body_crc } = format::parse_header(&header) else {
            panic!("a replayed record's header is damaged");
        };
        let body = &file[at + format::RECORD_HEADER_LEN..at + format::RECORD_HEADER_LEN + len];
        assert_eq!(
            crc32c::crc32c(body),
            body_crc,
            "a replayed record's checksum"
        );
        let got = format::decode(body).expect("a replayed record decodes");
        assert_eq!(
            (
                got.sequence,
                got.kind,
                got.key.as_slice(),
                got.value.as_slice()
            ),
            (e.0, e.1, e.2.as_slice(), e.3.as_slice()),
            "what replayed is not what the file holds"
        );
        goes_on = format::goes_on(body);
        at += format::RECORD_HEADER_LEN + len;
    }
    assert!(!goes_on, "the replay ended inside a batch");
    assert!(
        file[at..].iter().all(|&b| b == 0),
        "non-zero bytes left after the last replayed record"
    );
}

/// Appends one event after what replayed, closes, reopens: the log must replay as what
/// it replayed before plus the new event (recovery leaves a log that can be continued).
pub fn check_continues(path: &Path, mut logger: FileLogger, mut events: Vec<Owned>) {
    let sequence = match events.last() {
        Some(last) if last.0 == u64::MAX => return,
        Some(last) => last.0 + 1,
        None => 1,
    };
    let new = (
        sequence,
        EventKind::PUT,
        b"after".to_vec(),
        b"recovery".to_vec(),
    );
    logger
        .append(&[Event::put(sequence, &new.2, &new.3)])
        .expect("append after replay");
    logger.close().expect("close");
    events.push(new);
    let (_, again) = open_and_replay(path, false).expect("replay after append");
    assert_eq!(again, events, "the log did not continue cleanly");
}
