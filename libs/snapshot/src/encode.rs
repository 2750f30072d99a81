//! Writing a snapshot: header, blocks, trailer, as byte chunks the producer streams.

use std::fmt;

use crate::{END_MAGIC, HAS_DEADLINE, Header, MAX_BLOCK_BYTES, Record};

/// The records of the block being built: plain bytes, so a producer can fill it while
/// holding a lock on the store, with no allocation per record (its capacity is kept
/// across blocks).
#[derive(Debug, Clone, Default)]
pub struct BlockBuf {
    pub(crate) bytes: Vec<u8>,
    count: u32,
}

impl BlockBuf {
    /// An empty block.
    pub fn new() -> BlockBuf {
        BlockBuf::default()
    }

    /// Bytes of records in the block: seal it (see [`Encoder::seal`]) once this reaches
    /// [`crate::BLOCK_TARGET_BYTES`].
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Records in the block.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the block holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Drops the block's records, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }
}

/// Why a record could not be added, or a snapshot finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A record with an empty key (the format needs at least one byte).
    EmptyKey,
    /// A record that alone is over [`MAX_BLOCK_BYTES`] (kvs's value limits are far
    /// below).
    RecordTooLarge {
        /// The record's encoded size.
        bytes: u64,
    },
    /// The record would take the block over [`MAX_BLOCK_BYTES`]: seal the block, then
    /// add the record again (the block is unchanged). Cannot happen to a producer that
    /// seals at [`crate::BLOCK_TARGET_BYTES`] with records under 16 MiB - 64 KiB.
    BlockFull,
    /// [`Encoder::finish`] with a number of records other than the header's `keys`; no
    /// trailer was written, so a reader would refuse the file as truncated.
    KeysMismatch {
        /// The header's `keys`.
        header: u64,
        /// Records sealed into blocks.
        written: u64,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::EmptyKey => write!(f, "a snapshot record needs a non-empty key"),
            EncodeError::RecordTooLarge { bytes } => write!(
                f,
                "a snapshot record of {bytes} bytes is over the block limit \
                 ({MAX_BLOCK_BYTES})"
            ),
            EncodeError::BlockFull => write!(
                f,
                "the snapshot block is full ({MAX_BLOCK_BYTES} bytes): seal it first"
            ),
            EncodeError::KeysMismatch { header, written } => write!(
                f,
                "the snapshot header promised {header} keys but {written} were written"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Writes a snapshot as byte chunks: [`Encoder::new`] gives the header's bytes,
/// [`Encoder::seal`] each block's, [`Encoder::finish`] the trailer's; the producer streams
/// them anywhere (a file, an HTTP body) in that order.
///
/// ```
/// use kvs_snapshot::{BLOCK_TARGET_BYTES, BlockBuf, Encoder, Header, Record};
///
/// let records = [Record { key: b"k", value: b"v", revision: 1, deadline: None }];
/// let header = Header { point: 42, taken_at_ms: 1_700_000_000_000, keys: 1 };
/// let (mut encoder, mut file) = Encoder::new(&header);
/// let mut block = BlockBuf::new();
/// for record in &records {
///     Encoder::encode_record(&mut block, record)?;
///     if block.len_bytes() >= BLOCK_TARGET_BYTES {
///         encoder.seal(&mut block, &mut file);
///     }
/// }
/// encoder.seal(&mut block, &mut file);
/// encoder.finish(&mut file)?;
/// assert_eq!(kvs_snapshot::verify(&file[..])?.keys, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    /// CRC-32C of every byte handed out so far.
    crc: u32,
    bytes: u64,
    blocks: u64,
    keys: u64,
    expected: u64,
}

impl Encoder {
    /// Starts a snapshot; returns the encoder and the header's bytes.
    pub fn new(header: &Header) -> (Encoder, Vec<u8>) {
        let bytes = header.encode();
        let encoder = Encoder {
            crc: crc32c::crc32c(&bytes),
            bytes: bytes.len() as u64,
            blocks: 0,
            keys: 0,
            expected: header.keys,
        };
        (encoder, bytes.to_vec())
    }

    /// Appends `record` to `block`. On an error `block` is unchanged.
    pub fn encode_record(block: &mut BlockBuf, record: &Record<'_>) -> Result<(), EncodeError> {
        if record.key.is_empty() {
            return Err(EncodeError::EmptyKey);
        }
        let size = record.encoded_len();
        if size > MAX_BLOCK_BYTES {
            return Err(EncodeError::RecordTooLarge { bytes: size as u64 });
        }
        if block.bytes.len() + size > MAX_BLOCK_BYTES {
            return Err(EncodeError::BlockFull);
        }
        // Both lengths fit in a u32: the record is under MAX_BLOCK_BYTES.
        let b = &mut block.bytes;
        b.push(if record.deadline.is_some() {
            HAS_DEADLINE
        } else {
            0
        });
        b.extend_from_slice(&record.revision.to_le_bytes());
        b.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
        b.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
        if let Some(deadline) = record.deadline {
            b.extend_from_slice(&deadline.to_le_bytes());
        }
        b.extend_from_slice(record.key);
        b.extend_from_slice(record.value);
        block.count += 1;
        Ok(())
    }

    /// Seals `block`, if it holds any record, into bytes appended to `out`, and clears
    /// it. Call it whenever [`BlockBuf::len_bytes`] reaches
    /// [`crate::BLOCK_TARGET_BYTES`] (a reader's memory is one block), and once more
    /// before [`Encoder::finish`].
    pub fn seal(&mut self, block: &mut BlockBuf, out: &mut Vec<u8>) {
        if block.is_empty() {
            return;
        }
        let start = out.len();
        out.reserve(block.bytes.len() + 12);
        // Fits: encode_record keeps a block within MAX_BLOCK_BYTES.
        out.extend_from_slice(&(block.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&block.count.to_le_bytes());
        out.extend_from_slice(&block.bytes);
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, &out[start..]);
        self.bytes += (out.len() - start) as u64;
        self.blocks += 1;
        self.keys += u64::from(block.count);
        block.clear();
    }

    /// Appends the trailer to `out`, ending the snapshot. An error, and nothing
    /// appended, if the records sealed are not the header's `keys` (an unsealed last
    /// block, say).
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.keys != self.expected {
            return Err(EncodeError::KeysMismatch {
                header: self.expected,
                written: self.keys,
            });
        }
        let mut t = [0u8; crate::TRAILER_LEN];
        // 0..4 stays 0: the end marker.
        t[4..12].copy_from_slice(&self.blocks.to_le_bytes());
        t[12..20].copy_from_slice(&self.keys.to_le_bytes());
        let crc = crc32c::crc32c_append(self.crc, &t[..20]);
        t[20..24].copy_from_slice(&crc.to_le_bytes());
        t[24..32].copy_from_slice(&END_MAGIC);
        out.extend_from_slice(&t);
        Ok(())
    }

    /// Bytes handed out so far (header and sealed blocks).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Blocks sealed so far.
    pub fn blocks_written(&self) -> u64 {
        self.blocks
    }

    /// Records sealed into blocks so far.
    pub fn keys_written(&self) -> u64 {
        self.keys
    }
}

/// A whole snapshot of `records` in memory (for tests and small stores; a producer
/// with many keys streams with [`Encoder`] instead). The header's `keys` is
/// `records.len()`.
pub fn encode(
    point: u64,
    taken_at_ms: u64,
    records: &[Record<'_>],
) -> Result<Vec<u8>, EncodeError> {
    let header = Header {
        point,
        taken_at_ms,
        keys: records.len() as u64,
    };
    let (mut encoder, mut out) = Encoder::new(&header);
    let mut block = BlockBuf::new();
    for record in records {
        Encoder::encode_record(&mut block, record)?;
        if block.len_bytes() >= crate::BLOCK_TARGET_BYTES {
            encoder.seal(&mut block, &mut out);
        }
    }
    encoder.seal(&mut block, &mut out);
    encoder.finish(&mut out)?;
    Ok(out)
}
