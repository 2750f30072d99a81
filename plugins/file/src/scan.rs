//! Replay: reading the log from the start, in chunks, with torn-tail recovery,
//! corruption detection and (on request) repair.

use super::*;

/// Events handed to the host per `replay` chunk, and bytes buffered per chunk.
const REPLAY_CHUNK_EVENTS: usize = 4096;
const REPLAY_CHUNK_BYTES: usize = 8 << 20;

impl FileLogger {
    /// Reads every record from the start, handing events to `sink` in chunks; truncates a
    /// torn tail; refuses (or, with `repair`, truncates at) corruption.
    pub(crate) fn scan(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let path = self.config.path.clone();
        let file_len = self
            .file
            .metadata()
            .map_err(|e| io_err(&path, "cannot stat", e))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, &*self.file);
        reader
            .seek(SeekFrom::Start(HEADER_LEN))
            .map_err(|e| io_err(&path, "cannot read", e))?;
        let mut offset = HEADER_LEN;
        let mut records: u64 = 0;
        let mut last_sequence: Option<u64> = None;
        let mut arena: Vec<u8> = Vec::with_capacity(REPLAY_CHUNK_BYTES);
        let mut bodies: Vec<(usize, usize)> = Vec::with_capacity(REPLAY_CHUNK_EVENTS);
        let mut flush = |arena: &mut Vec<u8>,
                         bodies: &mut Vec<(usize, usize)>|
         -> Result<(), PluginError> {
            // Bodies were verified when read; decoding again only borrows. One Vec per
            // chunk, not per record.
            let chunk: Vec<Event<'_>> = bodies
                .iter()
                .map(|&(start, len)| format::decode(&arena[start..start + len]).expect("verified"))
                .collect();
            let result = sink(&chunk);
            drop(chunk);
            arena.clear();
            bodies.clear();
            result
        };
        // Zeros after the last record are space written ahead by `append`: the end.
        let mut zero_tail = false;
        let problem: Option<(u64, String, bool)> = loop {
            if offset == file_len {
                break None;
            }
            let remaining = file_len - offset;
            if remaining < RECORD_HEADER_LEN as u64 {
                if rest_is_zero(&mut reader).map_err(|e| io_err(&path, "cannot read", e))? {
                    zero_tail = true;
                    break None;
                }
                break Some((offset, "incomplete record header".into(), true));
            }
            let mut h = [0u8; RECORD_HEADER_LEN];
            reader
                .read_exact(&mut h)
                .map_err(|e| io_err(&path, "cannot read", e))?;
            let (len, body_crc) = match format::parse_header(&h) {
                RecordHeader::Valid { len, body_crc } => (len, body_crc),
                RecordHeader::Damaged => {
                    let torn =
                        rest_is_zero(&mut reader).map_err(|e| io_err(&path, "cannot read", e))?;
                    if torn && h.iter().all(|&b| b == 0) {
                        zero_tail = true;
                        break None;
                    }
                    break Some((offset, "damaged record length".into(), torn));
                }
            };
            if len as u64 > remaining - RECORD_HEADER_LEN as u64 {
                break Some((offset, "record cut short".into(), true));
            }
            let start = arena.len();
            arena.resize(start + len, 0);
            reader
                .read_exact(&mut arena[start..])
                .map_err(|e| io_err(&path, "cannot read", e))?;
            let body = &arena[start..];
            if crc32c::crc32c(body) != body_crc {
                arena.truncate(start);
                // The last record written, if only zeros (or nothing) follow it.
                let torn =
                    rest_is_zero(&mut reader).map_err(|e| io_err(&path, "cannot read", e))?;
                break Some((offset, "checksum mismatch".into(), torn));
            }
            let sequence = match format::decode(body) {
                Ok(e) => e.sequence,
                Err(why) => {
                    arena.truncate(start);
                    break Some((offset, why, false));
                }
            };
            if last_sequence.is_some_and(|last| sequence <= last) {
                arena.truncate(start);
                break Some((
                    offset,
                    format!(
                        "sequence {sequence} does not follow {}",
                        last_sequence.unwrap()
                    ),
                    false,
                ));
            }
            last_sequence = Some(sequence);
            bodies.push((start, len));
            records += 1;
            offset += (RECORD_HEADER_LEN + len) as u64;
            if bodies.len() >= REPLAY_CHUNK_EVENTS || arena.len() >= REPLAY_CHUNK_BYTES {
                flush(&mut arena, &mut bodies)?;
            }
        };
        if !bodies.is_empty() {
            flush(&mut arena, &mut bodies)?;
        }
        drop(reader);
        if let Some((bad_at, why, torn)) = problem {
            let dropped = file_len - bad_at;
            if torn {
                warn(&format!(
                    "{}: torn record at the end (offset {bad_at}, {why}): truncated {dropped} \
                     byte(s) of a write that was never acknowledged; {records} record(s) kept",
                    path.display()
                ));
            } else if self.config.repair {
                let lost = count_records(&self.file, bad_at, file_len);
                warn(&format!(
                    "{}: repair: corrupt record at offset {bad_at} ({why}); truncated there, \
                     dropping {lost} record(s) ({dropped} bytes): the bad one and everything \
                     after it; {records} record(s) kept",
                    path.display()
                ));
            } else {
                return Err(PluginError::internal(format!(
                    "{}: corrupt record at byte offset {bad_at} ({why}), {dropped} bytes before \
                     the end; {records} record(s) before it are intact. Refusing to start; the \
                     file was not changed. Back it up, then restart with `repair = true` in \
                     [plugins.file] (or `kvs --repair-log`) to drop the bad record and \
                     everything after it",
                    path.display()
                )));
            }
            crate::io::set_len(&self.file, bad_at)
                .and_then(|()| crate::io::sync_all(&self.file))
                .map_err(|e| io_err(&path, "cannot truncate", e))?;
        }
        // On a problem the loop stopped with `offset` at the bad record, now the end.
        self.len = offset;
        self.allocated = if zero_tail { file_len } else { offset };
        self.compacted_len = offset;
        self.scanned = true;
        Ok(())
    }
}

/// How many records lie in `[from, end)`, counting by their length headers: the bad
/// record counts as one, and a damaged header ends the count (so it is a lower bound).
pub(crate) fn count_records(file: &File, from: u64, end: u64) -> u64 {
    let mut offset = from;
    let mut count = 0;
    while offset < end {
        count += 1;
        let mut h = [0u8; RECORD_HEADER_LEN];
        if end - offset < RECORD_HEADER_LEN as u64 || file.read_exact_at(&mut h, offset).is_err() {
            break;
        }
        match format::parse_header(&h) {
            RecordHeader::Valid { len, .. } => offset += (RECORD_HEADER_LEN + len) as u64,
            RecordHeader::Damaged => break,
        }
    }
    count
}

fn rest_is_zero(reader: &mut impl Read) -> std::io::Result<bool> {
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
