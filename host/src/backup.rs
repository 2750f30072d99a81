//! Backups and restores: the store as of one point in its write order, in kvs's
//! logger-neutral snapshot format (`kvs-snapshot`, which specifies the bytes).
//!
//! * [`write_snapshot`] (`GET /backup` on the admin listener, `kvs backup FILE`) reads a
//!   cut of the map (`map::Cut`) while kvs serves, one shard at a time, and streams it as
//!   blocks; what it holds in memory is one shard's copy and the entries writes replaced
//!   meanwhile, not the store.
//! * [`restore`] (`kvs restore FILE --logger NAME`) checks a whole snapshot first, then
//!   appends its keys to an empty logger through the logger's own `append`, so any
//!   logger — native, WASM, a third party's — can be restored into.
//!
//! Restored keys are numbered right after the snapshot's point (plus `--bump-revision`),
//! in the order the file holds them: a log's sequence numbers must increase, and a
//! snapshot is in map order, not revision order. So revisions (ETags) change across a
//! restore; README, "Backups and moving between loggers", says what clients see.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvs_plugin_api::{Event, EventKind, PluginError};
use kvs_snapshot::{BLOCK_TARGET_BYTES, BlockBuf, EncodeError, Encoder, Header, Reader, Record};

use crate::map::{Cut, CutRecord};
use crate::ports::Log;
use crate::store::Store;

/// What a snapshot held, once written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// The position in the write order it is as of.
    pub point: u64,
    /// Keys written.
    pub keys: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why a cut's reader gives up when writes replaced too much while it ran.
pub(crate) const ABANDONED: &str = "writes replaced more than 512 MiB of entries while the \
     store was being copied (the copy is too slow for the write rate): try again when it is \
     quieter, or with a faster target";

/// Ends a cut however its reader stops.
pub(crate) struct CutGuard<'s> {
    pub(crate) store: &'s Store,
    pub(crate) cut: Arc<Cut>,
}

impl Drop for CutGuard<'_> {
    fn drop(&mut self) {
        self.store.end_cut(&self.cut);
    }
}

/// Writes a snapshot of `store` as of one point in its write order, as byte chunks
/// handed to `emit` in order, while the store goes on serving. An error from `emit`
/// (the client went away) stops it.
pub fn write_snapshot(
    store: &Store,
    emit: &mut dyn FnMut(Vec<u8>) -> Result<(), String>,
) -> Result<Written, String> {
    let started = Instant::now();
    let cut = store.begin_cut(None)?;
    let guard = CutGuard { store, cut };
    let cut = &guard.cut;
    let header = Header {
        point: cut.point(),
        taken_at_ms: cut.taken_at_ms(),
        keys: cut.keys(),
    };
    let (mut encoder, head) = Encoder::new(&header);
    let mut bytes = head.len() as u64;
    emit(head)?;
    let mut block = BlockBuf::new();
    let mut full: Vec<BlockBuf> = Vec::new();
    let mut failed = None;
    for shard in 0..cut.shards() {
        // Under the shard's read lock: copy bytes, nothing more.
        store.read_cut(cut, shard, |r| {
            let r = record(&r);
            let mut encoded = Encoder::encode_record(&mut block, &r);
            if matches!(encoded, Err(EncodeError::BlockFull)) {
                // Fits alone, not beside what the block holds: a block of its own.
                full.push(std::mem::replace(&mut block, BlockBuf::new()));
                encoded = Encoder::encode_record(&mut block, &r);
            }
            if let Err(e) = encoded {
                failed.get_or_insert_with(|| format!("{e}"));
            }
            if block.len_bytes() >= BLOCK_TARGET_BYTES {
                full.push(std::mem::replace(&mut block, BlockBuf::new()));
            }
        });
        if let Some(why) = failed.take() {
            return Err(format!("cannot write a key into the snapshot: {why}"));
        }
        if cut.abandoned() {
            return Err(ABANDONED.into());
        }
        if !full.is_empty() {
            let mut sealed = Vec::with_capacity(full.len() * (BLOCK_TARGET_BYTES + 64));
            for mut b in full.drain(..) {
                encoder.seal(&mut b, &mut sealed);
            }
            bytes += sealed.len() as u64;
            emit(sealed)?;
        }
    }
    let mut tail = Vec::new();
    encoder.seal(&mut block, &mut tail);
    encoder
        .finish(&mut tail)
        .map_err(|e| format!("the snapshot came out inconsistent ({e}); this is a bug"))?;
    bytes += tail.len() as u64;
    emit(tail)?;
    Ok(Written {
        point: header.point,
        keys: header.keys,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn record<'a>(r: &CutRecord<'a>) -> Record<'a> {
    Record {
        key: r.key,
        value: r.value,
        revision: r.revision,
        deadline: r.deadline,
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    /// The snapshot's point.
    pub point: u64,
    /// Keys appended to the logger.
    pub keys: u64,
    /// Keys left out because their deadline had passed.
    pub expired: u64,
    /// The first and last sequence numbers given to them.
    pub sequences: (u64, u64),
    /// Seconds checking the file.
    pub verify: Duration,
    /// Seconds appending.
    pub load: Duration,
}

/// Events per `append` during a restore (and a migration's copy): large enough to
/// amortize a durable logger's sync, small enough to bound a batch's memory.
pub(crate) const LOAD_BATCH_EVENTS: usize = 4096;
/// Bytes of keys and values per `append`, whichever comes first.
pub(crate) const LOAD_BATCH_BYTES: usize = 4 << 20;

/// Loads the snapshot at `path` into `logger`, which must hold nothing: checks every
/// byte of the file first (a damaged or cut file is refused, naming the damage, before
/// anything is written; so is a key or value over `limits`, which kvs could not serve),
/// then appends its keys in batches. Keys whose deadline has passed are left out; a key
/// with a deadline needs a logger that `stores_expiry`. Keys are numbered from the
/// snapshot's point + 1 + `bump`.
pub fn restore(
    path: &Path,
    logger: &mut dyn Log,
    stores_expiry: bool,
    bump: u64,
    limits: kvs_plugin_api::Limits,
) -> Result<Restored, String> {
    let started = Instant::now();
    let summary = kvs_snapshot::verify(open(path)?)
        .map_err(|e| format!("{}: refused, nothing was written: {e}", path.display()))?;
    over_limits(path, limits)?;
    let now = crate::map::now_ms();
    if !stores_expiry && summary.with_deadline > 0 {
        let live = live_deadlines(path, now)?;
        if live > 0 {
            return Err(format!(
                "{} holds {live} key(s) with a TTL, and this logger cannot store deadlines (it \
                 does not declare log:expiry); nothing was written",
                path.display()
            ));
        }
    }
    let verify = started.elapsed();
    let mut held = 0u64;
    logger
        .replay(&mut |events| {
            held += events.len() as u64;
            Ok(())
        })
        .map_err(|e| format!("cannot read the logger back to check it is empty: {e}"))?;
    if held > 0 {
        return Err(format!(
            "the logger already holds {held} event(s): restore needs an empty one (move its \
             storage aside, or point its table at new storage); nothing was written"
        ));
    }
    let started = Instant::now();
    let (mut reader, header) = Reader::new(open(path)?).map_err(|e| e.to_string())?;
    debug_assert_eq!(header, summary.header);
    // The keys get the numbers point + 1 + bump ..= point + bump + keys: all must fit.
    let first = header
        .point
        .checked_add(1)
        .and_then(|n| n.checked_add(bump));
    let last = first.and_then(|f| f.checked_add(summary.keys.saturating_sub(1)));
    let (Some(first), Some(_)) = (first, last) else {
        return Err(if bump == 0 {
            format!(
                "{}: its point ({}) leaves no room below 2^64 for its {} key(s)' sequence \
                 numbers, so kvs did not write it; nothing was written",
                path.display(),
                header.point,
                summary.keys
            )
        } else {
            format!(
                "--bump-revision {bump} is too large: with the snapshot's point ({}) and its \
                 {} key(s) the sequence numbers would pass 2^64; nothing was written",
                header.point, summary.keys
            )
        });
    };
    let mut next = first;
    let mut expired = 0u64;
    let mut batch = Batch::default();
    while let Some(block) = reader.next_block().map_err(|e| {
        format!(
            "{} changed while it was being restored: {e}",
            path.display()
        )
    })? {
        for r in block.records() {
            if r.deadline.is_some_and(|d| d <= now) {
                expired += 1;
                continue;
            }
            batch.push(next, r.key, r.value, r.deadline);
            next += 1;
            if batch.full() {
                batch
                    .append_to(logger)
                    .map_err(|e| partly(e, next - first))?;
            }
        }
    }
    batch
        .append_to(logger)
        .map_err(|e| partly(e, next - first))?;
    Ok(Restored {
        point: header.point,
        keys: next - first,
        expired,
        sequences: (first, next.saturating_sub(1).max(first)),
        verify,
        load: started.elapsed(),
    })
}

/// A failed append's error, saying that what came before it is in the logger.
fn partly(why: String, appended: u64) -> String {
    format!(
        "{why}; the logger holds part of the snapshot (up to {appended} keys): empty its \
         storage before restoring again"
    )
}

/// Refuses a snapshot holding a key or value larger than `limits`: kvs would replay it
/// and then refuse every write to that key.
fn over_limits(path: &Path, limits: kvs_plugin_api::Limits) -> Result<(), String> {
    let (mut reader, _) = Reader::new(open(path)?).map_err(|e| e.to_string())?;
    while let Some(block) = reader.next_block().map_err(|e| e.to_string())? {
        for r in block.records() {
            let (key, value) = (r.key.len() as u64, r.value.len() as u64);
            if key > limits.max_key_bytes || value > limits.max_value_bytes {
                return Err(format!(
                    "{} holds a key of {key} bytes with a value of {value} bytes, over this \
                     config's [limits] (max_key_bytes {}, max_value_bytes {}); raise them to \
                     restore it; nothing was written",
                    path.display(),
                    limits.max_key_bytes,
                    limits.max_value_bytes
                ));
            }
        }
    }
    Ok(())
}

/// How many keys of the snapshot at `path` have a deadline after `now`.
fn live_deadlines(path: &Path, now: u64) -> Result<u64, String> {
    let (mut reader, _) = Reader::new(open(path)?).map_err(|e| e.to_string())?;
    let mut live = 0;
    while let Some(block) = reader.next_block().map_err(|e| e.to_string())? {
        live += block
            .records()
            .filter(|r| r.deadline.is_some_and(|d| d > now))
            .count() as u64;
    }
    Ok(live)
}

fn open(path: &Path) -> Result<impl Read, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, file))
}

/// Keys on their way to a logger's `append`, owned (a snapshot's blocks and a cut's
/// shards are read before they are appended).
#[derive(Default)]
pub(crate) struct Batch {
    events: Vec<(u64, Vec<u8>, Vec<u8>, bool)>,
    bytes: usize,
}

impl Batch {
    /// Adds a PUT (a PUT_UNTIL with a deadline) numbered `sequence`.
    pub(crate) fn push(&mut self, sequence: u64, key: &[u8], value: &[u8], deadline: Option<u64>) {
        // A PUT_UNTIL's value starts with its deadline (`event::split_deadline`).
        let value = match deadline {
            Some(d) => [&d.to_le_bytes()[..], value].concat(),
            None => value.to_vec(),
        };
        self.bytes += key.len() + value.len();
        self.events
            .push((sequence, key.to_vec(), value, deadline.is_some()));
    }

    /// Whether it should be appended now.
    pub(crate) fn full(&self) -> bool {
        self.events.len() >= LOAD_BATCH_EVENTS || self.bytes >= LOAD_BATCH_BYTES
    }

    /// How many events it holds.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Appends what it holds, in order, at most [`LOAD_BATCH_EVENTS`] events and about
    /// [`LOAD_BATCH_BYTES`] per `append`, and empties it.
    pub(crate) fn append_to(&mut self, logger: &mut dyn Log) -> Result<(), String> {
        let mut at = 0;
        while at < self.events.len() {
            let mut end = at;
            let mut bytes = 0;
            while end < self.events.len()
                && end - at < LOAD_BATCH_EVENTS
                && bytes < LOAD_BATCH_BYTES
            {
                bytes += self.events[end].1.len() + self.events[end].2.len();
                end += 1;
            }
            let events: Vec<Event<'_>> = self.events[at..end]
                .iter()
                .map(|(sequence, key, value, until)| Event {
                    kind: if *until {
                        EventKind::PUT_UNTIL
                    } else {
                        EventKind::PUT
                    },
                    ..Event::put(*sequence, key, value)
                })
                .collect();
            let (first, last) = (events[0].sequence, events[events.len() - 1].sequence);
            logger.append(&events).map_err(|e: PluginError| {
                format!("the logger refused the keys numbered {first}..={last}: {e}")
            })?;
            at = end;
        }
        self.events.clear();
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kvs_plugin_api::Limits;

    use super::*;
    use crate::ports::recording::{Recorded, Recording};

    const LIMITS: Limits = Limits {
        max_key_bytes: 16,
        max_value_bytes: 64,
    };

    fn snapshot(dir: &Path, point: u64, records: &[Record<'_>]) -> std::path::PathBuf {
        let path = dir.join("s.snap");
        std::fs::write(&path, kvs_snapshot::encode(point, 0, records).unwrap()).unwrap();
        path
    }

    fn records<'a>(keys: &'a [Vec<u8>], value: &'a [u8]) -> Vec<Record<'a>> {
        keys.iter()
            .map(|key| Record {
                key,
                value,
                revision: 1,
                deadline: None,
            })
            .collect()
    }

    #[test]
    fn sequence_numbers_past_2_64_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        // A well-formed file whose point leaves room for 4096 keys, not 5000.
        let path = snapshot(dir.path(), u64::MAX - 1 - 4097, &records(&keys, b"v"));
        let appended = Recorded::default();
        let mut log = Recording::into(&appended);
        let err = restore(&path, &mut log, true, 0, LIMITS).unwrap_err();
        assert!(err.contains("leaves no room below 2^64"), "{err}");
        assert_eq!(Recording::count(&appended), 0, "written before refusing");
        let path = snapshot(dir.path(), 10, &records(&keys[..2], b"v"));
        let err = restore(&path, &mut log, true, u64::MAX - 11, LIMITS).unwrap_err();
        assert!(err.contains("--bump-revision"), "{err}");
        assert_eq!(Recording::count(&appended), 0);
    }

    #[test]
    fn keys_and_values_over_the_limits_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let appended = Recorded::default();
        let mut log = Recording::into(&appended);
        let path = snapshot(dir.path(), 1, &records(&[b"ok".to_vec()], &[b'x'; 65]));
        let err = restore(&path, &mut log, true, 0, LIMITS).unwrap_err();
        assert!(err.contains("max_value_bytes 64"), "{err}");
        let path = snapshot(dir.path(), 1, &records(&[vec![b'k'; 17]], b"v"));
        let err = restore(&path, &mut log, true, 0, LIMITS).unwrap_err();
        assert!(err.contains("max_key_bytes 16"), "{err}");
        assert_eq!(Recording::count(&appended), 0);
        let path = snapshot(dir.path(), 1, &records(&[vec![b'k'; 16]], &[b'x'; 64]));
        assert_eq!(restore(&path, &mut log, true, 0, LIMITS).unwrap().keys, 1);
        assert_eq!(Recording::count(&appended), 1);
    }
}
