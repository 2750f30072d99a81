//! The in-memory map: every key and value kvs holds, compactly.
//!
//! Each entry is one heap allocation — a varint of its length, a header of varints
//! (the key's length and whether a deadline follows, the key's revision), the deadline
//! if any, the key, the value — behind a `DashMap` slot of one thin pointer (8 bytes),
//! instead of two allocations behind two fat pointers (32 bytes). For small keys and
//! values that more than halves what kvs needs beyond the data itself (`kvs-bench
//! memory`); varints keep the revision to the 3 bytes that a few million writes need.
//! Entries hash and compare by their key alone, so lookups take a plain `&[u8]`.
//! Replacing a key's entry swaps it in place under its
//! shard's write lock: a reader sees the old value or the new one, never none.
//!
//! Keys with a deadline are also in an index ordered by deadline, which the expiry
//! sweep reads; keys without one cost nothing there.
//!
//! A consistent copy of the whole map as of one point in the write order, while writes
//! go on, is a [`Cut`] (`cut`): what backups and migrations read.
//!
//! A transaction's writes (plugin-api 1.6, `MSETNX`) become visible together: the
//! writer (on a shared log, delivery: the events of one log position) applies them
//! inside [`Map::apply_together`], and a read that overlapped it
//! is made again (a seqlock over the reads; plain writes never touch it, and a read
//! costs two loads of a counter that changes only with transactions). So once a reader
//! has seen one key of a transaction, every later read sees all of them.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry as Slot;

mod cut;
mod entry;
pub use cut::{Cut, CutRecord};
use entry::Entry;

/// A key and value copied out of the map (see [`Map::iter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    key: Vec<u8>,
    value: Vec<u8>,
    revision: u64,
    deadline: Option<u64>,
}

impl MapEntry {
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The log position of the write that last changed the key.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the key expires (milliseconds since the Unix epoch), if it does.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Whether the key has expired at `now` (milliseconds since the Unix epoch).
    pub fn expired_at(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    /// The value, moved out.
    pub fn into_value(self) -> Vec<u8> {
        self.value
    }
}

/// Milliseconds since the Unix epoch, by the wall clock (deadlines are wall-clock
/// times, as Redis 7 logs `PXAT`, so they mean the same after a restart).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Any bytes to any bytes, sharded so readers and the writer rarely meet.
pub struct Map {
    entries: DashMap<Entry, ()>,
    /// Keys with a deadline, by deadline. Changed only by whoever applies writes (one
    /// thread at a time), read by the expiry sweep.
    deadlines: Mutex<BTreeSet<(u64, Box<[u8]>)>>,
    /// The cut being read, if any: writes keep what they replace for it.
    cut: ArcSwapOption<Cut>,
    /// Whether `cut` may be set (checked first, so writes with no cut cost one load).
    cutting: std::sync::atomic::AtomicBool,
    /// Odd while the writer applies a transaction's writes (`apply_together`); reads
    /// that overlap a change of it are made again.
    together: AtomicU64,
}

/// Shards of the map. More than dashmap's default (4 per core) so that a cut, which
/// copies one shard at a time under its read lock, copies a small part of the store
/// and holds up the writer on that shard only briefly.
const SHARDS: usize = 256;

impl Default for Map {
    fn default() -> Map {
        Map {
            entries: DashMap::with_shard_amount(SHARDS),
            deadlines: Mutex::default(),
            cut: ArcSwapOption::empty(),
            cutting: std::sync::atomic::AtomicBool::new(false),
            together: AtomicU64::new(0),
        }
    }
}

impl Map {
    /// A copy of the value under `key`, unless it has expired.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with(key, <[u8]>::to_vec)
    }

    /// [`Map::get`], the value lent to `with` in place instead of copied out. `with`
    /// may run more than once (a read that overlapped a transaction is made again):
    /// only what its last run did counts.
    pub fn get_with<R>(&self, key: &[u8], mut with: impl FnMut(&[u8]) -> R) -> Option<R> {
        self.read(|| {
            let slot = self.entries.get(key)?;
            let entry = slot.key();
            let layout = entry.layout();
            if layout.deadline.is_some_and(|d| d <= now_ms()) {
                return None;
            }
            Some(with(entry.value(&layout)))
        })
    }

    /// A copy of everything stored under `key`, expired or not.
    pub fn entry(&self, key: &[u8]) -> Option<MapEntry> {
        self.read(|| {
            let slot = self.entries.get(key)?;
            Some(copy(slot.key()))
        })
    }

    /// Runs `apply` — the writes of one transaction — so that readers see all of them or
    /// none: a read overlapping it is made again once it is done. Only what alone
    /// changes the map calls it — the writer, or on a shared log the delivery of the
    /// log's events — and never reads the map inside it.
    pub fn apply_together<R>(&self, apply: impl FnOnce() -> R) -> R {
        // Each shard's lock orders this before the writes, and the last write before
        // the second increment, for any reader that takes the same lock.
        self.together.fetch_add(1, Ordering::AcqRel);
        let result = apply();
        self.together.fetch_add(1, Ordering::Release);
        result
    }

    /// How many `apply_together` calls have ended (for tests).
    #[cfg(test)]
    pub(crate) fn applied_together(&self) -> u64 {
        self.together.load(Ordering::Acquire) / 2
    }

    /// `read`, made again if it overlapped a transaction's writes (`apply_together`).
    fn read<R>(&self, mut read: impl FnMut() -> R) -> R {
        let mut spins = 0u32;
        loop {
            let before = self.together.load(Ordering::Acquire);
            if before & 1 == 0 {
                let result = read();
                // A reader that saw one of the transaction's writes took the shard lock
                // after the writer released it, so it sees the odd count (or later).
                if self.together.load(Ordering::Acquire) == before {
                    return result;
                }
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if spins < 128 {
                std::thread::yield_now();
            } else {
                // Still overlapping: sleep rather than keep yielding, so that readers
                // (async threads, several per core when loaded) leave the CPU to the
                // thread applying the transaction instead of starving it.
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }

    /// Sets `key` to `value` at `revision`, expiring at `deadline` if given; returns
    /// the change in data bytes.
    pub fn insert(&self, key: &[u8], value: &[u8], revision: u64, deadline: Option<u64>) -> i64 {
        let entry = Entry::new(key, value, revision, deadline);
        let added = entry.data_len() as i64;
        let old_deadline = match self.entries.entry(entry) {
            Slot::Occupied(slot) => {
                // Under the shard's write lock, which the cut's reader also takes.
                self.keep_for_cut(key, slot.key(), Some(revision));
                let (old, ()) = slot.replace_entry(());
                let layout = old.layout();
                let change = added - old.data_len() as i64;
                self.reindex(key, layout.deadline, deadline);
                return change;
            }
            Slot::Vacant(slot) => {
                slot.insert(());
                None
            }
        };
        self.reindex(key, old_deadline, deadline);
        added
    }

    /// Removes `key`; returns the change in data bytes.
    pub fn remove(&self, key: &[u8]) -> i64 {
        let removed = self.entries.remove_if(key, |old, ()| {
            // Under the shard's write lock, which the cut's reader also takes.
            self.keep_for_cut(key, old, None);
            true
        });
        match removed {
            Some((old, ())) => {
                self.reindex(key, old.layout().deadline, None);
                -(old.data_len() as i64)
            }
            None => 0,
        }
    }

    fn reindex(&self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old.is_none() && new.is_none() || old == new {
            return;
        }
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = old {
            deadlines.remove(&(old, Box::from(key)));
        }
        if let Some(new) = new {
            deadlines.insert((new, Box::from(key)));
        }
    }

    /// Up to `limit` keys whose deadline is at or before `now`, earliest first, with
    /// their revisions (for the sweep's conditional deletes).
    pub fn expired(&self, now: u64, limit: usize) -> Vec<(Vec<u8>, u64)> {
        let deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .filter_map(|(_, key)| {
                let slot = self.entries.get(&**key)?;
                Some((key.to_vec(), slot.key().layout().revision))
            })
            .collect()
    }

    /// The earliest deadline of any key, if some key has one.
    pub fn next_deadline(&self) -> Option<u64> {
        let deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Number of keys (including expired ones the sweep has not removed yet, as Redis's
    /// `DBSIZE` counts them).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies of every entry, expired or not, in no particular order. For tests and
    /// tools.
    pub fn iter(&self) -> impl Iterator<Item = MapEntry> + '_ {
        self.entries.iter().map(|e| copy(e.key()))
    }
}

fn copy(entry: &Entry) -> MapEntry {
    let layout = entry.layout();
    MapEntry {
        key: entry.key().to_vec(),
        value: entry.value(&layout).to_vec(),
        revision: layout.revision,
        deadline: layout.deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_any_length_and_replacement_in_place() {
        let map = Map::default();
        let long_key = vec![7u8; 300]; // a two-byte varint
        assert_eq!(map.insert(b"", b"empty key", 1, None), 9);
        assert_eq!(map.insert(&long_key, b"v", 2, None), 301);
        assert_eq!(map.insert(b"k", b"one", 3, None), 4);
        assert_eq!(map.insert(b"k", b"three", u64::MAX, None), 2);
        assert_eq!(map.entry(b"k").unwrap().revision(), u64::MAX);
        assert_eq!(map.get(b"k").unwrap(), b"three");
        assert_eq!(map.get(&long_key).unwrap(), b"v");
        assert_eq!(map.get(b"").unwrap(), b"empty key");
        assert_eq!(map.len(), 3);
        assert_eq!(map.remove(b"k"), -6);
        assert_eq!(map.remove(b"k"), 0);
        assert_eq!(map.get(b"k"), None);
        let mut all: Vec<MapEntry> = map.iter().collect();
        all.sort_by(|a, b| a.key().cmp(b.key()));
        assert_eq!(all[0].key(), b"");
        assert_eq!(all[1].value(), b"v");
    }

    #[test]
    fn entries_of_every_size_class_round_trip_and_clone() {
        let map = Map::default();
        // Values whose entry (12 bytes more: header, revision, deadline, key) has a
        // length varint of 1, 2 and 3 bytes, at each boundary.
        for (i, len) in [0usize, 100, 115, 116, 5000, 16_371, 16_372, 300_000]
            .into_iter()
            .enumerate()
        {
            let key = format!("k{i}");
            let value: Vec<u8> = (0..len).map(|b| b as u8).collect();
            map.insert(key.as_bytes(), &value, i as u64 + 1, Some(u64::MAX));
            let e = map.entry(key.as_bytes()).unwrap();
            assert_eq!((e.value(), e.revision()), (&value[..], i as u64 + 1));
            let slot = map.entries.get(key.as_bytes()).unwrap();
            let copy = slot.key().clone();
            assert_eq!(copy.bytes(), slot.key().bytes());
            assert_eq!(copy.key(), key.as_bytes());
        }
        assert_eq!(std::mem::size_of::<Entry>(), 8, "a thin pointer");
    }

    #[test]
    fn a_reader_never_sees_a_key_vanish_while_it_is_replaced() {
        let map = std::sync::Arc::new(Map::default());
        map.insert(b"k", b"0", 1, None);
        let writer = {
            let map = map.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    map.insert(b"k", &i.to_le_bytes(), i as u64 + 2, None);
                }
            })
        };
        while !writer.is_finished() {
            assert!(map.get(b"k").is_some());
        }
        writer.join().unwrap();
    }

    #[test]
    fn get_with_lends_what_get_copies_and_nothing_for_missing_or_expired_keys() {
        let map = Map::default();
        map.insert(b"k", b"value", 1, None);
        map.insert(b"gone", b"v", 2, Some(now_ms() - 1));
        assert_eq!(map.get_with(b"k", <[u8]>::len), Some(5));
        assert_eq!(map.get_with(b"k", <[u8]>::to_vec), map.get(b"k"));
        assert_eq!(map.get_with(b"missing", <[u8]>::len), None);
        assert_eq!(map.get_with(b"gone", <[u8]>::len), None);
        // A read overlapping transactions may run its closure again: what the last
        // run left is what counts, so a closure that starts over each time is exact.
        let map = std::sync::Arc::new(map);
        let writer = {
            let map = map.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    map.apply_together(|| map.insert(b"k", &i.to_le_bytes(), i as u64 + 3, None));
                }
            })
        };
        let mut out = Vec::new();
        while !writer.is_finished() {
            out.clear();
            let found = map.get_with(b"k", |v| {
                out.clear();
                out.extend_from_slice(v);
            });
            assert!(
                found.is_some() && (out.len() == 4 || out == b"value"),
                "{out:?}"
            );
        }
        writer.join().unwrap();
    }

    #[test]
    fn deadlines_hide_keys_and_are_indexed_until_the_key_changes() {
        let map = Map::default();
        let now = now_ms();
        map.insert(b"gone", b"v", 1, Some(now - 1));
        map.insert(b"later", b"v", 2, Some(now + 60_000));
        map.insert(b"plain", b"v", 3, None);
        assert_eq!(map.get(b"gone"), None);
        assert_eq!(map.entry(b"gone").unwrap().deadline(), Some(now - 1));
        assert_eq!(map.get(b"later").unwrap(), b"v");
        assert_eq!(map.expired(now, 10), vec![(b"gone".to_vec(), 1)]);
        assert_eq!(map.next_deadline(), Some(now - 1));
        // Set again without a deadline: out of the index, visible.
        map.insert(b"gone", b"back", 4, None);
        assert_eq!(map.get(b"gone").unwrap(), b"back");
        assert!(map.expired(now, 10).is_empty());
        assert_eq!(map.next_deadline(), Some(now + 60_000));
        map.remove(b"later");
        assert_eq!(map.next_deadline(), None);
        // The header holds large revisions and long keys with a deadline.
        let key = vec![1u8; 200];
        map.insert(&key, b"xyz", 1 << 40, Some(u64::MAX));
        let e = map.entry(&key).unwrap();
        assert_eq!(
            (e.revision(), e.deadline(), e.value()),
            (1 << 40, Some(u64::MAX), &b"xyz"[..])
        );
    }
}
