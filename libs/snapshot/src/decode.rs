//! Reading a snapshot back, block by block, checking everything on the way.

use std::io::{self, Read};

use crate::damage::{Checksum, Damage, DamageKind, Part};
use crate::{
    END_MAGIC, HAS_DEADLINE, HEADER_LEN, Header, MAGIC, MAX_BLOCK_BYTES, RECORD_FIXED, Record,
    TRAILER_LEN, VERSION,
};

/// Granule in which a block's buffer grows while its bytes arrive: memory follows the
/// bytes actually there, not what a (possibly damaged) length claims.
const GROW: usize = 64 * 1024;

/// Reads a snapshot from any [`Read`], checking as it goes: a block is handed out only
/// once its checksum and records checked out, and the end only once the trailer did.
/// Memory use is one block.
///
/// It reads in small pieces (a few reads per block): a [`std::fs::File`] needs no
/// `BufReader` around it. After an error every later call returns the same error.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    header: Header,
    /// Bytes consumed so far.
    offset: u64,
    /// CRC-32C of the bytes consumed so far.
    crc: u32,
    blocks: u64,
    keys: u64,
    /// The current block's records.
    buf: Vec<u8>,
    state: State,
}

#[derive(Debug)]
enum State {
    Reading,
    Done,
    Failed(Damage),
}

/// The records of one block, checked.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    data: &'a [u8],
    count: u32,
    number: u64,
    offset: u64,
}

impl<'a> Block<'a> {
    /// The block's records, in file order. They were checked when the block was read,
    /// so iteration cannot fail.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.data,
            left: self.count,
        }
    }

    /// Records in the block (at least 1).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of records in the block.
    pub fn len_bytes(&self) -> usize {
        self.data.len()
    }

    /// The block's number, from 1 in file order.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Byte offset of the block in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// Iterator over a [`Block`]'s records.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        match split_record(self.rest) {
            Ok((record, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(record)
            }
            // Unreachable: the block was checked when read.
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Records<'_> {}

/// Why a record does not parse.
enum Fault {
    Overrun { needs: u64, left: u64 },
    Flags(u8),
    EmptyKey,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The record at the start of `b`, and the bytes after it.
fn split_record(b: &[u8]) -> Result<(Record<'_>, &[u8]), Fault> {
    let left = b.len() as u64;
    if b.len() < RECORD_FIXED {
        return Err(Fault::Overrun {
            needs: RECORD_FIXED as u64,
            left,
        });
    }
    let flags = b[0];
    if flags & !HAS_DEADLINE != 0 {
        return Err(Fault::Flags(flags));
    }
    let revision = u64_at(b, 1);
    let key_len = u32_at(b, 9);
    let value_len = u32_at(b, 13);
    if key_len == 0 {
        return Err(Fault::EmptyKey);
    }
    let fixed = RECORD_FIXED + if flags & HAS_DEADLINE != 0 { 8 } else { 0 };
    // In u64: two u32 lengths cannot overflow it, whatever usize is.
    let needs = fixed as u64 + u64::from(key_len) + u64::from(value_len);
    if needs > left {
        return Err(Fault::Overrun { needs, left });
    }
    let deadline = (flags & HAS_DEADLINE != 0).then(|| u64_at(b, RECORD_FIXED));
    let (key, rest) = b[fixed..].split_at(key_len as usize);
    let (value, rest) = rest.split_at(value_len as usize);
    Ok((
        Record {
            key,
            value,
            revision,
            deadline,
        },
        rest,
    ))
}

/// Checks that `data` is exactly `count` valid records: `Err((offset in data, kind))`.
fn check_records(data: &[u8], count: u32) -> Result<(), (usize, DamageKind)> {
    if count == 0 {
        return Err((0, DamageKind::EmptyBlock));
    }
    let mut rest = data;
    for i in 1..=count {
        let at = data.len() - rest.len();
        rest = match split_record(rest) {
            Ok((_, rest)) => rest,
            Err(Fault::Overrun { needs, left }) => {
                let kind = DamageKind::RecordOverrun {
                    record: i,
                    count,
                    needs,
                    left,
                };
                return Err((at, kind));
            }
            Err(Fault::Flags(flags)) => {
                return Err((at, DamageKind::UnknownRecordFlags { record: i, flags }));
            }
            Err(Fault::EmptyKey) => return Err((at, DamageKind::EmptyKey { record: i })),
        };
    }
    if !rest.is_empty() {
        let at = data.len() - rest.len();
        let extra = rest.len() as u64;
        return Err((at, DamageKind::BlockSlack { count, extra }));
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; how many bytes it read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn io_damage(offset: u64, block: Option<u64>, e: &io::Error) -> Damage {
    Damage::new(
        offset,
        block,
        DamageKind::Io {
            kind: e.kind(),
            message: e.to_string(),
        },
    )
}

fn parse_header(b: &[u8; HEADER_LEN]) -> Result<Header, Damage> {
    let at = |offset: u64, kind| Err(Damage::new(offset, None, kind));
    if b[..8] != MAGIC {
        return at(0, DamageKind::NotASnapshot);
    }
    // The version before the checksum: a newer version may lay its header out
    // differently, and should be named as newer, not as damaged.
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != VERSION {
        return at(8, DamageKind::UnsupportedVersion { found: version });
    }
    let stored = u32_at(b, 40);
    let computed = crc32c::crc32c(&b[..40]);
    if stored != computed {
        let which = Checksum::Header;
        let kind = DamageKind::ChecksumMismatch {
            which,
            stored,
            computed,
        };
        return at(0, kind);
    }
    let flags = u16::from_le_bytes([b[10], b[11]]);
    if flags != 0 {
        return at(10, DamageKind::UnknownFlags { flags });
    }
    let reserved = u32_at(b, 12);
    if reserved != 0 {
        return at(12, DamageKind::ReservedNotZero { value: reserved });
    }
    Ok(Header {
        point: u64_at(b, 16),
        taken_at_ms: u64_at(b, 24),
        keys: u64_at(b, 32),
    })
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<(Reader<R>, Header), Damage> {
        let mut b = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut b).map_err(|e| io_damage(0, None, &e))?;
        if got < HEADER_LEN {
            // A cut-short snapshot, if what there is starts like one.
            let kind = if b[..got.min(8)] == MAGIC[..got.min(8)] {
                DamageKind::Truncated {
                    part: Part::Header,
                    missing: (HEADER_LEN - got) as u64,
                }
            } else {
                DamageKind::NotASnapshot
            };
            let offset = if kind == DamageKind::NotASnapshot {
                0
            } else {
                got as u64
            };
            return Err(Damage::new(offset, None, kind));
        }
        let header = parse_header(&b)?;
        let reader = Reader {
            inner,
            header,
            offset: HEADER_LEN as u64,
            crc: crc32c::crc32c(&b),
            blocks: 0,
            keys: 0,
            buf: Vec::new(),
            state: State::Reading,
        };
        Ok((reader, header))
    }

    /// The next block's records, or `None` once the trailer checked out and nothing
    /// follows it.
    pub fn next_block(&mut self) -> Result<Option<Block<'_>>, Damage> {
        match &self.state {
            State::Reading => {}
            State::Done => return Ok(None),
            State::Failed(damage) => return Err(damage.clone()),
        }
        match self.step() {
            Ok(Some((count, number, offset))) => Ok(Some(Block {
                data: &self.buf,
                count,
                number,
                offset,
            })),
            Ok(None) => {
                self.state = State::Done;
                Ok(None)
            }
            Err(damage) => {
                self.state = State::Failed(damage.clone());
                Err(damage)
            }
        }
    }

    /// The header (as [`Reader::new`] returned it).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes read so far: once [`Reader::next_block`] returned `None`, the file's size.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Blocks read so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Records read so far (in the blocks handed out).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Reads exactly `N` bytes into an array, adding them to the file's checksum. If the
    /// input ends first: a truncation inside `part`, with `after` bytes of it still to
    /// come after these.
    fn array<const N: usize>(
        &mut self,
        part: Part,
        block: Option<u64>,
        after: u64,
    ) -> Result<[u8; N], Damage> {
        let mut a = [0u8; N];
        let got =
            read_full(&mut self.inner, &mut a).map_err(|e| io_damage(self.offset, block, &e))?;
        self.offset += got as u64;
        if got < N {
            let missing = (N - got) as u64 + after;
            let kind = DamageKind::Truncated { part, missing };
            return Err(Damage::new(self.offset, block, kind));
        }
        self.crc = crc32c::crc32c_append(self.crc, &a);
        Ok(a)
    }

    /// Reads one block into `buf` (`Some((count, number, offset))`) or the trailer
    /// (`None`).
    fn step(&mut self) -> Result<Option<(u32, u64, u64)>, Damage> {
        let start = self.offset;
        let number = self.blocks + 1;
        // At least the rest of a trailer is still to come.
        let after = (TRAILER_LEN - 4) as u64;
        let len_bytes = self.array::<4>(Part::NextBlock { after: self.blocks }, None, after)?;
        let len = u32::from_le_bytes(len_bytes);
        if len == 0 {
            self.trailer(start)?;
            return Ok(None);
        }
        let block = Some(number);
        if len as usize > MAX_BLOCK_BYTES {
            return Err(Damage::new(start, block, DamageKind::BlockTooLarge { len }));
        }
        let len = len as usize;
        // Still to come after the count: the records and the checksum.
        let count_bytes = self.array::<4>(Part::Block, block, len as u64 + 4)?;
        let count = u32::from_le_bytes(count_bytes);

        // Grown as the bytes arrive, never beyond `len` (checked above).
        self.buf.clear();
        while self.buf.len() < len {
            let from = self.buf.len();
            let step = (len - from).min(from.max(GROW));
            self.buf.reserve_exact(step);
            self.buf.resize(from + step, 0);
            let got = read_full(&mut self.inner, &mut self.buf[from..])
                .map_err(|e| io_damage(self.offset, block, &e))?;
            self.buf.truncate(from + got);
            self.offset += got as u64;
            if got < step {
                let missing = (len - self.buf.len()) as u64 + 4;
                let kind = DamageKind::Truncated {
                    part: Part::Block,
                    missing,
                };
                return Err(Damage::new(self.offset, block, kind));
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);

        let computed = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &count_bytes),
            &self.buf,
        );
        let stored = u32::from_le_bytes(self.array::<4>(Part::Block, block, 0)?);
        if stored != computed {
            let kind = DamageKind::ChecksumMismatch {
                which: Checksum::Block,
                stored,
                computed,
            };
            return Err(Damage::new(start, block, kind));
        }
        if let Err((at, kind)) = check_records(&self.buf, count) {
            // Records start 8 bytes into the block (after len and count).
            return Err(Damage::new(start + 8 + at as u64, block, kind));
        }
        self.blocks = number;
        self.keys += u64::from(count);
        if self.keys > self.header.keys {
            let kind = DamageKind::TooManyKeys {
                header: self.header.keys,
                at_least: self.keys,
            };
            return Err(Damage::new(start, block, kind));
        }
        Ok(Some((count, number, start)))
    }

    /// Reads and checks the trailer (its zero marker, at `start`, already read) and
    /// that nothing follows it.
    fn trailer(&mut self, start: u64) -> Result<(), Damage> {
        let at = |kind| Err(Damage::new(start, None, kind));
        let counts = self.array::<16>(Part::Trailer, None, 12)?;
        let computed = self.crc;
        let rest = self.array::<12>(Part::Trailer, None, 0)?;
        let stored = u32_at(&rest, 0);
        if stored != computed {
            let which = Checksum::File;
            return at(DamageKind::ChecksumMismatch {
                which,
                stored,
                computed,
            });
        }
        if rest[4..12] != END_MAGIC {
            return at(DamageKind::BadEndMagic);
        }
        let blocks = u64_at(&counts, 0);
        if blocks != self.blocks {
            return at(DamageKind::TrailerBlocks {
                trailer: blocks,
                counted: self.blocks,
            });
        }
        let keys = u64_at(&counts, 8);
        if keys != self.keys {
            return at(DamageKind::TrailerKeys {
                trailer: keys,
                counted: self.keys,
            });
        }
        if keys != self.header.keys {
            return at(DamageKind::HeaderKeys {
                header: self.header.keys,
                trailer: keys,
            });
        }
        let mut probe = [0u8; 1];
        let got =
            read_full(&mut self.inner, &mut probe).map_err(|e| io_damage(self.offset, None, &e))?;
        if got != 0 {
            return Err(Damage::new(self.offset, None, DamageKind::TrailingBytes));
        }
        Ok(())
    }
}

/// What a snapshot holds, as [`verify`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The header.
    pub header: Header,
    /// Blocks in the file.
    pub blocks: u64,
    /// Records (keys) in the file.
    pub keys: u64,
    /// The file's size.
    pub bytes: u64,
    /// Records with a deadline.
    pub with_deadline: u64,
    /// Bytes of all keys.
    pub key_bytes: u64,
    /// Bytes of all values.
    pub value_bytes: u64,
}

/// Reads a whole snapshot, checking everything; what it holds, or the first thing
/// wrong with it. Memory use is one block.
pub fn verify<R: Read>(r: R) -> Result<Summary, Damage> {
    let (mut reader, header) = Reader::new(r)?;
    let (mut with_deadline, mut key_bytes, mut value_bytes) = (0u64, 0u64, 0u64);
    while let Some(block) = reader.next_block()? {
        for record in block.records() {
            with_deadline += u64::from(record.deadline.is_some());
            key_bytes += record.key.len() as u64;
            value_bytes += record.value.len() as u64;
        }
    }
    Ok(Summary {
        header,
        blocks: reader.blocks(),
        keys: reader.keys(),
        bytes: reader.offset(),
        with_deadline,
        key_bytes,
        value_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_follows_the_bytes_that_arrive_not_the_length_claimed() {
        let mut file = crate::encode(0, 0, &[]).unwrap()[..HEADER_LEN].to_vec();
        file.extend_from_slice(&(MAX_BLOCK_BYTES as u32).to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&[0u8; 100]);
        let (mut reader, _) = Reader::new(&file[..]).unwrap();
        let damage = reader.next_block().unwrap_err();
        assert!(damage.is_truncation(), "{damage}");
        assert!(reader.buf.capacity() <= GROW, "{}", reader.buf.capacity());

        // A block at the limit takes exactly that much, however it grew.
        let value = vec![1u8; MAX_BLOCK_BYTES - RECORD_FIXED - 1];
        let record = Record {
            key: b"k",
            value: &value,
            revision: 0,
            deadline: None,
        };
        let file = crate::encode(0, 0, &[record]).unwrap();
        let (mut reader, _) = Reader::new(&file[..]).unwrap();
        reader.next_block().unwrap().unwrap();
        assert_eq!(reader.buf.capacity(), MAX_BLOCK_BYTES);
    }
}
