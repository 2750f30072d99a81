//! What can be wrong with a snapshot, and the messages that say so.

use std::fmt;

use crate::{HEADER_LEN, MAX_BLOCK_BYTES, TRAILER_LEN, VERSION};

/// What is wrong with a snapshot, and where.
///
/// Its `Display` names the damage and the byte offset, e.g. `byte 1234 (block 7): block
/// checksum mismatch (stored 0x1a2b3c4d, computed 0x5e6f7a8b): the file is damaged;
/// take a new backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset in the file: where the damaged part starts (a block, a record, the
    /// header, the trailer), or for a truncation where the file ends.
    pub offset: u64,
    /// The block concerned, numbered from 1 in file order; `None` for the header and
    /// the trailer.
    pub block: Option<u64>,
    /// What is wrong.
    pub kind: DamageKind,
}

/// The part of a snapshot a truncated file ends inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The header.
    Header,
    /// Where the next block or the trailer should start (inside its first 4 bytes, or
    /// at none of them), after `after` whole blocks.
    NextBlock {
        /// Whole blocks before the cut.
        after: u64,
    },
    /// A block, after its length was read.
    Block,
    /// The trailer, after its zero marker was read.
    Trailer,
}

/// Which checksum did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// `header_crc`.
    Header,
    /// A block's `block_crc`.
    Block,
    /// The trailer's `file_crc`.
    File,
}

/// What is wrong with a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageKind {
    /// The file ends early.
    Truncated {
        /// What it ends inside.
        part: Part,
        /// Bytes still expected there (at least that many for [`Part::NextBlock`]: the
        /// rest of a length field plus a trailer).
        missing: u64,
    },
    /// The file does not start with [`crate::MAGIC`].
    NotASnapshot,
    /// A format version this crate does not read.
    UnsupportedVersion {
        /// The file's version.
        found: u16,
    },
    /// Header flags this crate does not know (the header's checksum matched).
    UnknownFlags {
        /// The flags.
        flags: u16,
    },
    /// The header's reserved field is not 0 (the header's checksum matched).
    ReservedNotZero {
        /// The field's value.
        value: u32,
    },
    /// A stored checksum differs from the one computed over what it covers.
    ChecksumMismatch {
        /// Which checksum.
        which: Checksum,
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A block length over [`MAX_BLOCK_BYTES`] (refused before reading or allocating).
    BlockTooLarge {
        /// The length field.
        len: u32,
    },
    /// A block that says it holds no records.
    EmptyBlock,
    /// A record's fixed part or its lengths run past the end of its block.
    RecordOverrun {
        /// The record, numbered from 1 in its block.
        record: u32,
        /// The records the block says it holds.
        count: u32,
        /// Bytes the record needs (its fixed part when that does not fit).
        needs: u64,
        /// Bytes left in the block.
        left: u64,
    },
    /// A record with flags other than bit 0.
    UnknownRecordFlags {
        /// The record, numbered from 1 in its block.
        record: u32,
        /// The flags byte.
        flags: u8,
    },
    /// A record with an empty key.
    EmptyKey {
        /// The record, numbered from 1 in its block.
        record: u32,
    },
    /// Bytes left in a block after the records it says it holds.
    BlockSlack {
        /// The records the block says it holds.
        count: u32,
        /// Bytes left after them.
        extra: u64,
    },
    /// More records than the header's `keys`, found before the trailer.
    TooManyKeys {
        /// The header's `keys`.
        header: u64,
        /// Records read so far.
        at_least: u64,
    },
    /// The trailer does not end with [`crate::END_MAGIC`].
    BadEndMagic,
    /// The trailer's `blocks` is not the number of blocks read.
    TrailerBlocks {
        /// The trailer's `blocks`.
        trailer: u64,
        /// Blocks read.
        counted: u64,
    },
    /// The trailer's `keys` is not the number of records read.
    TrailerKeys {
        /// The trailer's `keys`.
        trailer: u64,
        /// Records read.
        counted: u64,
    },
    /// The trailer's `keys` is not the header's.
    HeaderKeys {
        /// The header's `keys`.
        header: u64,
        /// The trailer's `keys`.
        trailer: u64,
    },
    /// The file goes on after its trailer.
    TrailingBytes,
    /// Reading failed (not damage in the file as such: it may be fine).
    Io {
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's message.
        message: String,
    },
}

impl Damage {
    pub(crate) fn new(offset: u64, block: Option<u64>, kind: DamageKind) -> Damage {
        Damage {
            offset,
            block,
            kind,
        }
    }

    /// Whether the file was cut short (rather than changed, or unreadable).
    pub fn is_truncation(&self) -> bool {
        matches!(self.kind, DamageKind::Truncated { .. })
    }
}

const NEW_BACKUP: &str = "the file is damaged; take a new backup";
const MALFORMED: &str =
    "the block's checksum matched, so it was written wrong (not by kvs's encoder?)";

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}", self.offset)?;
        if let Some(block) = self.block {
            write!(f, " (block {block})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const CUT: &str = "the file was cut short (an interrupted copy or download?); \
                           copy it again or take a new backup";
        match self {
            DamageKind::Truncated { part, missing } => match part {
                Part::Header if *missing == HEADER_LEN as u64 => {
                    write!(f, "truncated: the file is empty")
                }
                Part::Header => write!(
                    f,
                    "truncated inside the header ({missing} more bytes expected): {CUT}"
                ),
                // Nothing of the next length field: the cut is at a block boundary.
                Part::NextBlock { after: 0 } if *missing >= TRAILER_LEN as u64 => write!(
                    f,
                    "truncated right after the header, with no block or trailer: {CUT}, \
                     or the backup did not finish"
                ),
                Part::NextBlock { after } if *missing >= TRAILER_LEN as u64 => write!(
                    f,
                    "truncated after block {after}, with no trailer: {CUT}, or the backup \
                     did not finish"
                ),
                Part::NextBlock { after } => write!(
                    f,
                    "truncated inside the length of block {} or of the trailer (at least \
                     {missing} more bytes expected): {CUT}",
                    after + 1
                ),
                Part::Block => write!(
                    f,
                    "truncated inside the block ({missing} more bytes expected): {CUT} \
                     (or the block's length is damaged)"
                ),
                Part::Trailer => write!(
                    f,
                    "truncated inside the trailer ({missing} more bytes expected): {CUT}"
                ),
            },
            DamageKind::NotASnapshot => write!(f, "not a kvs snapshot (no KVSSNAP magic)"),
            DamageKind::UnsupportedVersion { found } if *found > VERSION => write!(
                f,
                "snapshot version {found} is newer than this kvs reads ({VERSION}): \
                 restore it with a newer kvs"
            ),
            DamageKind::UnsupportedVersion { found } => write!(
                f,
                "snapshot version {found} is not one kvs ever wrote (this kvs reads \
                 {VERSION}): {NEW_BACKUP}"
            ),
            DamageKind::UnknownFlags { flags } => write!(
                f,
                "unknown header flags {flags:#06x}: written by a newer kvs? restore it with \
                 the kvs that took it"
            ),
            DamageKind::ReservedNotZero { value } => write!(
                f,
                "reserved header field is {value:#010x}, not 0: written by a newer kvs? \
                 restore it with the kvs that took it"
            ),
            DamageKind::ChecksumMismatch {
                which,
                stored,
                computed,
            } => {
                let what = match which {
                    Checksum::Header => "header",
                    Checksum::Block => "block",
                    Checksum::File => "file",
                };
                write!(
                    f,
                    "{what} checksum mismatch (stored {stored:#010x}, computed \
                     {computed:#010x}): "
                )?;
                match which {
                    Checksum::File => write!(
                        f,
                        "every block checked out, so the trailer is damaged or blocks were \
                         reordered or spliced in; take a new backup"
                    ),
                    _ => f.write_str(NEW_BACKUP),
                }
            }
            DamageKind::BlockTooLarge { len } => write!(
                f,
                "block length {len} is over the limit ({MAX_BLOCK_BYTES}): {NEW_BACKUP}"
            ),
            DamageKind::EmptyBlock => write!(f, "a block of 0 records: {MALFORMED}"),
            DamageKind::RecordOverrun {
                record,
                count,
                needs,
                left,
            } => write!(
                f,
                "record {record} of {count} needs {needs} bytes but the block has {left} \
                 left: {MALFORMED}"
            ),
            DamageKind::UnknownRecordFlags { record, flags } => write!(
                f,
                "record {record} has unknown flags {flags:#04x}: {MALFORMED}"
            ),
            DamageKind::EmptyKey { record } => {
                write!(f, "record {record} has an empty key: {MALFORMED}")
            }
            DamageKind::BlockSlack { count, extra } => write!(
                f,
                "the block's {count} records end {extra} bytes before the block does: \
                 {MALFORMED}"
            ),
            DamageKind::TooManyKeys { header, at_least } => write!(
                f,
                "the header says {header} keys but the file holds at least {at_least}: \
                 not written by kvs's encoder (or two snapshots were spliced)"
            ),
            DamageKind::BadEndMagic => {
                write!(f, "the trailer has no KVSEND magic: {NEW_BACKUP}")
            }
            DamageKind::TrailerBlocks { trailer, counted } => write!(
                f,
                "the trailer says {trailer} blocks but the file holds {counted}: \
                 {NEW_BACKUP}"
            ),
            DamageKind::TrailerKeys { trailer, counted } => write!(
                f,
                "the trailer says {trailer} keys but the file holds {counted}: {NEW_BACKUP}"
            ),
            DamageKind::HeaderKeys { header, trailer } => write!(
                f,
                "the trailer says {trailer} keys but the header {header}: {NEW_BACKUP}"
            ),
            DamageKind::TrailingBytes => write!(
                f,
                "bytes after the trailer (the snapshot ends here): something was appended, \
                 or two files were joined; cut the file here or take a new backup"
            ),
            DamageKind::Io { message, .. } => write!(
                f,
                "cannot read the snapshot: {message} (the file itself may be fine)"
            ),
        }
    }
}

impl std::error::Error for Damage {}
