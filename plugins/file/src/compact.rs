//! Compaction: rewrite the log as its live set, in the background, while writes continue.
//!
//! Like Redis's AOF rewrite, it is triggered by growth: when the log has reached
//! `compact_min_bytes` and grown by `compact_growth_percent` since the last compaction
//! (or since start-up), and at least a tenth of its records are superseded. A
//! background thread reads the log up to a fixed offset, keeps the
//! last record of each key, and copies the live PUT records — raw, checksums and
//! sequence numbers intact, in log order — into a temporary file, which it fsyncs.
//! The writer thread then finishes the switch between two appends: it copies the
//! records appended meanwhile, fsyncs, renames the temporary file over the log and
//! fsyncs the directory. A crash at any point leaves either the old log or the new one;
//! a leftover temporary file is removed on the next open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use kvs_plugin_api::EventKind;

use crate::format::{self, HEADER_LEN, RECORD_HEADER_LEN, RecordHeader};
use crate::io;

/// The temporary file a compaction writes, beside the log.
pub fn temp_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".compact-tmp");
    log.with_file_name(name)
}

/// A finished background rewrite, waiting for the writer thread to switch to it.
pub struct Rewritten {
    /// The new log, open for writing, fsynced.
    pub file: File,
    /// Where it is (the temporary path).
    pub temp: PathBuf,
    /// Its length.
    pub len: u64,
    /// The old log's length it covers: records after this offset must be copied over.
    pub covered: u64,
    /// Live records kept.
    pub kept: u64,
    /// Records dropped as superseded.
    pub dropped: u64,
}

/// A compaction in progress.
pub struct Compaction {
    /// Delivers the outcome once.
    /// `Ok(None)`: too little is superseded to be worth a rewrite.
    pub done: mpsc::Receiver<Result<Option<Rewritten>, String>>,
    /// The background thread.
    pub thread: JoinHandle<()>,
}

/// Starts rewriting `log`'s records in `[HEADER_LEN, covered)`.
pub fn start(log: &Path, covered: u64) -> std::io::Result<Compaction> {
    let source = File::open(log)?;
    let temp = temp_path(log);
    let (tx, done) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("kvs-file-compact".into())
        .spawn(move || {
            let result = rewrite(&source, &temp, covered);
            if result.is_err() {
                let _ = io::remove(&temp);
            }
            let _ = tx.send(result);
        })?;
    Ok(Compaction { done, thread })
}

fn rewrite(source: &File, temp: &Path, covered: u64) -> Result<Option<Rewritten>, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // Pass 1: the last record of every key, as (offset, total length, is a PUT).
    let mut last: HashMap<Vec<u8>, (u64, usize, bool)> = HashMap::new();
    let mut reader = BufReader::with_capacity(1 << 20, source);
    reader
        .seek(SeekFrom::Start(HEADER_LEN))
        .map_err(|e| io("seek", e))?;
    let mut offset = HEADER_LEN;
    let mut body = Vec::new();
    let mut records = 0u64;
    while offset < covered {
        let mut h = [0u8; RECORD_HEADER_LEN];
        reader.read_exact(&mut h).map_err(|e| io("read", e))?;
        let RecordHeader::Valid { len, body_crc } = format::parse_header(&h) else {
            return Err(format!("damaged record at offset {offset}"));
        };
        body.resize(len, 0);
        reader.read_exact(&mut body).map_err(|e| io("read", e))?;
        if crc32c::crc32c(&body) != body_crc {
            return Err(format!("checksum mismatch at offset {offset}"));
        }
        let event = format::decode(&body)?;
        let total = RECORD_HEADER_LEN + len;
        let is_put = event.kind == EventKind::PUT;
        match last.get_mut(event.key.as_slice()) {
            Some(entry) => *entry = (offset, total, is_put),
            None => {
                last.insert(event.key.to_vec(), (offset, total, is_put));
            }
        }
        records += 1;
        offset += total as u64;
    }
    // Pass 2: copy live PUTs in log order (so sequence numbers keep increasing).
    let mut live: Vec<(u64, usize)> = last
        .into_values()
        .filter(|&(_, _, is_put)| is_put)
        .map(|(at, total, _)| (at, total))
        .collect();
    // Rewriting a log that is nearly all live would cost a full copy to save little.
    if (records - live.len() as u64) * 10 < records {
        return Ok(None);
    }
    live.sort_unstable();
    let out = io::open(
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true),
        temp,
    )
    .and_then(|out| io::set_len(&out, 0).map(|()| out))
    .map_err(|e| io("create", e))?;
    let mut writer = BufWriter::with_capacity(
        1 << 20,
        io::Appender {
            file: &out,
            offset: 0,
        },
    );
    writer
        .write_all(&format::header())
        .map_err(|e| io("write", e))?;
    let mut record = Vec::new();
    let mut len = HEADER_LEN;
    for &(at, total) in &live {
        record.resize(total, 0);
        source
            .read_exact_at(&mut record, at)
            .map_err(|e| io("read", e))?;
        writer.write_all(&record).map_err(|e| io("write", e))?;
        len += total as u64;
    }
    writer.flush().map_err(|e| io("write", e))?;
    drop(writer);
    io::sync_all(&out).map_err(|e| io("fsync", e))?;
    Ok(Some(Rewritten {
        file: out,
        temp: temp.to_path_buf(),
        len,
        covered,
        kept: live.len() as u64,
        dropped: records - live.len() as u64,
    }))
}
