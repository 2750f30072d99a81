//! The `file` transaction logger: an append-only, checksummed log file, fsynced per batch.
//!
//! * [`format`]: the byte layout of the file and its records.
//! * [`FileLogger`]: open (creating the file and directory), replay (`scan`: torn-tail
//!   recovery and corruption detection), append (one write and at most one sync per
//!   batch), close; `compact`: rewriting the live set while writes continue.
//!
//! Durability follows the `sync` setting, like Redis's `appendfsync`: `always` (default)
//! acknowledges a batch only after `fdatasync`; `interval` syncs every
//! `sync_interval_ms` from a background thread; `never` leaves it to the OS.

pub mod compact;
pub mod format;
pub mod io;
mod scan;

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use kvs_plugin_api::{Event, EventKind, PluginError, TransactionLogger, export_plugin, log};
use serde::Deserialize;

use format::{HEADER_LEN, RECORD_HEADER_LEN, RecordHeader};

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// `fdatasync` before acknowledging each batch.
    Always,
    /// `fdatasync` every `sync_interval_ms` in the background.
    Interval,
    /// Never sync explicitly (the OS writes back eventually; `close` syncs).
    Never,
}

/// The `[plugins.file]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The log file. Its directory is created if missing. Default `data/kvs.log`.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Sync policy. Default `always`.
    #[serde(default = "default_sync")]
    pub sync: SyncPolicy,
    /// Period of `interval` syncs. Default 1000.
    #[serde(default = "default_interval")]
    pub sync_interval_ms: u64,
    /// Truncate at the first corrupt record instead of refusing to start.
    #[serde(default)]
    pub repair: bool,
    /// Compact only once the log is at least this big. Default 64 MiB.
    #[serde(default = "default_compact_min")]
    pub compact_min_bytes: u64,
    /// Compact when the log has grown by this percentage since the last compaction (or
    /// start-up); 0 disables compaction. Default 100 (doubled), like Redis's
    /// `auto-aof-rewrite-percentage`.
    #[serde(default = "default_compact_growth")]
    pub compact_growth_percent: u64,
}

fn default_path() -> PathBuf {
    PathBuf::from("data/kvs.log")
}
fn default_sync() -> SyncPolicy {
    SyncPolicy::Always
}
fn default_interval() -> u64 {
    1000
}
fn default_compact_min() -> u64 {
    64 << 20
}
fn default_compact_growth() -> u64 {
    100
}

impl Config {
    /// Parses the plug-in's TOML table; errors name the bad key.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("[plugins.file]: {e}")))?;
        if config.sync == SyncPolicy::Interval && config.sync_interval_ms == 0 {
            return Err(PluginError::invalid_input(
                "[plugins.file]: sync_interval_ms must be at least 1",
            ));
        }
        Ok(config)
    }
}

/// The logger. See the crate docs.
pub struct FileLogger {
    config: Config,
    /// The log. Replaced when a compaction switches files; the `interval` syncer reads
    /// it through `current`.
    file: Arc<File>,
    current: Arc<Mutex<Arc<File>>>,
    /// Log length after the last compaction (or at start-up): the growth baseline.
    compacted_len: u64,
    compaction: Option<compact::Compaction>,
    /// Length of the valid log: appends go here.
    len: u64,
    /// Length of the file: `len` plus zeros written ahead of the appends (`sync =
    /// "always"`), so that an fdatasync after an append need not commit a new file size.
    allocated: u64,
    /// Set once the file has been scanned (torn tail truncated), i.e. replay ran.
    scanned: bool,
    /// Set when a write or sync failed: the file's state is uncertain, refuse writes.
    broken: Arc<AtomicBool>,
    /// Reused encoding buffer: one allocation serves every batch.
    buf: Vec<u8>,
    syncer: Option<Syncer>,
    /// fdatasyncs of appended data made by the sync policy (per batch, or by the
    /// `interval` thread): what tells the policies apart.
    data_syncs: Arc<AtomicU64>,
}

/// The background thread of the `interval` policy.
struct Syncer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> PluginError {
    PluginError::unavailable(format!("{what} {}: {e}", path.display()))
}

/// Writes a fresh log's header and makes it and the file's name durable.
fn init_header(file: &File, path: &Path) -> Result<(), PluginError> {
    io::write_at(file, &format::header(), 0)
        .and_then(|()| io::set_len(file, HEADER_LEN))
        .and_then(|()| io::sync_all(file))
        .and_then(|()| io::sync_dir(path))
        .map_err(|e| io_err(path, "cannot initialise", e))
}

/// Whether the bytes of `file` in `[from, to)` are all zeros.
fn only_zeros(file: &File, from: u64, to: u64) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = chunk.len().min((to - at) as usize);
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

impl FileLogger {
    /// Opens (creating if needed) the log described by `config`.
    pub fn open(config: Config) -> Result<FileLogger, PluginError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                PluginError::invalid_input(format!(
                    "cannot create the log directory {}: {e}; set [plugins.file] path to a writable place",
                    dir.display()
                ))
            })?;
        }
        let file = io::open(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &path,
        )
        .map_err(|e| {
            PluginError::invalid_input(format!(
                "cannot open the log file {}: {e}; set [plugins.file] path to a writable file",
                path.display()
            ))
        })?;
        let len = file
            .metadata()
            .map_err(|e| io_err(&path, "cannot stat", e))?
            .len();
        if len < HEADER_LEN {
            // New (or created but never given its header before a crash): start it.
            let mut partial = vec![0u8; len as usize];
            file.read_exact_at(&mut partial, 0)
                .map_err(|e| io_err(&path, "cannot read", e))?;
            if !format::header().starts_with(&partial) {
                return Err(PluginError::internal(format!(
                    "{} is not a kvs log file (bad header); move it away or point [plugins.file] path elsewhere",
                    path.display()
                )));
            }
            init_header(&file, &path)?;
        } else {
            let mut h = [0u8; HEADER_LEN as usize];
            file.read_exact_at(&mut h, 0)
                .map_err(|e| io_err(&path, "cannot read", e))?;
            let unfinished = h.iter().all(|&b| b == 0)
                && only_zeros(&file, HEADER_LEN, len)
                    .map_err(|e| io_err(&path, "cannot read", e))?;
            if unfinished {
                // Its creation was cut short by a crash: the new size reached the disk
                // but the header did not (found by the crash-state test). Nothing was
                // ever acknowledged from it (appends start only after the header is
                // synced), so it is started afresh.
                init_header(&file, &path)?;
            } else {
                format::check_header(&h)
                    .map_err(|why| PluginError::internal(format!("{}: {why}", path.display())))?;
            }
        }
        // A compaction interrupted by a crash leaves its temporary file; the log itself
        // is intact (the rename never happened), so the leftover is just removed.
        let _ = io::remove(&compact::temp_path(&path));
        let file = Arc::new(file);
        let current = Arc::new(Mutex::new(file.clone()));
        let broken = Arc::new(AtomicBool::new(false));
        let data_syncs = Arc::new(AtomicU64::new(0));
        let syncer = (config.sync == SyncPolicy::Interval).then(|| {
            let (stop, rx) = mpsc::channel::<()>();
            let current = current.clone();
            let broken = broken.clone();
            let data_syncs = data_syncs.clone();
            let period = Duration::from_millis(config.sync_interval_ms);
            let path = path.clone();
            let thread = std::thread::spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
                    let file = current.lock().unwrap().clone();
                    if let Err(e) = io::sync_data(&file) {
                        log::log(
                            log::Level::ERROR,
                            "sync",
                            "fdatasync failed; the logger refuses further writes",
                            &[("path", &path.display()), ("error", &e)],
                        );
                        broken.store(true, Ordering::Release);
                        return;
                    }
                    data_syncs.fetch_add(1, Ordering::Relaxed);
                }
            });
            Syncer { stop, thread }
        });
        Ok(FileLogger {
            config,
            file,
            current,
            compacted_len: HEADER_LEN,
            compaction: None,
            len: HEADER_LEN,
            allocated: HEADER_LEN,
            scanned: false,
            broken,
            buf: Vec::new(),
            syncer,
            data_syncs,
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// How many times the sync policy has fdatasynced appended data so far: once per
    /// batch under `always`, once per period under `interval`, never under `never`
    /// (`close` syncs in every case and is not counted).
    pub fn data_syncs(&self) -> u64 {
        self.data_syncs.load(Ordering::Relaxed)
    }

    fn fail_if_broken(&self) -> Result<(), PluginError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(PluginError::unavailable(format!(
                "{}: an earlier write or sync failed, so the file's state is uncertain; \
                 refusing writes until kvs is restarted",
                self.config.path.display()
            )));
        }
        Ok(())
    }
}

/// How far ahead of the appends the file is zero-filled (`sync = "always"`). ext4 and
/// most file systems must commit a new file size to their journal on fdatasync; a write
/// into blocks that already hold zeros needs only the data flushed, roughly halving the
/// cost of each durable batch. Real zeros, not `fallocate`: an unwritten extent turned
/// written is a metadata change too.
#[cfg(not(test))]
const WRITE_AHEAD_BYTES: u64 = 4 << 20;
/// Smaller in tests, so the crash-state test's files stay small.
#[cfg(test)]
const WRITE_AHEAD_BYTES: u64 = 64 << 10;

impl FileLogger {
    /// Makes sure the file holds at least `end` bytes, zero-filling a chunk past it.
    fn write_ahead(&mut self, end: u64) -> Result<(), PluginError> {
        if end <= self.allocated {
            return Ok(());
        }
        let target = end.div_ceil(WRITE_AHEAD_BYTES) * WRITE_AHEAD_BYTES;
        let zeros = vec![0u8; (target - self.allocated).min(1 << 20) as usize];
        let mut at = self.allocated;
        while at < target {
            let n = zeros.len().min((target - at) as usize);
            if let Err(e) = io::write_at(&self.file, &zeros[..n], at) {
                // Out of space, most likely: give the partial zeros back. The log itself
                // is untouched, so the batch just fails.
                let _ = io::set_len(&self.file, self.allocated);
                return Err(io_err(&self.config.path, "cannot extend", e));
            }
            at += n as u64;
        }
        self.allocated = target;
        Ok(())
    }

    /// Starts a background compaction if the log has grown enough and none is running.
    fn maybe_compact(&mut self) {
        let pct = self.config.compact_growth_percent;
        let grown_enough = self.len >= self.config.compact_min_bytes
            && self.len >= self.compacted_len.saturating_mul(100 + pct) / 100;
        if pct == 0 || self.compaction.is_some() || !grown_enough {
            return;
        }
        match compact::start(&self.config.path, self.len) {
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
    fn finish_compaction(&mut self) {
        let outcome = match self.compaction.as_ref().map(|c| c.done.try_recv()) {
            None | Some(Err(mpsc::TryRecvError::Empty)) => return,
            Some(Ok(outcome)) => outcome,
            Some(Err(mpsc::TryRecvError::Disconnected)) => Err("compaction thread died".into()),
        };
        if let Some(c) = self.compaction.take() {
            let _ = c.thread.join();
        }
        let path = self.config.path.clone();
        let outcome = match outcome {
            Ok(None) => {
                // Mostly live data: wait for the log to grow again before rescanning.
                self.compacted_len = self.len;
                return;
            }
            Ok(Some(new)) => Ok(new),
            Err(e) => Err(e),
        };
        let switched = outcome.and_then(|new| {
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
            io::rename(&new.temp, &path).map_err(|e| format!("rename: {e}"))?;
            if let Err(e) = io::sync_dir(&path) {
                warn(&format!(
                    "{}: compaction: directory fsync failed: {e}",
                    path.display()
                ));
            }
            Ok((new, tail))
        });
        match switched {
            Ok((new, tail)) => {
                let before = self.len;
                self.file = Arc::new(new.file);
                *self.current.lock().unwrap() = self.file.clone();
                self.len = new.len + tail;
                self.allocated = self.len;
                self.compacted_len = self.len;
                log::log(
                    log::Level::INFO,
                    "compaction",
                    "compacted the log",
                    &[
                        ("path", &path.display()),
                        ("bytes_before", &before),
                        ("bytes_after", &self.len),
                        ("kept", &new.kept),
                        ("dropped", &new.dropped),
                    ],
                );
            }
            Err(why) => {
                let _ = io::remove(&compact::temp_path(&path));
                self.compacted_len = self.len;
                warn(&format!(
                    "{}: compaction abandoned, log unchanged: {why}",
                    path.display()
                ));
            }
        }
    }
}

/// A warning in the host's log (plugin-api 1.1), tagged `plugin=file` by the host.
fn warn(msg: &str) {
    log::warn(msg);
}

impl TransactionLogger for FileLogger {
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        self.fail_if_broken()?;
        if !self.scanned {
            self.scan(&mut |_| Ok(()))?;
        }
        self.finish_compaction();
        self.buf.clear();
        for event in batch {
            if event.kind != EventKind::PUT && event.kind != EventKind::DELETE {
                return Err(PluginError::invalid_input(format!(
                    "unknown event kind {}",
                    event.kind.0
                )));
            }
            format::encode(event, &mut self.buf);
        }
        if self.config.sync == SyncPolicy::Always {
            self.write_ahead(self.len + self.buf.len() as u64)?;
        }
        if let Err(e) = io::write_at(&self.file, &self.buf, self.len) {
            // Cut off whatever part of the batch reached the file; if even that fails
            // the tail is uncertain, so stop taking writes.
            self.allocated = self.len;
            if io::set_len(&self.file, self.len).is_err() {
                self.broken.store(true, Ordering::Release);
            }
            return Err(io_err(&self.config.path, "cannot write", e));
        }
        if self.config.sync == SyncPolicy::Always
            && let Err(e) = io::sync_data(&self.file)
        {
            // After a failed fsync the kernel may have dropped the dirty pages: the
            // file's content is unknown. Never retry; refuse writes from now on.
            self.broken.store(true, Ordering::Release);
            return Err(io_err(&self.config.path, "cannot fdatasync", e));
        }
        if self.config.sync == SyncPolicy::Always {
            self.data_syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.len += self.buf.len() as u64;
        self.allocated = self.allocated.max(self.len);
        self.maybe_compact();
        if self.buf.capacity() > 16 << 20 {
            self.buf = Vec::new(); // don't keep a huge buffer after a burst of big values
        }
        Ok(())
    }

    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        self.scan(sink)
    }

    fn close(&mut self) -> Result<(), PluginError> {
        if let Some(c) = self.compaction.take() {
            // Not worth delaying shutdown for: the old log is complete. Drop the rewrite.
            let _ = c.thread.join();
            let _ = io::remove(&compact::temp_path(&self.config.path));
        }
        if let Some(syncer) = self.syncer.take() {
            drop(syncer.stop);
            let _ = syncer.thread.join();
        }
        self.fail_if_broken()?;
        io::sync_data(&self.file).map_err(|e| io_err(&self.config.path, "cannot fdatasync", e))?;
        if self.allocated > self.len {
            // Leave the file as long as its records; the zeros would be skipped anyway.
            match io::set_len(&self.file, self.len).and_then(|()| io::sync_all(&self.file)) {
                Ok(()) => self.allocated = self.len,
                Err(e) => warn(&format!(
                    "{}: cannot trim the space written ahead: {e}",
                    self.config.path.display()
                )),
            }
        }
        Ok(())
    }
}

fn open(config: &str) -> Result<FileLogger, PluginError> {
    FileLogger::open(Config::parse(config)?)
}

export_plugin!(
    logger: open,
    name: "file",
    description: "append-only checksummed log file; fsync per batch (sync = always|interval|never)"
);

#[cfg(test)]
mod crash;
#[cfg(test)]
mod tests;
