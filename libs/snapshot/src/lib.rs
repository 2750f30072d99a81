//! kvs's backup file format: a snapshot of every key as of one point in the write
//! order, independent of the transaction logger that produced it (a file, PostgreSQL,
//! etcd, ... backup restores into any of them).
//!
//! * [`Encoder`] + [`BlockBuf`]: write a snapshot as byte chunks, to stream anywhere
//!   (a file, an HTTP body) without holding the whole of it.
//! * [`Reader`]: read one back from any [`std::io::Read`], block by block, checking
//!   everything as it goes; memory use is one block (at most [`MAX_BLOCK_BYTES`]).
//! * [`verify`]: read a whole snapshot and say what it holds ([`Summary`]) or what is
//!   wrong with it and where ([`Damage`]).
//!
//! This documentation is the format's specification.
//!
//! # Format, version 1
//!
//! All integers are unsigned and little-endian. Checksums are CRC-32C (Castagnoli:
//! reflected polynomial `0x82F63B78`, initial value and final XOR `0xFFFFFFFF`; the
//! CRC-32C of the ASCII bytes `123456789` is `0xE3069283`), as in iSCSI, ext4 and
//! the `crc32c` crate. A file is
//!
//! ```text
//! File := Header Block* Trailer
//! ```
//!
//! ## Header, 44 bytes
//!
//! | offset | size | field | value |
//! |---:|---:|---|---|
//! | 0 | 8 | magic | `KVSSNAP\0` (`4B 56 53 53 4E 41 50 00`): [`MAGIC`] |
//! | 8 | 2 | version | `1` ([`VERSION`]) |
//! | 10 | 2 | flags | `0`: none is defined yet; a reader refuses any bit set |
//! | 12 | 4 | reserved | `0`; a reader refuses anything else |
//! | 16 | 8 | point | the position in kvs's write order (the sequence of the last write included) that the snapshot is as of |
//! | 24 | 8 | taken_at_ms | wall-clock time at that point, milliseconds since the Unix epoch |
//! | 32 | 8 | keys | how many records the file holds |
//! | 40 | 4 | header_crc | CRC-32C of bytes 0..40 |
//!
//! ## Block, 12 + `len` bytes
//!
//! Offsets from the start of the block. A producer seals a block once its records reach
//! [`BLOCK_TARGET_BYTES`] (64 KiB), so a reader needs about that much memory; the
//! format allows up to [`MAX_BLOCK_BYTES`] (16 MiB).
//!
//! | offset | size | field | value |
//! |---:|---:|---|---|
//! | 0 | 4 | len | bytes of records that follow: `1..=16 777 216`. `0` is not a block but the start of the trailer |
//! | 4 | 4 | count | records in the block, at least 1 |
//! | 8 | len | records | exactly `count` records, filling exactly `len` bytes |
//! | 8 + len | 4 | block_crc | CRC-32C of the block's bytes 0..8+len (len, count and the records) |
//!
//! ## Record, 17 + 8 (if a deadline) + `key_len` + `value_len` bytes
//!
//! Offsets from the start of the record; records follow each other with no padding.
//!
//! | offset | size | field | value |
//! |---:|---:|---|---|
//! | 0 | 1 | flags | bit 0: a deadline follows. The other bits must be 0 |
//! | 1 | 8 | revision | the key's revision |
//! | 9 | 4 | key_len | at least 1 |
//! | 13 | 4 | value_len | may be 0 (an empty value) |
//! | 17 | 8 | deadline | only if flags bit 0: when the key expires, wall-clock milliseconds since the Unix epoch |
//! | 17 or 25 | key_len | key | any bytes |
//! | then | value_len | value | any bytes |
//!
//! Each key appears at most once in a snapshot, in no particular order (a reader does
//! not check this: it would need memory for every key).
//!
//! ## Trailer, 32 bytes
//!
//! Offsets from the start of the trailer. Nothing may follow it.
//!
//! | offset | size | field | value |
//! |---:|---:|---|---|
//! | 0 | 4 | zero | `0`: the end marker, where the next block's `len` would be |
//! | 4 | 8 | blocks | how many blocks the file holds |
//! | 12 | 8 | keys | how many records the file holds; equal to the header's `keys` |
//! | 20 | 4 | file_crc | CRC-32C of every byte of the file before this field: header, blocks and the trailer's first 20 bytes |
//! | 24 | 8 | end magic | `KVSEND\0\0` (`4B 56 53 45 4E 44 00 00`): [`END_MAGIC`] |
//!
//! ## What a reader checks, in order
//!
//! 1. The magic (else "not a kvs snapshot"), then the version (a newer one is refused,
//!    naming it), then `header_crc`, then that `flags` and `reserved` are 0.
//! 2. Per block: `len` at most [`MAX_BLOCK_BYTES`] *before* it reads or allocates the
//!    records; `block_crc`; then that `count >= 1` and the records fill `len` exactly,
//!    each with known flags, a key of at least 1 byte and lengths inside the block; and
//!    that the records so far do not outnumber the header's `keys`. A block is handed
//!    to the caller only once all of that checked out.
//! 3. The trailer: `file_crc`, the end magic, `blocks` and `keys` against what was read,
//!    `keys` against the header, then that the file ends there.
//!
//! A file that ends early is always reported as truncated (with the byte offset where it
//! ends), never as a generic read error. Any single flipped bit is caught: the header and
//! each block have their own checksum, the end magic is compared, and `file_crc` covers
//! the trailer's counts and the order of the blocks.
//!
//! ## Test vector
//!
//! A snapshot with `point` 7, `taken_at_ms` 1 700 000 000 000 and one record (key `k`,
//! value `v`, revision 3, no deadline), 107 bytes (the unit test `test_vector` checks
//! it):
//!
//! ```text
//! 0000  4b 56 53 53 4e 41 50 00 01 00 00 00 00 00 00 00   header: magic, version 1, flags, reserved
//! 0010  07 00 00 00 00 00 00 00 00 68 e5 cf 8b 01 00 00   point 7, taken_at_ms
//! 0020  01 00 00 00 00 00 00 00 2c 3a 8e 6b               keys 1, header_crc
//! 002c  13 00 00 00 01 00 00 00                           block: len 19, count 1
//! 0034  00 03 00 00 00 00 00 00 00 01 00 00 00 01 00 00   record: flags 0, revision 3,
//! 0044  00 6b 76                                            key_len 1, value_len 1, "k", "v"
//! 0047  99 f5 0b cb                                       block_crc
//! 004b  00 00 00 00 01 00 00 00 00 00 00 00 01 00 00 00   trailer: zero, blocks 1,
//! 005b  00 00 00 00 18 32 39 b0 4b 56 53 45 4e 44 00 00     keys 1, file_crc, end magic
//! ```
#![warn(missing_docs)]

mod damage;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use damage::{Checksum, Damage, DamageKind, Part};
pub use decode::{Block, Reader, Records, Summary, verify};
pub use encode::{BlockBuf, EncodeError, Encoder, encode};

/// The first 8 bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"KVSSNAP\0";
/// The last 8 bytes of every snapshot.
pub const END_MAGIC: [u8; 8] = *b"KVSEND\0\0";
/// The format version this crate writes and the only one it reads.
pub const VERSION: u16 = 1;
/// Bytes in the header.
pub const HEADER_LEN: usize = 44;
/// Bytes in the trailer.
pub const TRAILER_LEN: usize = 32;
/// The most record bytes one block may hold: what bounds a reader's memory.
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;
/// Size at which a producer should seal a block (see [`Encoder::seal`]): big enough
/// that the 12 bytes of framing and a checksum per block cost nothing, small enough
/// that a reader holds little.
pub const BLOCK_TARGET_BYTES: usize = 64 * 1024;

/// Bytes of a record before its deadline, key and value: flags, revision, key_len,
/// value_len.
const RECORD_FIXED: usize = 1 + 8 + 4 + 4;
/// Record flag: a deadline follows the fixed part.
const HAS_DEADLINE: u8 = 1;

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The position in kvs's write order the snapshot is as of.
    pub point: u64,
    /// Wall-clock time at that point, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// How many records the file holds.
    pub keys: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        // 10..12 flags and 12..16 reserved stay 0.
        b[16..24].copy_from_slice(&self.point.to_le_bytes());
        b[24..32].copy_from_slice(&self.taken_at_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.keys.to_le_bytes());
        let crc = crc32c::crc32c(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// One key as a snapshot holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key: at least one byte.
    pub key: &'a [u8],
    /// The value (may be empty).
    pub value: &'a [u8],
    /// The key's revision.
    pub revision: u64,
    /// When the key expires, wall-clock milliseconds since the Unix epoch.
    pub deadline: Option<u64>,
}

impl Record<'_> {
    /// Bytes this record takes in a block.
    pub fn encoded_len(&self) -> usize {
        RECORD_FIXED
            + if self.deadline.is_some() { 8 } else { 0 }
            + self.key.len()
            + self.value.len()
    }
}
