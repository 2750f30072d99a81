//! The on-disk format: a file header, then length-prefixed, checksummed records.
//!
//! ```text
//! file    = header record*
//! header  = "KVSTXLOG" format_version:u32le api_major:u32le          (16 bytes)
//! record  = len:u32le len_crc:u32le body_crc:u32le body              (12 + len bytes)
//! body    = sequence:u64le kind:u8 key_len:u32le key value
//! ```
//!
//! Format 2 (kvs 1.6) adds batches: bit 7 of `kind` ([`GOES_ON`]) says more records of
//! the same `append` follow. A batch is the records up to and including one without
//! the bit; replay hands back whole batches only, so a crash never keeps part of one
//! (what `log:atomic_batch` promises). A format-1 log has no such bit (each record is a
//! batch); opening one upgrades its header to 2, after which an older logger refuses it
//! by its version instead of misreading the bit.
//!
//! `len_crc` (crc32c of the four `len` bytes) lets a reader trust `len` before reading
//! the body: a damaged length is reported as corruption instead of being mistaken for a
//! record cut short by a crash. `body_crc` is crc32c of the body. Keys and values are raw
//! bytes: any byte, any length up to the host's limits.

use kvs_plugin_api::{Event, EventKind};

/// First bytes of every log file.
pub const MAGIC: &[u8; 8] = b"KVSTXLOG";
/// Version of this format; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 2;
/// The format before batches; read, and upgraded on open.
pub const FORMAT_VERSION_1: u32 = 1;
/// Bit 7 of a record's `kind`: more records of its batch follow.
pub const GOES_ON: u8 = 0x80;
/// Size of the file header.
pub const HEADER_LEN: u64 = 16;
/// Size of a record's header (len, len_crc, body_crc).
pub const RECORD_HEADER_LEN: usize = 12;
/// Smallest valid body: sequence + kind + key_len.
pub const MIN_BODY_LEN: usize = 8 + 1 + 4;
/// Largest body accepted on read, as a sanity bound (the host's limits are far below).
pub const MAX_BODY_LEN: usize = 1 << 30;

/// The file header for a new log.
pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(kvs_plugin_api::API_MAJOR as u32).to_le_bytes());
    h
}

/// Checks a file header; the error says what is wrong.
pub fn check_header(h: &[u8]) -> Result<(), String> {
    if h.len() < HEADER_LEN as usize || &h[..8] != MAGIC {
        return Err("not a kvs log file (bad magic)".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
        return Err(format!(
            "log format version {version}, but this plug-in reads version {FORMAT_VERSION}"
        ));
    }
    // Events mean what the contract's major says they mean: a log written under another
    // major could hold kinds this plug-in would misread.
    let major = u32::from_le_bytes(h[12..16].try_into().unwrap());
    if major != u32::from(kvs_plugin_api::API_MAJOR) {
        return Err(format!(
            "written by a kvs of plugin-api {major}.x, but this plug-in speaks {}.x: open it \
             with a file logger of that major",
            kvs_plugin_api::API_MAJOR
        ));
    }
    Ok(())
}

/// The format version a header names (after [`check_header`] accepted it).
pub fn header_version(h: &[u8]) -> u32 {
    u32::from_le_bytes(h[8..12].try_into().unwrap())
}

/// Appends one encoded record to `out`, a batch of its own.
pub fn encode(event: &Event<'_>, out: &mut Vec<u8>) {
    encode_in_batch(event, false, out)
}

/// Appends one encoded record to `out`; `goes_on`: more records of its batch follow.
pub fn encode_in_batch(event: &Event<'_>, goes_on: bool, out: &mut Vec<u8>) {
    let key = event.key.as_slice();
    let value = event.value.as_slice();
    let body_len = MIN_BODY_LEN + key.len() + value.len();
    let len = (body_len as u32).to_le_bytes();
    out.reserve(RECORD_HEADER_LEN + body_len);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    out.extend_from_slice(&event.sequence.to_le_bytes());
    out.push(event.kind.0 | if goes_on { GOES_ON } else { 0 });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// What a record header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordHeader {
    /// A trustworthy length and the body's expected checksum.
    Valid {
        /// Body length.
        len: usize,
        /// Expected crc32c of the body.
        body_crc: u32,
    },
    /// The length field fails its own checksum or is out of range.
    Damaged,
}

/// Parses a record header.
pub fn parse_header(h: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
    let len_bytes: [u8; 4] = h[0..4].try_into().unwrap();
    let len_crc = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let len = u32::from_le_bytes(len_bytes) as usize;
    if crc32c::crc32c(&len_bytes) != len_crc || !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&len) {
        return RecordHeader::Damaged;
    }
    RecordHeader::Valid {
        len,
        body_crc: u32::from_le_bytes(h[8..12].try_into().unwrap()),
    }
}

/// The event kinds a record may hold: PUT, DELETE, and PUT_UNTIL (a put with its
/// deadline in front of the value, plugin-api 1.4; stored like a PUT).
pub const KINDS: [EventKind; 3] = [EventKind::PUT, EventKind::DELETE, EventKind::PUT_UNTIL];

/// Whether a checksum-verified body says more records of its batch follow.
pub fn goes_on(body: &[u8]) -> bool {
    body.get(8).is_some_and(|kind| kind & GOES_ON != 0)
}

/// Decodes a checksum-verified body into an event borrowing from it (the batch bit
/// left out: see [`goes_on`]).
pub fn decode(body: &[u8]) -> Result<Event<'_>, String> {
    if body.len() < MIN_BODY_LEN {
        return Err("record body too short".into());
    }
    let sequence = u64::from_le_bytes(body[0..8].try_into().unwrap());
    let kind = EventKind(body[8] & !GOES_ON);
    let key_len = u32::from_le_bytes(body[9..13].try_into().unwrap()) as usize;
    let rest = &body[13..];
    if key_len > rest.len() {
        return Err(format!(
            "record {sequence}: key length {key_len} exceeds the record"
        ));
    }
    let (key, value) = rest.split_at(key_len);
    if !KINDS.contains(&kind) {
        return Err(format!("record {sequence}: unknown event kind {}", kind.0));
    }
    Ok(Event {
        sequence,
        kind,
        key: key.into(),
        value: value.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_odd_bytes() {
        let big = vec![0xAB; 1 << 20];
        let cases: Vec<Event<'_>> = vec![
            Event::put(1, b"tab\tnew\nline nul\0/slash", b""),
            Event::put(2, "ключ🔑".as_bytes(), &big),
            Event::delete(3, b"k"),
        ];
        let mut buf = Vec::new();
        for e in &cases {
            encode(e, &mut buf);
        }
        let mut at = 0;
        for want in &cases {
            let h: [u8; RECORD_HEADER_LEN] = buf[at..at + RECORD_HEADER_LEN].try_into().unwrap();
            let RecordHeader::Valid { len, body_crc } = parse_header(&h) else {
                panic!("damaged header")
            };
            let body = &buf[at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + len];
            assert_eq!(crc32c::crc32c(body), body_crc);
            assert_eq!(&decode(body).unwrap(), want);
            at += RECORD_HEADER_LEN + len;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn a_header_of_another_format_or_major_is_refused_saying_which() {
        assert_eq!(check_header(&header()), Ok(()));
        let mut other_major = header();
        other_major[12..16].copy_from_slice(&2u32.to_le_bytes());
        let why = check_header(&other_major).unwrap_err();
        assert!(why.contains("plugin-api 2.x"), "{why}");
        let mut other_format = header();
        other_format[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert!(
            check_header(&other_format)
                .unwrap_err()
                .contains("version 9")
        );
        assert!(check_header(b"KVSTXLO").is_err());
    }

    #[test]
    fn damaged_length_is_detected() {
        let mut buf = Vec::new();
        encode(&Event::put(1, b"k", b"v"), &mut buf);
        buf[1] ^= 0x40;
        let h: [u8; RECORD_HEADER_LEN] = buf[..RECORD_HEADER_LEN].try_into().unwrap();
        assert_eq!(parse_header(&h), RecordHeader::Damaged);
    }
}
