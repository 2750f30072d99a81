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
use crate::{io, warn};

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

pub(crate) fn rewrite(
    source: &File,
    temp: &Path,
    covered: u64,
) -> Result<Option<Rewritten>, String> {
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
    let mut newest: Option<(u64, usize)> = None;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
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
        // A put whose deadline has passed is as good as deleted (the host hides it, and
        // logs its removal when its sweep gets to it).
        let is_put = match event.kind {
            EventKind::PUT => true,
            EventKind::PUT_UNTIL => kvs_plugin_api::event::split_deadline(event.value.as_slice())
                .is_some_and(|(deadline, _)| deadline > now_ms),
            _ => false,
        };
        match last.get_mut(event.key.as_slice()) {
            Some(entry) => *entry = (offset, total, is_put),
            None => {
                last.insert(event.key.to_vec(), (offset, total, is_put));
            }
        }
        records += 1;
        newest = Some((offset, total));
        offset += total as u64;
    }
    // Pass 2: copy live PUTs in log order (so sequence numbers keep increasing).
    let mut live: Vec<(u64, usize)> = last
        .into_values()
        .filter(|&(_, _, is_put)| is_put)
        .map(|(at, total, _)| (at, total))
        .collect();
    // And the newest record, whatever it is: the host numbers its next write after the
    // highest sequence it replays, and a key's revision is that number, so dropping a
    // trailing DELETE would hand an old revision (an ETag a client may hold) out again.
    if let Some(newest) = newest
        && !live.contains(&newest)
    {
        live.push(newest);
    }
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
        // Copied alone, a record is a batch of its own: the rest of its batch is gone.
        let kind = RECORD_HEADER_LEN + 8;
        if record[kind] & format::GOES_ON != 0 {
            record[kind] &= !format::GOES_ON;
            let crc = crc32c::crc32c(&record[RECORD_HEADER_LEN..]);
            record[8..12].copy_from_slice(&crc.to_le_bytes());
        }
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

impl crate::FileLogger {
    /// Starts a background compaction if the log has grown enough and none is running.
    pub(crate) fn maybe_compact(&mut self) {
        let pct = self.config.compact_growth_percent;
        let grown_enough = self.len >= self.config.compact_min_bytes
            && self.len >= self.compacted_len.saturating_mul(100 + pct) / 100;
        if pct == 0 || self.compaction.is_some() || !grown_enough {
            return;
        }
        match start(&self.config.path, self.len) {
            Ok(c) => self.compaction = Some(c),
            Err(e) => {
                warn(&format!(
                    "{}: cannot start compaction: {e}",
                    self.config.path.display()
                ));
                self.compacted_len = self.len; // wait for more growth before retrying
            }
        }
    }

    /// If a background rewrite has finished, switches to it: copy the records appended
    /// since it started, fsync, rename over the log, fsync the directory. Any failure
    /// before the rename keeps the old log and drops the rewrite.
    pub(crate) fn finish_compaction(&mut self) {
        let outcome = match self.compaction.as_ref().map(|c| c.done.try_recv()) {
            None | Some(Err(mpsc::TryRecvError::Empty)) => return,
            Some(Ok(outcome)) => outcome,
            Some(Err(mpsc::TryRecvError::Disconnected)) => Err("compaction thread died".into()),
        };
        if let Some(c) = self.compaction.take() {
            let _ = c.thread.join();
        }
        let new = match outcome {
            Ok(None) => {
                // Mostly live data: wait for the log to grow again before rescanning.
                self.compacted_len = self.len;
                return;
            }
            Ok(Some(new)) => new,
            Err(why) => return self.abandon_compaction(&why),
        };
        match self.copy_tail_and_rename(&new) {
            Ok(tail) => self.switch_to(new, tail),
            Err(why) => self.abandon_compaction(&why),
        }
    }

    /// Copies the records appended since the rewrite started to its end, fsyncs it and
    /// renames it over the log (then fsyncs the directory, warning if that fails).
    /// Returns the bytes copied.
    fn copy_tail_and_rename(&self, new: &Rewritten) -> Result<u64, String> {
        let path = &self.config.path;
        let tail = self.len - new.covered;
        let mut chunk = vec![0u8; tail.min(1 << 20) as usize];
        let mut copied = 0;
        while copied < tail {
            let n = chunk.len().min((tail - copied) as usize);
            self.file
                .read_exact_at(&mut chunk[..n], new.covered + copied)
                .and_then(|()| io::write_at(&new.file, &chunk[..n], new.len + copied))
                .map_err(|e| format!("copying the tail: {e}"))?;
            copied += n as u64;
        }
        io::sync_data(&new.file).map_err(|e| format!("fsync: {e}"))?;
        // Locked before it becomes the log, so the log is never without its lock.
        crate::open::lock(&new.file, path).map_err(|e| e.message().to_string())?;
        io::rename(&new.temp, path).map_err(|e| format!("rename: {e}"))?;
        if let Err(e) = io::sync_dir(path) {
            warn(&format!(
                "{}: compaction: directory fsync failed: {e}",
                path.display()
            ));
        }
        Ok(tail)
    }

    /// Appends go to the renamed rewrite from now on.
    fn switch_to(&mut self, new: Rewritten, tail: u64) {
        let before = self.len;
        self.file = std::sync::Arc::new(new.file);
        *self.current.lock().unwrap() = self.file.clone();
        self.len = new.len + tail;
        self.allocated = self.len;
        self.compacted_len = self.len;
        // The rewrite has a format-2 header.
        self.format_1 = false;
        kvs_plugin_api::log::log(
            kvs_plugin_api::log::Level::INFO,
            "compaction",
            "compacted the log",
            &[
                ("path", &self.config.path.display()),
                ("bytes_before", &before),
                ("bytes_after", &self.len),
                ("kept", &new.kept),
                ("dropped", &new.dropped),
            ],
        );
    }

    /// Keeps the old log: removes the rewrite and waits for more growth.
    fn abandon_compaction(&mut self, why: &str) {
        let path = &self.config.path;
        let _ = io::remove(&temp_path(path));
        self.compacted_len = self.len;
        warn(&format!(
            "{}: compaction abandoned, log unchanged: {why}",
            path.display()
        ));
    }
}
