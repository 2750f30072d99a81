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
mod config;
pub mod format;
pub mod io;
mod open;
mod scan;

pub use config::{Config, SyncPolicy};

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kvs_plugin_api::{Event, PluginError, TransactionLogger, export_plugin, log};

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
    syncer: Option<open::Syncer>,
    /// fdatasyncs of appended data made by the sync policy (per batch, or by the
    /// `interval` thread): what tells the policies apart.
    data_syncs: Arc<AtomicU64>,
    /// The header still names format 1 (a log from before batches): it is upgraded to 2
    /// before the first batch of several records, so an older logger refuses the file
    /// by its version rather than misread the batch bit — and until then may still
    /// open it.
    format_1: bool,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> PluginError {
    let message = format!("{what} {}: {e}", path.display());
    // Out of space or over quota: nothing of the batch was kept (it was cut off), and
    // writes succeed again once space is freed.
    if matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        return PluginError::storage_full(format!("{message}; free some space and retry"));
    }
    PluginError::unavailable(message)
}

impl FileLogger {
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
        if self.format_1 && batch.len() > 1 {
            io::write_at(&self.file, &format::FORMAT_VERSION.to_le_bytes(), 8)
                .and_then(|()| io::sync_data(&self.file))
                .map_err(|e| io_err(&self.config.path, "cannot upgrade the header of", e))?;
            self.format_1 = false;
        }
        self.buf.clear();
        for (i, event) in batch.iter().enumerate() {
            if !format::KINDS.contains(&event.kind) {
                return Err(PluginError::invalid_input(format!(
                    "unknown event kind {}",
                    event.kind.0
                )));
            }
            // One batch: replay keeps all of it or none (`log:atomic_batch`).
            format::encode_in_batch(event, i + 1 < batch.len(), &mut self.buf);
        }
        if self.config.sync == SyncPolicy::Always {
            // Only an optimisation: on a nearly full disk the batch may still fit where
            // the zeros ahead of it do not, and the write itself says if it does not.
            let _ = self.write_ahead(self.len + self.buf.len() as u64);
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
            // file's content is unknown. Never retry; refuse writes from now on. The
            // batch was not acknowledged, so cut it off: a restart must not replay it.
            self.broken.store(true, Ordering::Release);
            let _ = io::set_len(&self.file, self.len);
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
        let closed = self.close_log();
        // The log's lock (`open::lock`) is released whatever happened: the next opener
        // (a swap's, or the same logger reopened after a failed one) must not find it
        // held while this object lives on.
        let _ = self.file.unlock();
        closed
    }
}

impl FileLogger {
    fn close_log(&mut self) -> Result<(), PluginError> {
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
    description: "append-only checksummed log file; fsync per batch (sync = always|interval|never)",
    capabilities: ["log:expiry", "log:atomic_batch"]
);

#[cfg(test)]
mod crash;
#[cfg(test)]
mod tests;
