//! Power loss, simulated: every on-disk state a crash may leave, checked.
//!
//! A workload of durable appends (with compactions and a restart) runs on a real
//! directory while [`io::record`] notes every write, truncation, fsync, rename, removal
//! and directory fsync. Then, for every crash point (after each operation), the states
//! POSIX allows are rebuilt from the record alone: each file as of its last fsync plus
//! any subset of its later writes (a write may also be torn at a 4 KiB page boundary);
//! the directory as of its last fsync plus a prefix of its later creations, renames and
//! removals. Each state is opened with the logger and replayed: it must hold every write
//! acknowledged before the crash, and of the batch in flight at most whole events,
//! in order — nothing torn, nothing invented.
//!
//! The same check must catch a planted bug: dropping the directory fsync after
//! compaction's rename (`planted_bug_is_found`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use kvs_plugin_api::{Event, EventKind, TransactionLogger};

use crate::io::record::{self, Op};
use crate::{Config, FileLogger, SyncPolicy};

/// One recording at a time (the recorder is global).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const PAGE: u64 = 4096;

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

/// A file's content: what fsync made durable, and what was done to it since.
#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    live: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Create(String, u64),
    Rename(String, String),
    Remove(String),
}

fn apply_file(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(data);
        }
        FileOp::SetLen(len) => content.resize(*len as usize, 0),
    }
}

fn apply_dir(names: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Create(name, inode) => {
            names.insert(name.clone(), *inode);
        }
        DirOp::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        DirOp::Remove(name) => {
            names.remove(name);
        }
    }
}

/// The file system as the record describes it up to some point.
#[derive(Default, Clone)]
struct Model {
    inodes: HashMap<u64, Inode>,
    dir_durable: BTreeMap<String, u64>,
    dir_live: BTreeMap<String, u64>,
    dir_pending: Vec<DirOp>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Open {
                name,
                inode,
                created,
            } => {
                if *created {
                    self.inodes.insert(*inode, Inode::default());
                    self.dir_live.insert(name.clone(), *inode);
                    self.dir_pending.push(DirOp::Create(name.clone(), *inode));
                }
            }
            Op::Write {
                inode,
                offset,
                data,
            } => {
                let file = self.inodes.entry(*inode).or_default();
                let op = FileOp::Write {
                    offset: *offset,
                    data: data.clone(),
                };
                apply_file(&mut file.live, &op);
                file.pending.push(op);
            }
            Op::SetLen { inode, len } => {
                let file = self.inodes.entry(*inode).or_default();
                let op = FileOp::SetLen(*len);
                apply_file(&mut file.live, &op);
                file.pending.push(op);
            }
            Op::Sync { inode } => {
                let file = self.inodes.entry(*inode).or_default();
                file.durable = file.live.clone();
                file.pending.clear();
            }
            Op::Rename { from, to } => {
                let op = DirOp::Rename(from.clone(), to.clone());
                apply_dir(&mut self.dir_live, &op);
                self.dir_pending.push(op);
            }
            Op::Remove { name } => {
                let op = DirOp::Remove(name.clone());
                apply_dir(&mut self.dir_live, &op);
                self.dir_pending.push(op);
            }
            Op::SyncDir => {
                self.dir_durable = self.dir_live.clone();
                self.dir_pending.clear();
            }
            Op::Mark(_) => {}
        }
    }

    /// Every content a crash may leave for one file: durable + any subset of the pending
    /// operations (all subsets for a few, else prefixes), plus each pending write torn
    /// at its first page boundary on top of the operations before it.
    fn file_states(&self, inode: u64) -> Vec<Vec<u8>> {
        let file = &self.inodes[&inode];
        let n = file.pending.len();
        let mut states = Vec::new();
        let subsets: Vec<Vec<usize>> = if n <= 6 {
            (0..1u32 << n)
                .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
                .collect()
        } else {
            (0..=n).map(|j| (0..j).collect()).collect()
        };
        for subset in subsets {
            let mut content = file.durable.clone();
            for &i in &subset {
                apply_file(&mut content, &file.pending[i]);
            }
            states.push(content);
        }
        for (i, op) in file.pending.iter().enumerate() {
            if let FileOp::Write { offset, data } = op {
                let boundary = (offset / PAGE + 1) * PAGE;
                let end = offset + data.len() as u64;
                if boundary < end {
                    let mut content = file.durable.clone();
                    for earlier in &file.pending[..i] {
                        apply_file(&mut content, earlier);
                    }
                    let torn = FileOp::Write {
                        offset: *offset,
                        data: data[..(boundary - offset) as usize].to_vec(),
                    };
                    apply_file(&mut content, &torn);
                    states.push(content);
                }
            }
        }
        states
    }

    /// The directory states a crash may leave: durable + each prefix of what followed.
    fn dir_states(&self) -> Vec<BTreeMap<String, u64>> {
        (0..=self.dir_pending.len())
            .map(|j| {
                let mut names = self.dir_durable.clone();
                for op in &self.dir_pending[..j] {
                    apply_dir(&mut names, op);
                }
                names
            })
            .collect()
    }
}

/// What replaying a crash state must give: the map after every acknowledged batch,
/// then after each prefix of the batch in flight.
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
            out.push(map.clone());
        }
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

/// Checks every crash state of the record; returns the failures found (described).
fn check_crash_states(ops: &[Op], batches: &[Vec<Written>]) -> (usize, Vec<String>) {
    let scratch = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let mut acked = 0;
    let mut in_flight = false;
    let mut checked = 0;
    let mut failures = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        model.apply(op);
        if let Op::Mark(text) = op {
            if text.starts_with("append ") {
                in_flight = true;
            } else if let Some(n) = text.strip_prefix("ack ") {
                acked = n.parse::<usize>().unwrap() + 1;
                in_flight = false;
            }
            continue;
        }
        let want = acceptable_maps(batches, acked, in_flight);
        for names in model.dir_states() {
            // The states of each file the directory names, combined (bounded).
            let mut combos: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new()];
            for (name, inode) in &names {
                let states = model.file_states(*inode);
                combos = combos
                    .iter()
                    .flat_map(|c| {
                        states.iter().map(move |s| {
                            let mut c = c.clone();
                            c.push((name.clone(), s.clone()));
                            c
                        })
                    })
                    .take(512)
                    .collect();
            }
            for files in combos {
                checked += 1;
                let state = scratch.path().join(format!("s{checked}"));
                std::fs::create_dir(&state).unwrap();
                for (name, content) in &files {
                    std::fs::write(state.join(name), content).unwrap();
                }
                match recover(&state) {
                    Ok(map) if want.contains(&map) => {}
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
            }
        }
    }
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
