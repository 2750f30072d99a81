//! The in-memory map: every key and value kvs holds, compactly.
//!
//! Each entry is one heap allocation — the key's length as a LEB128 varint, the key,
//! the value — behind a `DashMap` slot of one fat pointer (16 bytes), instead of two
//! allocations behind two fat pointers. For small keys and values that halves what kvs
//! needs beyond the data itself (`kvs-bench memory`). Entries hash and compare by their
//! key alone, so lookups take a plain `&[u8]`. Replacing a key's entry swaps it in place
//! under its shard's write lock: a reader sees the old value or the new one, never none.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as Slot;

/// One key and its value in a single allocation.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(key: &[u8], value: &[u8]) -> Entry {
        let mut bytes = Vec::with_capacity(varint_len(key.len()) + key.len() + value.len());
        let mut n = key.len();
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry(bytes.into_boxed_slice())
    }

    /// Where the key starts, and its length.
    fn key_span(&self) -> (usize, usize) {
        let (mut len, mut shift, mut at) = (0usize, 0, 0);
        loop {
            let b = self.0[at];
            len |= ((b & 0x7f) as usize) << shift;
            at += 1;
            if b & 0x80 == 0 {
                return (at, len);
            }
            shift += 7;
        }
    }

    fn key(&self) -> &[u8] {
        let (at, len) = self.key_span();
        &self.0[at..at + len]
    }

    fn value(&self) -> &[u8] {
        let (at, len) = self.key_span();
        &self.0[at + len..]
    }

    /// Bytes of key and value (what `kvs_data_bytes` counts).
    fn data_len(&self) -> usize {
        let (at, _) = self.key_span();
        self.0.len() - at
    }
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, so lookups by `&[u8]` (`Borrow`) find it.
        self.key().hash(state)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// A key and value copied out of the map (see [`Map::iter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    key: Vec<u8>,
    value: Vec<u8>,
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
}

/// Any bytes to any bytes, sharded so readers and the writer rarely meet.
#[derive(Default)]
pub struct Map {
    entries: DashMap<Entry, ()>,
}

impl Map {
    /// A copy of the value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).map(|e| e.key().value().to_vec())
    }

    /// Sets `key` to `value`; returns the change in data bytes.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> i64 {
        let entry = Entry::new(key, value);
        let added = entry.data_len() as i64;
        match self.entries.entry(entry) {
            Slot::Occupied(slot) => {
                let (old, ()) = slot.replace_entry(());
                added - old.data_len() as i64
            }
            Slot::Vacant(slot) => {
                slot.insert(());
                added
            }
        }
    }

    /// Removes `key`; returns the change in data bytes.
    pub fn remove(&self, key: &[u8]) -> i64 {
        self.entries
            .remove(key)
            .map_or(0, |(old, ())| -(old.data_len() as i64))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies of every entry, in no particular order. For tests and tools.
    pub fn iter(&self) -> impl Iterator<Item = MapEntry> + '_ {
        self.entries.iter().map(|e| MapEntry {
            key: e.key().key().to_vec(),
            value: e.key().value().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_any_length_and_replacement_in_place() {
        let map = Map::default();
        let long_key = vec![7u8; 300]; // a two-byte varint
        assert_eq!(map.insert(b"", b"empty key"), 9);
        assert_eq!(map.insert(&long_key, b"v"), 301);
        assert_eq!(map.insert(b"k", b"one"), 4);
        assert_eq!(map.insert(b"k", b"three"), 2);
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
    fn a_reader_never_sees_a_key_vanish_while_it_is_replaced() {
        let map = std::sync::Arc::new(Map::default());
        map.insert(b"k", b"0");
        let writer = {
            let map = map.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    map.insert(b"k", &i.to_le_bytes());
                }
            })
        };
        while !writer.is_finished() {
            assert!(map.get(b"k").is_some());
        }
        writer.join().unwrap();
    }
}
