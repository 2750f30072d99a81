//! The backup file format (`kvs_snapshot`, libs/snapshot): `verify` and `Reader` on
//! three kinds of input, chosen by the first byte:
//! * arbitrary bytes (a valid snapshot in the seeds, so mutations start from one);
//! * a snapshot encoded from fuzzer-chosen records (keys, values, revisions,
//!   deadlines), sealed every N records or at the 64 KiB target, then one fuzzer-chosen
//!   bit flipped and, separately, a fuzzer-chosen cut;
//! * a file forged from fuzzer-chosen block contents with *valid* checksums (and
//!   honest or arbitrary counts), so record parsing is reached behind the CRCs.
//!
//! Checks: no panic, and memory bounded by what arrives (a block's buffer grows with its
//! bytes, not with its claimed length); `verify` and `Reader` agree (the same damage, or
//! the same records); whatever verifies, re-encoded block by block, is byte for byte
//! the input (the encoding is canonical, so nothing unchecked can hide in it); encoded
//! records decode to exactly themselves; an empty key is refused by the encoder; any
//! single flipped bit is refused, and the records handed out before the refusal are a
//! prefix of those written; any cut is refused as a truncation at the cut; a byte after
//! the trailer is refused; a forged file with valid checksums and honest counts is
//! never refused for a checksum, a truncation or trailing bytes.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use kvs_snapshot::{
    BLOCK_TARGET_BYTES, BlockBuf, Damage, DamageKind, EncodeError, Encoder, Header, Reader, Record,
    TRAILER_LEN, verify,
};
use libfuzzer_sys::fuzz_target;

type Owned = (Vec<u8>, Vec<u8>, u64, Option<u64>);

#[derive(Debug)]
enum Input<'a> {
    Bytes(&'a [u8]),
    Records {
        records: Vec<(&'a [u8], &'a [u8], u64, Option<u64>)>,
        /// Seal every this many records; 0: only at `BLOCK_TARGET_BYTES`.
        per_block: u8,
        point: u64,
        taken_at_ms: u64,
        /// The bit to flip, modulo the file's bits.
        flip: u32,
        /// Where to cut, modulo the file's length.
        cut: u32,
    },
    Forged {
        keys: Option<u64>,
        blocks: Vec<(u32, &'a [u8])>,
        trailer: Option<(u64, u64)>,
    },
}

impl<'a> Arbitrary<'a> for Input<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.arbitrary::<u8>()? % 3 {
            0 => Input::Bytes(u.bytes(u.len())?),
            1 => Input::Records {
                records: u.arbitrary()?,
                per_block: u.arbitrary()?,
                point: u.arbitrary()?,
                taken_at_ms: u.arbitrary()?,
                flip: u.arbitrary()?,
                cut: u.arbitrary()?,
            },
            _ => Input::Forged {
                keys: u.arbitrary()?,
                blocks: u.arbitrary()?,
                trailer: u.arbitrary()?,
            },
        })
    }
}

fn own(r: &Record<'_>) -> Owned {
    (r.key.to_vec(), r.value.to_vec(), r.revision, r.deadline)
}

/// Everything `Reader` hands out before it stops: the records, and the damage if any.
fn read(file: &[u8]) -> (Vec<Owned>, Option<Damage>) {
    let mut out = Vec::new();
    let mut reader = match Reader::new(file) {
        Ok((reader, _)) => reader,
        Err(damage) => return (out, Some(damage)),
    };
    loop {
        match reader.next_block() {
            Ok(Some(block)) => {
                assert!(block.count() >= 1 && block.len_bytes() >= 1);
                assert_eq!(block.records().len(), block.count() as usize);
                out.extend(block.records().map(|r| own(&r)));
            }
            Ok(None) => {
                assert!(reader.next_block().unwrap().is_none());
                return (out, None);
            }
            Err(damage) => {
                assert_eq!(reader.next_block().unwrap_err(), damage);
                return (out, Some(damage));
            }
        }
    }
}

/// The snapshot encoded again from what `Reader` hands out, block for block.
fn reencode(file: &[u8]) -> Vec<u8> {
    let (mut reader, header) = Reader::new(file).unwrap();
    let (mut encoder, mut out) = Encoder::new(&header);
    let mut buf = BlockBuf::new();
    while let Some(block) = reader.next_block().unwrap() {
        for record in block.records() {
            Encoder::encode_record(&mut buf, &record).unwrap();
        }
        encoder.seal(&mut buf, &mut out);
    }
    encoder.finish(&mut out).unwrap();
    out
}

/// The checks any bytes get; the damage, if they are refused.
fn check_bytes(file: &[u8]) -> Option<Damage> {
    let verified = verify(file);
    let (records, damage) = read(file);
    match verified {
        Ok(summary) => {
            assert_eq!(damage, None);
            assert_eq!(summary.keys, records.len() as u64);
            assert_eq!(summary.keys, summary.header.keys);
            assert_eq!(summary.bytes, file.len() as u64);
            assert_eq!(
                summary.with_deadline,
                records.iter().filter(|r| r.3.is_some()).count() as u64
            );
            assert_eq!(reencode(file), file, "a verified snapshot is canonical");
            None
        }
        Err(d) => {
            assert_eq!(damage.as_ref(), Some(&d));
            assert!(d.offset <= file.len() as u64);
            assert!(!d.to_string().is_empty());
            Some(d)
        }
    }
}

fn records_case(
    records: &[(&[u8], &[u8], u64, Option<u64>)],
    per_block: u8,
    point: u64,
    taken_at_ms: u64,
    flip: u32,
    cut: u32,
) {
    let written: Vec<Record<'_>> = records
        .iter()
        .filter(|r| !r.0.is_empty())
        .map(|&(key, value, revision, deadline)| Record {
            key,
            value,
            revision,
            deadline,
        })
        .collect();
    let header = Header {
        point,
        taken_at_ms,
        keys: written.len() as u64,
    };
    let (mut encoder, mut file) = Encoder::new(&header);
    let mut block = BlockBuf::new();
    for r in records {
        let record = Record {
            key: r.0,
            value: r.1,
            revision: r.2,
            deadline: r.3,
        };
        match Encoder::encode_record(&mut block, &record) {
            Ok(()) => {}
            Err(EncodeError::EmptyKey) if r.0.is_empty() => continue,
            Err(e) => panic!("{e}"),
        }
        if (per_block != 0 && block.count() >= u32::from(per_block))
            || block.len_bytes() >= BLOCK_TARGET_BYTES
        {
            encoder.seal(&mut block, &mut file);
        }
    }
    encoder.seal(&mut block, &mut file);
    let blocks = encoder.blocks_written();
    encoder.finish(&mut file).unwrap();

    let (back, damage) = read(&file);
    assert_eq!(damage, None);
    assert_eq!(back, written.iter().map(own).collect::<Vec<_>>());
    let summary = verify(&file[..]).unwrap();
    assert_eq!((summary.header, summary.blocks), (header, blocks));
    assert_eq!(reencode(&file), file);

    let mut flipped = file.clone();
    let bit = flip as usize % (file.len() * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    let damage = check_bytes(&flipped).expect("a flipped bit is refused");
    let (yielded, _) = read(&flipped);
    assert!(
        back.starts_with(&yielded),
        "only records as written are handed out ({damage})"
    );

    let cut = cut as usize % file.len();
    let damage = check_bytes(&file[..cut]).expect("a cut file is refused");
    assert!(damage.is_truncation(), "cut at {cut}: {damage}");
    assert_eq!(damage.offset, cut as u64);

    file.push(0);
    let damage = check_bytes(&file).expect("a byte after the trailer is refused");
    assert_eq!(damage.kind, DamageKind::TrailingBytes);
}

fn forged_case(keys: Option<u64>, blocks: &[(u32, &[u8])], trailer: Option<(u64, u64)>) {
    let counted: u64 = blocks.iter().map(|b| u64::from(b.0)).sum();
    let honest = keys.is_none() && trailer.is_none();
    let (_, header) = Encoder::new(&Header {
        point: 1,
        taken_at_ms: 2,
        keys: keys.unwrap_or(counted),
    });
    let mut file = header;
    for &(count, records) in blocks {
        let start = file.len();
        file.extend_from_slice(&(records.len() as u32).to_le_bytes());
        file.extend_from_slice(&count.to_le_bytes());
        file.extend_from_slice(records);
        let crc = crc32c(&file[start..]);
        file.extend_from_slice(&crc.to_le_bytes());
    }
    let (t_blocks, t_keys) = trailer.unwrap_or((blocks.len() as u64, counted));
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&t_blocks.to_le_bytes());
    file.extend_from_slice(&t_keys.to_le_bytes());
    let crc = crc32c(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(b"KVSEND\0\0");
    debug_assert!(file.len() >= TRAILER_LEN);

    if let Some(damage) = check_bytes(&file) {
        // An empty block's zero length reads as the trailer's marker: that one can
        // look like anything.
        if honest && blocks.iter().all(|b| !b.1.is_empty()) {
            assert!(
                !matches!(
                    damage.kind,
                    DamageKind::ChecksumMismatch { .. }
                        | DamageKind::Truncated { .. }
                        | DamageKind::TrailingBytes
                        | DamageKind::TrailerBlocks { .. }
                        | DamageKind::TrailerKeys { .. }
                        | DamageKind::HeaderKeys { .. }
                ),
                "{damage}"
            );
        }
    }
}

/// CRC-32C, bit by bit: the format's checksum computed independently of the crate.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fuzz_target!(|input: Input<'_>| {
    match input {
        Input::Bytes(bytes) => {
            check_bytes(bytes);
        }
        Input::Records {
            records,
            per_block,
            point,
            taken_at_ms,
            flip,
            cut,
        } => records_case(&records, per_block, point, taken_at_ms, flip, cut),
        Input::Forged {
            keys,
            blocks,
            trailer,
        } => forged_case(keys, &blocks, trailer),
    }
});
