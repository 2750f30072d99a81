//! One map entry: a key, its value, revision and deadline in a single allocation behind
//! a thin pointer (the layout is in the map's module documentation). The only unsafe
//! code of the map is here.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// One key and its value, revision and deadline in a single allocation, behind a thin
/// pointer: the allocation starts with a varint of how many bytes follow it (the
/// entry's bytes), so the map's slot holds 8 bytes, not a 16-byte fat pointer.
pub(super) struct Entry(std::ptr::NonNull<u8>);

// SAFETY: an entry owns its allocation and never changes it: shared references only
// read, and the bytes are freed once, by `drop`.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

impl Entry {
    /// Copies `parts`, one after another, into an allocation of their own, behind
    /// their total length: one allocation, no intermediate buffer on the heap.
    fn from_parts(parts: &[&[u8]]) -> Entry {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; 10];
        let head_len = put_varint(&mut head, len as u64);
        let size = head_len + len;
        let layout = std::alloc::Layout::array::<u8>(size).expect("an entry's size fits");
        // SAFETY: `size` is at least 1 (the varint), so the layout is not zero-sized.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: the allocation holds `size` = `head_len` + the parts' lengths bytes,
        // freshly allocated (no overlap), each written exactly once, in order.
        unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), ptr.as_ptr(), head_len);
            let mut at = head_len;
            for part in parts {
                std::ptr::copy_nonoverlapping(part.as_ptr(), ptr.as_ptr().add(at), part.len());
                at += part.len();
            }
        }
        Entry(ptr)
    }

    /// The length varint's size and the entry's byte count.
    fn extent(&self) -> (usize, usize) {
        let (mut n, mut shift, mut at) = (0u64, 0, 0);
        loop {
            // SAFETY: the varint was written whole at the start of the allocation, and
            // this reads no further than its last byte (the one without the high bit).
            let b = unsafe { *self.0.as_ptr().add(at) };
            n |= ((b & 0x7f) as u64) << shift;
            at += 1;
            if b & 0x80 == 0 {
                return (at, n as usize);
            }
            shift += 7;
        }
    }

    /// The entry's bytes (after the length).
    pub(super) fn bytes(&self) -> &[u8] {
        let (at, len) = self.extent();
        // SAFETY: the allocation holds `at + len` initialised bytes, alive as long as
        // `self`, and never written after `from_parts`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(at), len) }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let (at, len) = self.extent();
        let layout = std::alloc::Layout::array::<u8>(at + len).expect("as allocated");
        // SAFETY: allocated by `from_parts` with this very layout, freed once.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), layout) };
    }
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        Entry::from_parts(&[self.bytes()])
    }
}

/// Where an entry's parts are.
pub(super) struct Layout {
    pub(super) revision: u64,
    pub(super) deadline: Option<u64>,
    pub(super) key_at: usize,
    pub(super) key_len: usize,
}

/// Writes `n` as a varint at the start of `out` (room for 10 bytes); its length.
fn put_varint(out: &mut [u8], mut n: u64) -> usize {
    let mut at = 0;
    while n >= 0x80 {
        out[at] = (n as u8) | 0x80;
        n >>= 7;
        at += 1;
    }
    out[at] = n as u8;
    at + 1
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let b = bytes[*at];
        n |= ((b & 0x7f) as u64) << shift;
        *at += 1;
        if b & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

impl Entry {
    pub(super) fn new(key: &[u8], value: &[u8], revision: u64, deadline: Option<u64>) -> Entry {
        // The header on the stack: two varints and the deadline, at most 28 bytes.
        let mut head = [0u8; 28];
        let mut at = put_varint(
            &mut head,
            ((key.len() as u64) << 1) | deadline.is_some() as u64,
        );
        at += put_varint(&mut head[at..], revision);
        if let Some(deadline) = deadline {
            head[at..at + 8].copy_from_slice(&deadline.to_le_bytes());
            at += 8;
        }
        Entry::from_parts(&[&head[..at], key, value])
    }

    pub(super) fn layout(&self) -> Layout {
        let bytes = self.bytes();
        let mut at = 0;
        let head = read_varint(bytes, &mut at);
        let revision = read_varint(bytes, &mut at);
        let deadline = (head & 1 == 1).then(|| {
            let d = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            at += 8;
            d
        });
        Layout {
            revision,
            deadline,
            key_at: at,
            key_len: (head >> 1) as usize,
        }
    }

    pub(super) fn key(&self) -> &[u8] {
        let bytes = self.bytes();
        let mut at = 0;
        let head = read_varint(bytes, &mut at);
        read_varint(bytes, &mut at);
        if head & 1 == 1 {
            at += 8;
        }
        &bytes[at..at + (head >> 1) as usize]
    }

    pub(super) fn value(&self, layout: &Layout) -> &[u8] {
        &self.bytes()[layout.key_at + layout.key_len..]
    }

    /// Bytes of key and value (what `kvs_data_bytes` counts).
    pub(super) fn data_len(&self) -> usize {
        self.bytes().len() - self.layout().key_at
    }
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
