//! Replay: reading the log from the start, in chunks, with torn-tail recovery,
//! corruption detection and (on request) repair.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use kvs_plugin_api::{Event, PluginError};

use crate::format::{self, HEADER_LEN, RECORD_HEADER_LEN, RecordHeader};
use crate::{FileLogger, io_err, warn};

/// Events handed to the host per `replay` chunk, bytes buffered per chunk, and the
/// read buffer.
#[cfg(not(fuzzing))]
const REPLAY_CHUNK_EVENTS: usize = 4096;
#[cfg(not(fuzzing))]
const REPLAY_CHUNK_BYTES: usize = 8 << 20;
#[cfg(not(fuzzing))]
const READ_BUFFER_BYTES: usize = 1 << 20;
/// Tiny under `cargo fuzz` (`--cfg fuzzing`): the fuzzer's logs are a few hundred bytes,
/// so chunk boundaries are reached, and a sanitizer build does not map megabytes per
/// replay (that cost the `file_*` targets most of their speed).
#[cfg(fuzzing)]
const REPLAY_CHUNK_EVENTS: usize = 3;
#[cfg(fuzzing)]
const REPLAY_CHUNK_BYTES: usize = 64;
#[cfg(fuzzing)]
const READ_BUFFER_BYTES: usize = 64;

/// What reading the log found.
struct Scanned {
    /// Where the valid records end: the file's end, the start of zeros written ahead,
    /// or the bad record.
    end: u64,
    /// Valid records read.
    records: u64,
    /// Zeros written ahead by `append` follow the last record.
    zero_tail: bool,
    /// The bad record that stopped the scan, if any.
    problem: Option<Problem>,
}

/// A record the scan could not accept.
struct Problem {
    /// Its offset.
    at: u64,
    /// Where the log is cut if it is cut: the start of the batch the bad record is in
    /// (a batch is kept whole or not at all).
    cut_at: u64,
    /// What is wrong with it.
    why: String,
    /// Whether it is the last thing written (only zeros, or nothing, after it): a write
    /// torn by a crash, never acknowledged.
    torn: bool,
}

/// The next thing in the log after a valid record (or the header).
enum Next {
    /// A valid record, its body appended to the arena; `goes_on`: more of its batch
    /// follow.
    Record {
        len: usize,
        sequence: u64,
        goes_on: bool,
    },
    /// Only zeros follow (space written ahead): the end.
    ZeroTail,
    /// A record that cannot be accepted: why, and whether it is torn.
    Bad(String, bool),
}

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
        let scanned = read_records(&self.file, file_len, sink)
            .map_err(|e| e.unwrap_or_else(|e| io_err(&path, "cannot read", e)))?;
        if let Some(problem) = &scanned.problem {
            self.settle(problem, file_len, scanned.records)?;
        }
        // On a problem the scan stopped at the bad record, now the end.
        self.len = scanned.end;
        self.allocated = if scanned.zero_tail {
            file_len
        } else {
            scanned.end
        };
        self.compacted_len = scanned.end;
        self.scanned = true;
        Ok(())
    }

    /// Deals with a bad record: a torn one is truncated with a warning; corruption
    /// refuses to start, or with `repair` is truncated too, saying what was lost.
    fn settle(&self, problem: &Problem, file_len: u64, records: u64) -> Result<(), PluginError> {
        let path = &self.config.path;
        let Problem {
            at: bad_at,
            cut_at,
            why,
            torn,
        } = problem;
        let dropped = file_len - cut_at;
        let batch = if cut_at < bad_at {
            format!(
                " and the {} record(s) of its batch before it",
                count_records(&self.file, *cut_at, *bad_at)
            )
        } else {
            String::new()
        };
        if *torn {
            warn(&format!(
                "{}: torn record at the end (offset {bad_at}, {why}): truncated it{batch}, \
                 {dropped} byte(s) of a write that was never acknowledged; {records} \
                 record(s) kept",
                path.display()
            ));
        } else if self.config.repair {
            let lost = count_records(&self.file, *cut_at, file_len);
            warn(&format!(
                "{}: repair: corrupt record at offset {bad_at} ({why}); truncated at \
                 {cut_at}, dropping {lost} record(s) ({dropped} bytes): the bad one{batch} \
                 and everything after it; {records} record(s) kept",
                path.display()
            ));
        } else {
            return Err(PluginError::internal(format!(
                "{}: corrupt record at byte offset {bad_at} ({why}), {} bytes before \
                 the end; {records} record(s) in whole batches before it are intact. \
                 Refusing to start; the file was not changed. Back it up, then restart \
                 with `repair = true` in [plugins.file] (or `kvs --repair-log`) to drop \
                 the bad record, the rest of its batch and everything after it",
                path.display(),
                file_len - bad_at
            )));
        }
        crate::io::set_len(&self.file, *cut_at)
            .and_then(|()| crate::io::sync_all(&self.file))
            .map_err(|e| io_err(path, "cannot truncate", e))
    }
}

/// Reads the records of `file` after its header, handing them to `sink` in chunks, up to
/// the end or the first record it cannot accept. An `Err(Ok(_))` is the sink's error,
/// an `Err(Err(_))` a read that failed.
fn read_records(
    file: &File,
    file_len: u64,
    sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
) -> Result<Scanned, Result<PluginError, std::io::Error>> {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    reader.seek(SeekFrom::Start(HEADER_LEN)).map_err(Err)?;
    let mut scanned = Scanned {
        end: HEADER_LEN,
        records: 0,
        zero_tail: false,
        problem: None,
    };
    let mut last_sequence: Option<u64> = None;
    let mut arena: Vec<u8> = Vec::with_capacity(REPLAY_CHUNK_BYTES);
    let mut bodies: Vec<(usize, usize)> = Vec::with_capacity(REPLAY_CHUNK_EVENTS);
    // The batch being read: where it starts, its records so far. Chunks are handed
    // over only between batches, so the records of a batch that never ends (cut by a
    // crash) are never handed over.
    let mut batch_start = HEADER_LEN;
    let mut batch_records = 0usize;
    while scanned.end < file_len {
        let start = arena.len();
        let next = next_record(
            &mut reader,
            file_len - scanned.end,
            &mut arena,
            last_sequence,
        )
        .map_err(Err)?;
        let (len, sequence, goes_on) = match next {
            Next::Record {
                len,
                sequence,
                goes_on,
            } => (len, sequence, goes_on),
            Next::ZeroTail => {
                scanned.zero_tail = true;
                break;
            }
            Next::Bad(why, torn) => {
                scanned.problem = Some(Problem {
                    at: scanned.end,
                    cut_at: batch_start,
                    why,
                    torn,
                });
                break;
            }
        };
        last_sequence = Some(sequence);
        bodies.push((start, len));
        scanned.records += 1;
        scanned.end += (RECORD_HEADER_LEN + len) as u64;
        if goes_on {
            batch_records += 1;
            continue;
        }
        batch_start = scanned.end;
        batch_records = 0;
        if bodies.len() >= REPLAY_CHUNK_EVENTS || arena.len() >= REPLAY_CHUNK_BYTES {
            flush(&mut arena, &mut bodies, sink).map_err(Ok)?;
        }
    }
    if batch_records > 0 {
        // The last batch never ended: its last record is missing (or bad). Not one of
        // its records was acknowledged; they are dropped with it.
        bodies.truncate(bodies.len() - batch_records);
        scanned.records -= batch_records as u64;
        if scanned.problem.is_none() {
            scanned.problem = Some(Problem {
                at: scanned.end,
                cut_at: batch_start,
                why: format!(
                    "a batch whose last record is missing after {batch_records} record(s)"
                ),
                torn: true,
            });
            scanned.zero_tail = false;
        }
        scanned.end = batch_start;
    }
    if !bodies.is_empty() {
        flush(&mut arena, &mut bodies, sink).map_err(Ok)?;
    }
    Ok(scanned)
}

/// Hands the records buffered in `arena` to `sink` as one chunk, and empties the buffers.
fn flush(
    arena: &mut Vec<u8>,
    bodies: &mut Vec<(usize, usize)>,
    sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    // Bodies were verified when read; decoding again only borrows. One Vec per chunk,
    // not per record.
    let chunk: Vec<Event<'_>> = bodies
        .iter()
        .map(|&(start, len)| format::decode(&arena[start..start + len]).expect("verified"))
        .collect();
    let result = sink(&chunk);
    drop(chunk);
    arena.clear();
    bodies.clear();
    result
}

/// Reads the record at the reader's position (`remaining` bytes before the file's end),
/// appending its body to `arena` if it is valid; on anything else `arena` is left as it
/// was.
fn next_record(
    reader: &mut impl Read,
    remaining: u64,
    arena: &mut Vec<u8>,
    last_sequence: Option<u64>,
) -> std::io::Result<Next> {
    if remaining < RECORD_HEADER_LEN as u64 {
        return Ok(if rest_is_zero(reader)? {
            Next::ZeroTail
        } else {
            Next::Bad("incomplete record header".into(), true)
        });
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut h)?;
    let (len, body_crc) = match format::parse_header(&h) {
        RecordHeader::Valid { len, body_crc } => (len, body_crc),
        RecordHeader::Damaged => {
            let torn = rest_is_zero(reader)?;
            if torn && h.iter().all(|&b| b == 0) {
                return Ok(Next::ZeroTail);
            }
            return Ok(Next::Bad("damaged record length".into(), torn));
        }
    };
    if len as u64 > remaining - RECORD_HEADER_LEN as u64 {
        return Ok(Next::Bad("record cut short".into(), true));
    }
    let start = arena.len();
    arena.resize(start + len, 0);
    reader.read_exact(&mut arena[start..])?;
    let body = &arena[start..];
    if crc32c::crc32c(body) != body_crc {
        arena.truncate(start);
        // The last record written, if only zeros (or nothing) follow it.
        return Ok(Next::Bad("checksum mismatch".into(), rest_is_zero(reader)?));
    }
    let bad = match format::decode(body) {
        Ok(e) if last_sequence.is_some_and(|last| e.sequence <= last) => format!(
            "sequence {} does not follow {}",
            e.sequence,
            last_sequence.unwrap()
        ),
        Ok(e) => {
            return Ok(Next::Record {
                len,
                sequence: e.sequence,
                goes_on: format::goes_on(body),
            });
        }
        Err(why) => why,
    };
    arena.truncate(start);
    Ok(Next::Bad(bad, false))
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
