use std::io::{self, Read};

use crate::*;

/// Owned records, to build snapshots from and compare against.
type Owned = (Vec<u8>, Vec<u8>, u64, Option<u64>);

fn borrow(owned: &[Owned]) -> Vec<Record<'_>> {
    owned
        .iter()
        .map(|(key, value, revision, deadline)| Record {
            key,
            value,
            revision: *revision,
            deadline: *deadline,
        })
        .collect()
}

fn own(r: &Record<'_>) -> Owned {
    (r.key.to_vec(), r.value.to_vec(), r.revision, r.deadline)
}

/// Every record of a snapshot, through `Reader`.
fn read_all(file: &[u8]) -> Result<(Header, Vec<Owned>), Damage> {
    let (mut reader, header) = Reader::new(file)?;
    let mut out = Vec::new();
    while let Some(block) = reader.next_block()? {
        assert_eq!(block.records().len(), block.count() as usize);
        out.extend(block.records().map(|r| own(&r)));
    }
    assert_eq!(reader.offset(), file.len() as u64);
    Ok((header, out))
}

/// `n` records: binary keys, some empty values, every third with a deadline.
fn sample(n: usize, value_len: usize) -> Vec<Owned> {
    (0..n)
        .map(|i| {
            let mut key = vec![0u8, 0xff, b'k'];
            key.extend_from_slice(&(i as u64).to_le_bytes());
            let value = if i % 5 == 0 {
                Vec::new()
            } else {
                vec![(i % 251) as u8; value_len]
            };
            let deadline = (i % 3 == 0).then_some(1_700_000_000_000 + i as u64);
            (key, value, i as u64 * 7 + 1, deadline)
        })
        .collect()
}

/// A snapshot of `records`, sealing a block every `per_block` records.
fn small_blocks(point: u64, records: &[Owned], per_block: usize) -> Vec<u8> {
    let header = Header {
        point,
        taken_at_ms: 1_700_000_000_000,
        keys: records.len() as u64,
    };
    let (mut encoder, mut out) = Encoder::new(&header);
    let mut block = BlockBuf::new();
    for record in borrow(records) {
        Encoder::encode_record(&mut block, &record).unwrap();
        if block.count() as usize >= per_block {
            encoder.seal(&mut block, &mut out);
        }
    }
    encoder.seal(&mut block, &mut out);
    encoder.finish(&mut out).unwrap();
    out
}

/// Bytes of raw parts with valid checksums, to build files an encoder would not.
struct Forge(Vec<u8>);

impl Forge {
    fn header(version: u16, flags: u16, reserved: u32, keys: u64) -> Forge {
        let mut b = Header {
            point: 9,
            taken_at_ms: 10,
            keys,
        }
        .encode();
        b[8..10].copy_from_slice(&version.to_le_bytes());
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        b[12..16].copy_from_slice(&reserved.to_le_bytes());
        let crc = crc32c::crc32c(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        Forge(b.to_vec())
    }

    fn block(mut self, count: u32, records: &[u8]) -> Forge {
        let start = self.0.len();
        self.0
            .extend_from_slice(&(records.len() as u32).to_le_bytes());
        self.0.extend_from_slice(&count.to_le_bytes());
        self.0.extend_from_slice(records);
        let crc = crc32c::crc32c(&self.0[start..]);
        self.0.extend_from_slice(&crc.to_le_bytes());
        self
    }

    fn trailer(mut self, blocks: u64, keys: u64) -> Vec<u8> {
        self.0.extend_from_slice(&0u32.to_le_bytes());
        self.0.extend_from_slice(&blocks.to_le_bytes());
        self.0.extend_from_slice(&keys.to_le_bytes());
        let crc = crc32c::crc32c(&self.0);
        self.0.extend_from_slice(&crc.to_le_bytes());
        self.0.extend_from_slice(&END_MAGIC);
        self.0
    }
}

/// One record's bytes, as a block holds them.
fn record_bytes(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut block = BlockBuf::new();
    let record = Record {
        key,
        value,
        revision: 1,
        deadline: None,
    };
    Encoder::encode_record(&mut block, &record).unwrap();
    block.bytes.clone()
}

fn kind(file: &[u8]) -> DamageKind {
    verify(file).unwrap_err().kind
}

#[test]
fn round_trip_no_keys() {
    let file = encode(5, 6, &[]).unwrap();
    assert_eq!(file.len(), HEADER_LEN + TRAILER_LEN);
    let (header, records) = read_all(&file).unwrap();
    assert_eq!(
        header,
        Header {
            point: 5,
            taken_at_ms: 6,
            keys: 0
        }
    );
    assert!(records.is_empty());
    let summary = verify(&file[..]).unwrap();
    assert_eq!((summary.blocks, summary.keys, summary.bytes), (0, 0, 76));
}

#[test]
fn round_trip_one_key() {
    for deadline in [None, Some(0), Some(u64::MAX)] {
        let records = vec![(b"key".to_vec(), b"value".to_vec(), u64::MAX, deadline)];
        let file = encode(u64::MAX, u64::MAX, &borrow(&records)).unwrap();
        let (header, back) = read_all(&file).unwrap();
        assert_eq!(back, records);
        assert_eq!((header.point, header.keys), (u64::MAX, 1));
        let summary = verify(&file[..]).unwrap();
        assert_eq!(summary.blocks, 1);
        assert_eq!(summary.with_deadline, u64::from(deadline.is_some()));
        assert_eq!((summary.key_bytes, summary.value_bytes), (3, 5));
    }
}

#[test]
fn round_trip_many_keys_over_several_blocks() {
    let records = sample(5000, 100);
    let file = encode(77, 88, &borrow(&records)).unwrap();
    let (header, back) = read_all(&file).unwrap();
    assert_eq!(back, records);
    assert_eq!(header.keys, 5000);

    let summary = verify(&file[..]).unwrap();
    assert!(summary.blocks >= 5, "{summary:?}");
    assert_eq!(summary.keys, 5000);
    assert_eq!(summary.bytes, file.len() as u64);
    assert_eq!(
        summary.with_deadline,
        records.iter().filter(|r| r.3.is_some()).count() as u64
    );

    // Blocks are sealed at the target: none much bigger.
    let (mut reader, _) = Reader::new(&file[..]).unwrap();
    let mut numbers = Vec::new();
    while let Some(block) = reader.next_block().unwrap() {
        assert!(block.len_bytes() < BLOCK_TARGET_BYTES + 200);
        numbers.push(block.number());
    }
    assert_eq!(numbers, (1..=summary.blocks).collect::<Vec<_>>());
}

#[test]
fn round_trip_binary_keys_and_empty_values() {
    let mut records: Vec<Owned> = (0..=255u8)
        .map(|b| (vec![b], Vec::new(), u64::from(b), None))
        .collect();
    records.push((
        (0..=255u8).collect(),
        (0..=255u8).rev().collect(),
        0,
        Some(1),
    ));
    let file = small_blocks(1, &records, 7);
    assert_eq!(read_all(&file).unwrap().1, records);
}

#[test]
fn a_reader_that_returns_a_byte_at_a_time_and_is_interrupted_reads_the_same() {
    struct Trickle<'a>(&'a [u8], bool);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let records = sample(300, 10);
    let file = small_blocks(3, &records, 40);
    assert_eq!(
        verify(Trickle(&file, false)).unwrap(),
        verify(&file[..]).unwrap()
    );
    // Cut short, a trickle still says where.
    let cut = file.len() - 100;
    assert_eq!(
        verify(Trickle(&file[..cut], false)).unwrap_err(),
        verify(&file[..cut]).unwrap_err()
    );
}

#[test]
fn test_vector() {
    let record = Record {
        key: b"k",
        value: b"v",
        revision: 3,
        deadline: None,
    };
    let file = encode(7, 1_700_000_000_000, &[record]).unwrap();
    let hex: Vec<String> = file.iter().map(|b| format!("{b:02x}")).collect();
    // The bytes in the crate documentation's test vector.
    let expected = "\
        4b 56 53 53 4e 41 50 00 01 00 00 00 00 00 00 00 \
        07 00 00 00 00 00 00 00 00 68 e5 cf 8b 01 00 00 \
        01 00 00 00 00 00 00 00 2c 3a 8e 6b \
        13 00 00 00 01 00 00 00 \
        00 03 00 00 00 00 00 00 00 01 00 00 00 01 00 00 00 6b 76 \
        99 f5 0b cb \
        00 00 00 00 01 00 00 00 00 00 00 00 01 00 00 00 \
        00 00 00 00 18 32 39 b0 4b 56 53 45 4e 44 00 00";
    assert_eq!(hex.join(" "), expected);
    assert_eq!(file.len(), 107);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

/// A snapshot of about 300 bytes: three blocks, deadlines and not, an empty value.
fn small_file() -> (Vec<u8>, Vec<Owned>) {
    let records: Vec<Owned> = vec![
        (b"a".to_vec(), b"one".to_vec(), 1, None),
        (b"bb".to_vec(), Vec::new(), 2, Some(1_700_000_000_123)),
        (vec![0, 1, 2], b"three".to_vec(), 3, None),
        (b"dddd".to_vec(), b"4".to_vec(), 4, Some(5)),
        (b"e".to_vec(), b"fifth value".to_vec(), 5, None),
        (
            b"the sixth key".to_vec(),
            b"and a value of some length".to_vec(),
            6,
            Some(6),
        ),
    ];
    let file = small_blocks(42, &records, 2);
    (file, records)
}

#[test]
fn every_single_bit_flip_is_refused() {
    let (file, records) = small_file();
    assert!((250..=400).contains(&file.len()), "{}", file.len());
    assert_eq!(verify(&file[..]).unwrap().blocks, 3);
    for byte in 0..file.len() {
        for bit in 0..8 {
            let mut bad = file.clone();
            bad[byte] ^= 1 << bit;
            let damage = verify(&bad[..]).expect_err(&format!("flip of byte {byte} bit {bit}"));
            // Nothing damaged is ever handed out: what the reader yields before it
            // refuses is a prefix of what was written.
            let mut yielded = Vec::new();
            if let Ok((mut reader, _)) = Reader::new(&bad[..]) {
                while let Ok(Some(block)) = reader.next_block() {
                    yielded.extend(block.records().map(|r| own(&r)));
                }
            }
            assert!(
                records.starts_with(&yielded),
                "flip of byte {byte} bit {bit} ({damage}) yielded {yielded:?}"
            );
        }
    }
}

#[test]
fn every_truncation_is_refused_as_a_truncation() {
    let (file, _) = small_file();
    for cut in 0..file.len() {
        let damage = verify(&file[..cut]).unwrap_err();
        assert!(damage.is_truncation(), "cut at {cut}: {damage}");
        assert_eq!(damage.offset, cut as u64, "cut at {cut}: {damage}");
        assert!(damage.to_string().contains("truncated"), "{damage}");
    }
    assert_eq!(
        verify(&[][..]).unwrap_err().to_string(),
        "byte 0: truncated: the file is empty"
    );
}

#[test]
fn truncation_messages_say_where() {
    let (file, _) = small_file();
    let inside_header = verify(&file[..20]).unwrap_err().to_string();
    assert!(
        inside_header.starts_with("byte 20: truncated inside the header (24 more bytes expected)"),
        "{inside_header}"
    );
    let no_block = verify(&file[..HEADER_LEN]).unwrap_err().to_string();
    assert!(
        no_block.contains("right after the header, with no block or trailer"),
        "{no_block}"
    );
    // Where the trailer should start, after the three blocks.
    let end = file.len() - TRAILER_LEN;
    let no_trailer = verify(&file[..end]).unwrap_err().to_string();
    assert!(
        no_trailer.starts_with(&format!(
            "byte {end}: truncated after block 3, with no trailer"
        )),
        "{no_trailer}"
    );
    let in_block = verify(&file[..HEADER_LEN + 10]).unwrap_err();
    assert_eq!(in_block.block, Some(1));
    assert!(
        in_block.to_string().starts_with(&format!(
            "byte {} (block 1): truncated inside the block",
            HEADER_LEN + 10
        )),
        "{in_block}"
    );
    let in_trailer = verify(&file[..file.len() - 1]).unwrap_err().to_string();
    assert!(
        in_trailer.contains("truncated inside the trailer (1 more bytes expected)"),
        "{in_trailer}"
    );
}

#[test]
fn bytes_after_the_trailer_are_refused() {
    let (file, _) = small_file();
    for tail in [&[0u8][..], b"x", &file[..]] {
        let mut bad = file.clone();
        bad.extend_from_slice(tail);
        let damage = verify(&bad[..]).unwrap_err();
        assert_eq!(damage.kind, DamageKind::TrailingBytes);
        assert_eq!(damage.offset, file.len() as u64);
        assert!(damage.to_string().contains("bytes after the trailer"));
    }
}

#[test]
fn not_a_snapshot() {
    for bytes in [
        &b"hello"[..],
        b"KVSSNAQ\0",
        &[0u8; 100][..],
        b"{\"keys\": []}",
    ] {
        assert_eq!(kind(bytes), DamageKind::NotASnapshot, "{bytes:?}");
    }
    // A prefix of the magic is a truncated snapshot, not something else.
    assert!(verify(&b"KVS"[..]).unwrap_err().is_truncation());
    let msg = verify(&b"PK\x03\x04 a zip"[..]).unwrap_err().to_string();
    assert_eq!(msg, "byte 0: not a kvs snapshot (no KVSSNAP magic)");
}

#[test]
fn unknown_version_flags_and_reserved_are_refused() {
    let newer = Forge::header(2, 0, 0, 0).trailer(0, 0);
    let damage = verify(&newer[..]).unwrap_err();
    assert_eq!(damage.kind, DamageKind::UnsupportedVersion { found: 2 });
    assert_eq!(
        damage.to_string(),
        "byte 8: snapshot version 2 is newer than this kvs reads (1): restore it with a newer kvs"
    );
    let zero = Forge::header(0, 0, 0, 0).trailer(0, 0);
    assert_eq!(kind(&zero), DamageKind::UnsupportedVersion { found: 0 });
    // A newer header may be longer: a version 2 is named as such whatever follows.
    let mut longer = Forge::header(2, 0, 0, 0).0;
    longer.extend_from_slice(&[0xAB; 100]);
    assert_eq!(kind(&longer), DamageKind::UnsupportedVersion { found: 2 });

    let flags = Forge::header(1, 0x0004, 0, 0).trailer(0, 0);
    let damage = verify(&flags[..]).unwrap_err();
    assert_eq!(damage.kind, DamageKind::UnknownFlags { flags: 4 });
    assert_eq!(damage.offset, 10);
    let reserved = Forge::header(1, 0, 1, 0).trailer(0, 0);
    assert_eq!(kind(&reserved), DamageKind::ReservedNotZero { value: 1 });

    // The forge itself makes valid files.
    assert!(verify(&Forge::header(1, 0, 0, 0).trailer(0, 0)[..]).is_ok());
}

#[test]
fn key_count_mismatches_are_refused() {
    let rec = record_bytes(b"k", b"v");
    // The header says 2, the file and its trailer 1.
    let file = Forge::header(1, 0, 0, 2).block(1, &rec).trailer(1, 1);
    let damage = verify(&file[..]).unwrap_err();
    assert_eq!(
        damage.kind,
        DamageKind::HeaderKeys {
            header: 2,
            trailer: 1
        }
    );
    assert!(
        damage
            .to_string()
            .contains("the trailer says 1 keys but the header 2")
    );
    // The trailer says 2, the file holds 1.
    let file = Forge::header(1, 0, 0, 1).block(1, &rec).trailer(1, 2);
    assert_eq!(
        kind(&file),
        DamageKind::TrailerKeys {
            trailer: 2,
            counted: 1
        }
    );
    // The trailer's block count is wrong.
    let file = Forge::header(1, 0, 0, 1).block(1, &rec).trailer(2, 1);
    assert_eq!(
        kind(&file),
        DamageKind::TrailerBlocks {
            trailer: 2,
            counted: 1
        }
    );
    // More records than the header says: refused at the block, before the trailer.
    let file = Forge::header(1, 0, 0, 1)
        .block(1, &rec)
        .block(1, &rec)
        .trailer(2, 2);
    let damage = verify(&file[..]).unwrap_err();
    assert_eq!(
        damage.kind,
        DamageKind::TooManyKeys {
            header: 1,
            at_least: 2
        }
    );
    assert_eq!(damage.block, Some(2));

    // The encoder will not finish a snapshot whose count is off.
    let header = Header {
        point: 0,
        taken_at_ms: 0,
        keys: 2,
    };
    let (mut encoder, mut out) = Encoder::new(&header);
    let mut block = BlockBuf::new();
    let r = Record {
        key: b"k",
        value: b"",
        revision: 0,
        deadline: None,
    };
    Encoder::encode_record(&mut block, &r).unwrap();
    encoder.seal(&mut block, &mut out);
    let len = out.len();
    assert_eq!(
        encoder.clone().finish(&mut out),
        Err(EncodeError::KeysMismatch {
            header: 2,
            written: 1
        })
    );
    assert_eq!(out.len(), len, "no trailer after a mismatch");
    // Forgetting to seal the last block is the same mistake.
    Encoder::encode_record(&mut block, &r).unwrap();
    assert!(encoder.clone().finish(&mut out).is_err());
    encoder.seal(&mut block, &mut out);
    encoder.finish(&mut out).unwrap();
    assert_eq!(verify(&out[..]).unwrap().keys, 2);
}

#[test]
fn malformed_records_are_refused_even_with_a_valid_checksum() {
    let rec = record_bytes(b"key", b"value");
    let records_at = (HEADER_LEN + 8) as u64;

    // key_len past the end of the block.
    let mut long_key = rec.clone();
    long_key[9..13].copy_from_slice(&1000u32.to_le_bytes());
    let file = Forge::header(1, 0, 0, 1).block(1, &long_key).trailer(1, 1);
    let damage = verify(&file[..]).unwrap_err();
    assert_eq!(
        damage.kind,
        DamageKind::RecordOverrun {
            record: 1,
            count: 1,
            needs: 17 + 1000 + 5,
            left: rec.len() as u64
        }
    );
    assert_eq!((damage.offset, damage.block), (records_at, Some(1)));
    // value_len past the end, as the second record.
    let mut long_value = rec.clone();
    long_value[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    let both = [rec.clone(), long_value].concat();
    let damage = verify(&Forge::header(1, 0, 0, 2).block(2, &both).trailer(1, 2)[..]).unwrap_err();
    assert!(
        matches!(
            damage.kind,
            DamageKind::RecordOverrun {
                record: 2,
                count: 2,
                ..
            }
        ),
        "{damage}"
    );
    assert_eq!(damage.offset, records_at + rec.len() as u64);
    // A count of more records than the bytes hold.
    let damage = verify(&Forge::header(1, 0, 0, 2).block(2, &rec).trailer(1, 2)[..]).unwrap_err();
    assert_eq!(
        damage.kind,
        DamageKind::RecordOverrun {
            record: 2,
            count: 2,
            needs: 17,
            left: 0
        }
    );
    // A deadline flag whose 8 bytes are not there.
    let mut flagged = rec.clone();
    flagged[0] = 1;
    assert!(matches!(
        kind(&Forge::header(1, 0, 0, 1).block(1, &flagged).trailer(1, 1)),
        DamageKind::RecordOverrun { .. }
    ));
    // Unknown record flags.
    let mut flags = rec.clone();
    flags[0] = 0x82;
    assert_eq!(
        kind(&Forge::header(1, 0, 0, 1).block(1, &flags).trailer(1, 1)),
        DamageKind::UnknownRecordFlags {
            record: 1,
            flags: 0x82
        }
    );
    // An empty key (the value's bytes then left over).
    let mut empty = rec.clone();
    empty[9..13].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        kind(&Forge::header(1, 0, 0, 1).block(1, &empty).trailer(1, 1)),
        DamageKind::EmptyKey { record: 1 }
    );
    // Bytes after the records the count covers.
    let slack = [rec.clone(), vec![0; 3]].concat();
    assert_eq!(
        kind(&Forge::header(1, 0, 0, 1).block(1, &slack).trailer(1, 1)),
        DamageKind::BlockSlack { count: 1, extra: 3 }
    );
    // A block of no records.
    let damage = verify(&Forge::header(1, 0, 0, 0).block(0, &rec).trailer(1, 0)[..]).unwrap_err();
    assert_eq!(damage.kind, DamageKind::EmptyBlock);
    assert!(damage.to_string().contains("0 records"), "{damage}");
}

#[test]
fn an_oversized_block_length_is_refused_before_reading_it() {
    let mut file = Forge::header(1, 0, 0, 1).0;
    file.extend_from_slice(&(MAX_BLOCK_BYTES as u32 + 1).to_le_bytes());
    // Nothing after the length: refused for the length, not as a truncation.
    let damage = verify(&file[..]).unwrap_err();
    assert_eq!(
        damage.kind,
        DamageKind::BlockTooLarge {
            len: MAX_BLOCK_BYTES as u32 + 1
        }
    );
    assert_eq!((damage.offset, damage.block), (HEADER_LEN as u64, Some(1)));
    file.truncate(HEADER_LEN);
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(kind(&file), DamageKind::BlockTooLarge { .. }));
}

#[test]
fn a_block_at_the_limit_reads() {
    // One record filling a block exactly to MAX_BLOCK_BYTES.
    let value = vec![7u8; MAX_BLOCK_BYTES - 17 - 1];
    let record = Record {
        key: b"k",
        value: &value,
        revision: 1,
        deadline: None,
    };
    assert_eq!(record.encoded_len(), MAX_BLOCK_BYTES);
    let file = encode(1, 2, &[record]).unwrap();
    let (mut reader, _) = Reader::new(&file[..]).unwrap();
    let block = reader.next_block().unwrap().unwrap();
    assert_eq!(block.len_bytes(), MAX_BLOCK_BYTES);
    assert_eq!(block.records().next(), Some(record));
    assert!(reader.next_block().unwrap().is_none());

    // One byte more is refused by the encoder.
    let bigger = vec![7u8; MAX_BLOCK_BYTES - 17];
    let mut block = BlockBuf::new();
    let too_big = Record {
        value: &bigger,
        ..record
    };
    assert_eq!(
        Encoder::encode_record(&mut block, &too_big),
        Err(EncodeError::RecordTooLarge {
            bytes: MAX_BLOCK_BYTES as u64 + 1
        })
    );
    // A record that fits alone but not in what the block holds: BlockFull, block
    // unchanged; sealed, it goes in.
    let small = Record {
        key: b"s",
        value: b"",
        revision: 0,
        deadline: None,
    };
    Encoder::encode_record(&mut block, &small).unwrap();
    assert_eq!(
        Encoder::encode_record(&mut block, &record),
        Err(EncodeError::BlockFull)
    );
    assert_eq!((block.count(), block.len_bytes()), (1, 18));
    let (mut encoder, mut out) = Encoder::new(&Header {
        point: 0,
        taken_at_ms: 0,
        keys: 2,
    });
    encoder.seal(&mut block, &mut out);
    assert!(block.is_empty());
    Encoder::encode_record(&mut block, &record).unwrap();
    encoder.seal(&mut block, &mut out);
    encoder.finish(&mut out).unwrap();
    assert_eq!(verify(&out[..]).unwrap().blocks, 2);
}

#[test]
fn an_empty_key_is_not_encoded() {
    let mut block = BlockBuf::new();
    let record = Record {
        key: b"",
        value: b"v",
        revision: 0,
        deadline: None,
    };
    assert_eq!(
        Encoder::encode_record(&mut block, &record),
        Err(EncodeError::EmptyKey)
    );
    assert!(block.is_empty());
    assert_eq!(block.len_bytes(), 0);
}

#[test]
fn checksum_mismatches_name_the_block_and_the_values() {
    let (file, _) = small_file();
    // The first record byte of block 2.
    let (mut reader, _) = Reader::new(&file[..]).unwrap();
    reader.next_block().unwrap();
    let second = reader.next_block().unwrap().unwrap().offset();
    let mut bad = file.clone();
    bad[second as usize + 8 + 1] ^= 0x10;
    let damage = verify(&bad[..]).unwrap_err();
    assert_eq!((damage.offset, damage.block), (second, Some(2)));
    assert!(matches!(
        damage.kind,
        DamageKind::ChecksumMismatch {
            which: Checksum::Block,
            ..
        }
    ));
    let msg = damage.to_string();
    assert!(
        msg.starts_with(&format!(
            "byte {second} (block 2): block checksum mismatch (stored 0x"
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("the file is damaged; take a new backup"),
        "{msg}"
    );

    let mut bad = file.clone();
    bad[20] ^= 1;
    assert!(matches!(
        kind(&bad),
        DamageKind::ChecksumMismatch {
            which: Checksum::Header,
            ..
        }
    ));
    // The trailer's counts are covered by the file checksum.
    let mut bad = file.clone();
    let n = bad.len();
    bad[n - TRAILER_LEN + 4] ^= 1;
    assert!(matches!(
        kind(&bad),
        DamageKind::ChecksumMismatch {
            which: Checksum::File,
            ..
        }
    ));
    let mut bad = file.clone();
    bad[n - 1] ^= 1;
    assert_eq!(kind(&bad), DamageKind::BadEndMagic);
}

#[test]
fn blocks_swapped_are_refused_by_the_file_checksum() {
    let records = sample(4, 3);
    let file = small_blocks(0, &records, 2);
    let (mut reader, _) = Reader::new(&file[..]).unwrap();
    let first = reader.next_block().unwrap().unwrap().offset() as usize;
    let second = reader.next_block().unwrap().unwrap().offset() as usize;
    let end = file.len() - TRAILER_LEN;
    let swapped = [
        &file[..first],
        &file[second..end],
        &file[first..second],
        &file[end..],
    ]
    .concat();
    assert_eq!(swapped.len(), file.len());
    assert!(matches!(
        kind(&swapped),
        DamageKind::ChecksumMismatch {
            which: Checksum::File,
            ..
        }
    ));
}

#[test]
fn after_an_error_the_reader_keeps_returning_it_and_after_the_end_none() {
    let (file, _) = small_file();
    let mut bad = file.clone();
    bad[HEADER_LEN + 9] ^= 1;
    let (mut reader, _) = Reader::new(&bad[..]).unwrap();
    let first = reader.next_block().unwrap_err();
    assert_eq!(reader.next_block().unwrap_err(), first);

    let (mut reader, header) = Reader::new(&file[..]).unwrap();
    assert_eq!(*reader.header(), header);
    while reader.next_block().unwrap().is_some() {}
    assert!(reader.next_block().unwrap().is_none());
    assert_eq!((reader.blocks(), reader.keys()), (3, 6));
}

#[test]
fn a_read_error_is_reported_as_such() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let (file, _) = small_file();
    let damage = verify(Failing(&file[..100])).unwrap_err();
    assert!(matches!(
        damage.kind,
        DamageKind::Io {
            kind: io::ErrorKind::Other,
            ..
        }
    ));
    assert!(!damage.is_truncation());
    assert!(damage.to_string().contains("disk on fire"), "{damage}");
    // Even once the whole file was read, the check for bytes after it.
    assert!(matches!(
        kind_of(verify(Failing(&file))),
        DamageKind::Io { .. }
    ));
}

fn kind_of(r: Result<Summary, Damage>) -> DamageKind {
    r.unwrap_err().kind
}

#[test]
fn streaming_output_concatenated_is_the_file() {
    // What a producer streams chunk by chunk is the same as encoding at once.
    let records = sample(2000, 50);
    let header = Header {
        point: 3,
        taken_at_ms: 4,
        keys: 2000,
    };
    let (mut encoder, first) = Encoder::new(&header);
    let mut chunks = vec![first];
    let mut block = BlockBuf::new();
    for record in borrow(&records) {
        Encoder::encode_record(&mut block, &record).unwrap();
        if block.len_bytes() >= BLOCK_TARGET_BYTES {
            let mut chunk = Vec::new();
            encoder.seal(&mut block, &mut chunk);
            chunks.push(chunk);
        }
    }
    let mut last = Vec::new();
    encoder.seal(&mut block, &mut last);
    assert_eq!(encoder.keys_written(), 2000);
    let written = encoder.bytes_written();
    let blocks = encoder.blocks_written();
    encoder.finish(&mut last).unwrap();
    chunks.push(last);
    let file = chunks.concat();
    assert_eq!(file, encode(3, 4, &borrow(&records)).unwrap());
    assert_eq!(written as usize, file.len() - TRAILER_LEN);
    assert_eq!(verify(&file[..]).unwrap().blocks, blocks);
}
