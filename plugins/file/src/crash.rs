//! Power loss, simulated: every on-disk state a crash may leave, checked.
//!
//! A workload of durable appends (with compactions and a restart) runs on a real
//! directory while [`crate::io::record`] notes every write, truncation, fsync, rename,
//! removal and directory fsync. Then, for every crash point (after each operation), the
//! states POSIX allows are rebuilt from the record alone ([`kvs_testkit::crash`]): each
//! file as of its last fsync plus any subset of its later writes (a write may also be
//! torn at a 4 KiB page boundary); the directory as of its last fsync plus a prefix of
//! its later creations, renames and removals. Each state is opened with the logger and replayed: it must hold every write
//! acknowledged before the crash, and the batch in flight whole or not at all (format
//! 2's batch framing: `log:atomic_batch`) — nothing torn, nothing invented.
//!
//! The same check must catch a planted bug: dropping the directory fsync after
//! compaction's rename (`planted_bug_is_found`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use kvs_plugin_api::{Event, EventKind, TransactionLogger};

use kvs_testkit::crash::{self, Op};

use crate::io::record;
use crate::{Config, FileLogger, SyncPolicy};

/// One recording at a time (the recorder is global).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// An event the workload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    sequence: u64,
    delete: bool,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A small deterministic generator (no dependency needed for a test workload).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Runs the workload with recording on; returns the record and the batches written.
fn run_workload(dir: &Path, drop_dir_sync_after_rename: bool) -> (Vec<Op>, Vec<Vec<Written>>) {
    let path = dir.join("kvs.log");
    let config = Config {
        sync: SyncPolicy::Always,
        compact_min_bytes: 24 << 10,
        compact_growth_percent: 50,
        ..Config::parse(&format!("path = {path:?}")).unwrap()
    };
    record::start(dir, drop_dir_sync_after_rename);
    let mut rng = Lcg(42);
    let mut batches = Vec::new();
    let mut sequence = 0;
    let mut logger = FileLogger::open(config.clone()).unwrap();
    logger.replay(&mut |_| Ok(())).unwrap();
    for n in 0..80 {
        if n == 40 {
            // A restart: close, then open and replay again.
            record::mark("restart".into());
            logger.close().unwrap();
            logger = FileLogger::open(config.clone()).unwrap();
            logger.replay(&mut |_| Ok(())).unwrap();
        }
        let batch: Vec<Written> = (0..1 + rng.next(5))
            .map(|_| {
                sequence += 1;
                let delete = rng.next(8) == 0;
                let len = if rng.next(4) == 0 {
                    3000 + rng.next(6000)
                } else {
                    rng.next(300)
                };
                Written {
                    sequence,
                    delete,
                    key: format!("key-{}", rng.next(12)).into_bytes(),
                    value: if delete {
                        Vec::new()
                    } else {
                        (0..len)
                            .map(|i| (sequence as u8).wrapping_add(i as u8))
                            .collect()
                    },
                }
            })
            .collect();
        let events: Vec<Event<'_>> = batch
            .iter()
            .map(|w| {
                if w.delete {
                    Event::delete(w.sequence, &w.key)
                } else {
                    Event::put(w.sequence, &w.key, &w.value)
                }
            })
            .collect();
        record::mark(format!("append {n}"));
        logger.append(&events).unwrap();
        record::mark(format!("ack {n}"));
        batches.push(batch);
        if logger.compaction.is_some() {
            // Let the background rewrite finish, so the next append switches to it.
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    logger.close().unwrap();
    (record::stop(), batches)
}

/// What replaying a crash state must give: the map after every acknowledged batch, or
/// after the batch in flight too — never after a part of it.
fn acceptable_maps(
    batches: &[Vec<Written>],
    acked: usize,
    in_flight: bool,
) -> Vec<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut map = BTreeMap::new();
    let apply = |map: &mut BTreeMap<Vec<u8>, Vec<u8>>, w: &Written| {
        if w.delete {
            map.remove(&w.key);
        } else {
            map.insert(w.key.clone(), w.value.clone());
        }
    };
    for w in batches[..acked].iter().flatten() {
        apply(&mut map, w);
    }
    let mut out = vec![map.clone()];
    if in_flight && let Some(batch) = batches.get(acked) {
        for w in batch {
            apply(&mut map, w);
        }
        out.push(map.clone());
    }
    out
}

/// Opens a crash state with the logger and replays it; the map, or why it failed.
fn recover(dir: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let path = dir.join("kvs.log");
    let mut logger = FileLogger::open(Config::parse(&format!("path = {path:?}")).unwrap())
        .map_err(|e| e.to_string())?;
    let mut map = BTreeMap::new();
    let mut last = 0;
    logger
        .replay(&mut |events: &[Event<'_>]| {
            for e in events {
                if e.sequence <= last {
                    return Err(kvs_plugin_api::PluginError::internal(format!(
                        "sequence {} after {last}",
                        e.sequence
                    )));
                }
                last = e.sequence;
                if e.kind == EventKind::DELETE {
                    map.remove(e.key.as_slice());
                } else {
                    map.insert(e.key.to_vec(), e.value.to_vec());
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(map)
}

/// Checks every crash state of the record; returns how many were checked and the
/// failures found (described).
fn check_crash_states(ops: &[Op], batches: &[Vec<Written>]) -> (usize, Vec<String>) {
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    let checked = crash::walk(ops, |k, marks, files| {
        // What the workload had been told, and whether a batch was in flight.
        let (mut acked, mut in_flight) = (0, false);
        for mark in marks {
            if mark.starts_with("append ") {
                in_flight = true;
            } else if let Some(b) = mark.strip_prefix("ack ") {
                acked = b.parse::<usize>().unwrap() + 1;
                in_flight = false;
            }
        }
        n += 1;
        let state = scratch.path().join(format!("s{n}"));
        std::fs::create_dir(&state).unwrap();
        for (name, content) in files {
            std::fs::write(state.join(name), content).unwrap();
        }
        let op = &ops[k];
        match recover(&state) {
            Ok(map) if acceptable_maps(batches, acked, in_flight).contains(&map) => {}
            Ok(map) => failures.push(format!(
                "crash after op {k} ({}; {acked} batches acknowledged, files {:?}): \
                 replay gave {} keys, not an acknowledged state",
                describe(op),
                files.iter().map(|(n, c)| (n, c.len())).collect::<Vec<_>>(),
                map.len()
            )),
            Err(e) => failures.push(format!(
                "crash after op {k} ({}): the logger could not recover: {e}",
                describe(op)
            )),
        }
        let _ = std::fs::remove_dir_all(&state);
    });
    (checked, failures)
}

fn describe(op: &Op) -> String {
    match op {
        Op::Write {
            inode,
            offset,
            data,
        } => {
            format!("write {} bytes at {offset} to inode {inode}", data.len())
        }
        other => format!("{other:?}"),
    }
}

#[test]
fn every_crash_state_holds_every_acknowledged_write() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (ops, batches) = run_workload(dir.path(), false);
    let renames = ops
        .iter()
        .filter(|o| matches!(o, Op::Rename { .. }))
        .count();
    assert!(renames >= 1, "the workload never compacted");
    assert!(ops.iter().any(|o| o == &Op::Mark("restart".into())));
    let (checked, failures) = check_crash_states(&ops, &batches);
    assert!(checked > 500, "only {checked} crash states");
    eprintln!("{checked} crash states checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} crash states lose acknowledged writes; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

/// The planted bug: without the directory fsync after compaction's rename, a crash can
/// bring back the old log, without the writes acknowledged since the switch.
#[test]
fn planted_bug_is_found() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (ops, batches) = run_workload(dir.path(), true);
    let (checked, failures) = check_crash_states(&ops, &batches);
    assert!(
        !failures.is_empty(),
        "dropping the directory fsync after the rename went unnoticed"
    );
    eprintln!(
        "planted bug: {} of {checked} crash states lose acknowledged writes, e.g. {}",
        failures.len(),
        failures[0]
    );
    // What it finds is the lost rename: the old log back, without acknowledged writes.
    assert!(
        failures
            .iter()
            .all(|f| f.contains("not an acknowledged state")),
        "{}",
        failures[0]
    );
}
