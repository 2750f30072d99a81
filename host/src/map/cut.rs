//! A cut: the whole map as it was at one point in the write order, read while writes go
//! on (what `kvs backup` and `kvs migrate` copy).
//!
//! Whoever applies writes begins a cut between two of them ([`Map::begin_cut`]); its
//! point is the revision of the last write applied. The reader then copies the map one
//! shard at a time, under that shard's read lock: entries whose revision is at or before
//! the point are as they were then; entries written since are skipped. A write that
//! changes or removes an entry of a shard not yet copied keeps the entry it replaces, if
//! that entry was there at the point (its revision is at or before it), under the same
//! shard lock; the reader adds those kept entries once it has copied their shard. So
//! every key that existed at the point comes out exactly once, as it was, and what a cut
//! holds in memory beyond one shard's copy is what writes replaced while it ran — not
//! the size of the store.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Entry, Map, SHARDS};

/// A cut being read (see the module documentation).
pub struct Cut {
    point: u64,
    taken_at_ms: u64,
    keys: u64,
    /// Per shard: whether the reader has copied it (writes to it keep nothing more).
    copied: Box<[AtomicBool]>,
    /// Per shard: entries as they were at the point, of keys changed since, kept until
    /// the reader copies the shard.
    kept: Box<[Mutex<Vec<Entry>>]>,
    kept_bytes: AtomicU64,
    /// Set when keeping one more entry would pass [`MAX_KEPT_BYTES`]: the cut is
    /// incomplete from then on, and its reader fails.
    abandoned: AtomicBool,
}

/// Most bytes of replaced entries a cut keeps: past it (a reader far slower than the
/// writes), the cut is abandoned rather than let memory grow.
pub const MAX_KEPT_BYTES: u64 = 512 << 20;

/// One key as a cut holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutRecord<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Its value at the cut's point.
    pub value: &'a [u8],
    /// The write that last changed it, at or before the point.
    pub revision: u64,
    /// When it expires (milliseconds since the Unix epoch), if it does. An entry already
    /// expired at the point but not yet swept is in the cut too, as it is in the map.
    pub deadline: Option<u64>,
}

impl Cut {
    /// The position in the write order the cut is as of.
    pub fn point(&self) -> u64 {
        self.point
    }

    /// Wall-clock milliseconds since the Unix epoch when the cut began.
    pub fn taken_at_ms(&self) -> u64 {
        self.taken_at_ms
    }

    /// How many keys it holds (every entry of the map at the point).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Bytes of entries kept for the cut right now (written over since the point, in
    /// shards not yet copied).
    pub fn kept_bytes(&self) -> u64 {
        self.kept_bytes.load(Ordering::Relaxed)
    }

    /// How many shards a reader copies ([`Map::read_cut`] takes each index once).
    pub fn shards(&self) -> usize {
        self.copied.len()
    }

    /// Whether writes replaced more than [`MAX_KEPT_BYTES`] while it was read, so it no
    /// longer holds every key: its reader must give up.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }
}

impl Map {
    /// Begins a cut as of `point`, the revision of the last write applied; `None` if
    /// another cut is being read. Call it from whoever applies writes, between two of
    /// them, and [`Map::end_cut`] when done.
    pub fn begin_cut(&self, point: u64) -> Option<Arc<Cut>> {
        if self.cut.load().is_some() {
            return None;
        }
        let shards = self.entries.shards().len();
        debug_assert_eq!(shards, SHARDS);
        let cut = Arc::new(Cut {
            point,
            taken_at_ms: super::now_ms(),
            keys: self.entries.len() as u64,
            copied: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            kept: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            kept_bytes: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
        });
        self.cut.store(Some(cut.clone()));
        self.cutting.store(true, Ordering::Relaxed);
        Some(cut)
    }

    /// Ends `cut` (read or abandoned): writes stop keeping entries for it.
    pub fn end_cut(&self, cut: &Arc<Cut>) {
        let current = self.cut.load_full();
        if current.is_some_and(|c| Arc::ptr_eq(&c, cut)) {
            self.cutting.store(false, Ordering::Relaxed);
            self.cut.store(None);
        }
    }

    /// Hands `each` every key of shard `shard` as it was at the cut's point: first what
    /// the shard holds unchanged since (copied under its read lock, so keep `each`
    /// cheap), then what writes kept. Call it once per shard, `0..cut.shards()`.
    pub fn read_cut(&self, cut: &Cut, shard: usize, mut each: impl FnMut(CutRecord<'_>)) {
        {
            let table = self.entries.shards()[shard].read();
            // SAFETY: the read lock is held for as long as the iterator and the
            // references it yields live, so no bucket is moved or freed meanwhile.
            for bucket in unsafe { table.iter() } {
                let (entry, _) = unsafe { bucket.as_ref() };
                let record = entry.record();
                if record.revision <= cut.point {
                    each(record);
                }
            }
            // Still under the lock: a write to this shard from now on finds it copied.
            cut.copied[shard].store(true, Ordering::Release);
        }
        let kept = std::mem::take(&mut *cut.kept[shard].lock().unwrap_or_else(|e| e.into_inner()));
        let mut bytes = 0u64;
        for entry in &kept {
            bytes += entry.bytes().len() as u64;
            each(entry.record());
        }
        cut.kept_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Keeps `old`, about to be replaced (by an entry at revision `new`) or removed
    /// (`new` is `None`) under `key`'s shard lock, for the cut being read if it needs it.
    pub(super) fn keep_for_cut(&self, key: &[u8], old: &Entry, new: Option<u64>) {
        if !self.cutting.load(Ordering::Relaxed) {
            return; // no cut: one relaxed load on the write path
        }
        let cut = self.cut.load();
        let Some(cut) = cut.as_ref() else {
            return;
        };
        if old.layout().revision > cut.point {
            return; // written since the point: kept already, or absent then
        }
        if new.is_some_and(|new| new <= cut.point) {
            // Not a change since the point but the same entry delivered again (a shared
            // log's snapshot reloaded): the shard's copy will hold it.
            return;
        }
        let shard = self.entries.determine_map(key);
        if cut.copied[shard].load(Ordering::Acquire) {
            return;
        }
        let bytes = old.bytes().len() as u64;
        if cut.kept_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_KEPT_BYTES {
            cut.kept_bytes.fetch_sub(bytes, Ordering::Relaxed);
            cut.abandoned.store(true, Ordering::Release);
            return;
        }
        cut.kept[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(old.clone());
    }
}

impl Entry {
    fn record(&self) -> CutRecord<'_> {
        let layout = self.layout();
        CutRecord {
            key: &self.bytes()[layout.key_at..layout.key_at + layout.key_len],
            value: self.value(&layout),
            revision: layout.revision,
            deadline: layout.deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_abandoned_cut_is_said_to_be_so_and_the_same_entry_delivered_again_is_not_kept() {
        let map = Map::default();
        map.insert(b"k", b"v", 1, None);
        let cut = map.begin_cut(1).unwrap();
        // A shared log's snapshot reloaded delivers the entry again, at its revision.
        map.insert(b"k", b"v", 1, None);
        assert_eq!(cut.kept_bytes(), 0);
        let mut all = Vec::new();
        for shard in 0..cut.shards() {
            map.read_cut(&cut, shard, |r| all.push(r.key.to_vec()));
        }
        assert_eq!(all, [b"k".to_vec()]);
        assert!(!cut.abandoned());
        map.end_cut(&cut);
        let cut = map.begin_cut(1).unwrap();
        cut.kept_bytes.store(MAX_KEPT_BYTES, Ordering::Relaxed);
        map.insert(b"k", b"w", 2, None);
        assert!(cut.abandoned());
    }

    use super::*;

    fn read_all(map: &Map, cut: &Cut) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        let mut all = Vec::new();
        for shard in 0..cut.shards() {
            map.read_cut(cut, shard, |r| {
                all.push((r.key.to_vec(), r.value.to_vec(), r.revision))
            });
        }
        all.sort();
        all
    }

    #[test]
    fn a_cut_is_the_map_at_its_point_whatever_is_written_while_it_is_read() {
        let map = Map::default();
        for i in 0..2000u64 {
            map.insert(format!("k{i}").as_bytes(), b"old", i + 1, None);
        }
        let cut = map.begin_cut(2000).unwrap();
        assert!(map.begin_cut(2000).is_none(), "one cut at a time");
        let mut expected: Vec<(Vec<u8>, Vec<u8>, u64)> = (0..2000u64)
            .map(|i| (format!("k{i}").into_bytes(), b"old".to_vec(), i + 1))
            .collect();
        expected.sort();
        let mut all = Vec::new();
        let mut revision = 2000;
        for shard in 0..cut.shards() {
            // Between shards: overwrite, delete, re-create and add keys everywhere.
            for i in (shard as u64..2000).step_by(97) {
                revision += 1;
                let key = format!("k{i}");
                match i % 3 {
                    0 => {
                        map.insert(key.as_bytes(), b"new", revision, None);
                    }
                    1 => {
                        map.remove(key.as_bytes());
                    }
                    _ => {
                        map.remove(key.as_bytes());
                        map.insert(key.as_bytes(), b"again", revision, None);
                    }
                }
                map.insert(format!("new{revision}").as_bytes(), b"x", revision, None);
            }
            map.read_cut(&cut, shard, |r| {
                all.push((r.key.to_vec(), r.value.to_vec(), r.revision))
            });
        }
        all.sort();
        assert_eq!(all, expected);
        assert_eq!(cut.keys(), 2000);
        assert_eq!(cut.kept_bytes(), 0);
        map.end_cut(&cut);
        map.insert(b"k1", b"later", revision + 1, None);
        let again = map.begin_cut(revision + 1).unwrap();
        assert!(read_all(&map, &again).contains(&(
            b"k1".to_vec(),
            b"later".to_vec(),
            revision + 1
        )));
    }

    #[test]
    fn a_cut_read_beside_a_writer_thread_is_exact() {
        let map = Arc::new(Map::default());
        for i in 0..5000u64 {
            map.insert(&i.to_le_bytes(), b"at the point", i + 1, None);
        }
        let cut = map.begin_cut(5000).unwrap();
        let writer = {
            let map = map.clone();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    for i in 0..5000u64 {
                        let revision = 5001 + round * 5000 + i;
                        if (i + round) % 2 == 0 {
                            map.remove(&i.to_le_bytes());
                        } else {
                            map.insert(&i.to_le_bytes(), b"after", revision, None);
                        }
                    }
                }
            })
        };
        let all = read_all(&map, &cut);
        writer.join().unwrap();
        assert_eq!(all.len(), 5000);
        let mut keys: Vec<&Vec<u8>> = all.iter().map(|(k, _, _)| k).collect();
        keys.dedup();
        assert_eq!(keys.len(), 5000, "a key twice");
        assert!(
            all.iter()
                .all(|(_, v, r)| v == b"at the point" && *r <= 5000)
        );
    }
}
