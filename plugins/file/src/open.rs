//! Opening the log: its directory and file, a new or half-created file's header, a
//! leftover compaction file, and the `interval` policy's sync thread.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use kvs_plugin_api::{PluginError, log};

use crate::format::{self, HEADER_LEN};
use crate::{Config, FileLogger, SyncPolicy, compact, io, io_err};

/// The background thread of the `interval` policy.
pub(crate) struct Syncer {
    pub(crate) stop: mpsc::Sender<()>,
    pub(crate) thread: JoinHandle<()>,
}

impl FileLogger {
    /// Opens (creating if needed) the log described by `config`.
    pub fn open(config: Config) -> Result<FileLogger, PluginError> {
        let path = config.path.clone();
        create_parent_dir(&path)?;
        let file = open_file(&path)?;
        lock(&file, &path)?;
        let version = ready_header(&file, &path)?;
        // A compaction interrupted by a crash leaves its temporary file; the log itself
        // is intact (the rename never happened), so the leftover is just removed.
        let _ = io::remove(&compact::temp_path(&path));
        let file = Arc::new(file);
        let current = Arc::new(Mutex::new(file.clone()));
        let broken = Arc::new(AtomicBool::new(false));
        let data_syncs = Arc::new(AtomicU64::new(0));
        let syncer = (config.sync == SyncPolicy::Interval).then(|| {
            Syncer::spawn(
                Duration::from_millis(config.sync_interval_ms),
                path,
                current.clone(),
                broken.clone(),
                data_syncs.clone(),
            )
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
            format_1: version == format::FORMAT_VERSION_1,
        })
    }
}

/// Takes an exclusive lock on the open log (`flock`) for as long as it is open, so that
/// a second kvs, or a `kvs restore`, on the same log is refused instead of appending to
/// it unseen: each would replay only what it wrote itself. The log file itself, not a
/// lock file beside it that anyone could delete; a compaction locks its rewrite before
/// renaming it over the log.
pub(crate) fn lock(file: &File, path: &Path) -> Result<(), PluginError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(PluginError::unavailable(format!(
            "the log {} is in use: another process (a running kvs, or a kvs restore) holds \
             its lock; stop it first",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(PluginError::unavailable(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Creates the log's directory if missing.
fn create_parent_dir(path: &Path) -> Result<(), PluginError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            PluginError::invalid_input(format!(
                "cannot create the log directory {}: {e}; set [plugins.file] path to a writable place",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Opens the log file for reading and writing, creating it if missing.
fn open_file(path: &Path) -> Result<File, PluginError> {
    io::open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        path,
    )
    .map_err(|e| {
        PluginError::invalid_input(format!(
            "cannot open the log file {}: {e}; set [plugins.file] path to a writable file",
            path.display()
        ))
    })
}

/// Checks the header of an existing log, or writes one for a new log (or one whose
/// creation a crash cut short); the format version it names.
fn ready_header(file: &File, path: &Path) -> Result<u32, PluginError> {
    let len = file
        .metadata()
        .map_err(|e| io_err(path, "cannot stat", e))?
        .len();
    if len < HEADER_LEN {
        // New (or created but never given its header before a crash): start it.
        let mut partial = vec![0u8; len as usize];
        file.read_exact_at(&mut partial, 0)
            .map_err(|e| io_err(path, "cannot read", e))?;
        if !format::header().starts_with(&partial) {
            return Err(PluginError::internal(format!(
                "{} is not a kvs log file (bad header); move it away or point [plugins.file] path elsewhere",
                path.display()
            )));
        }
        return init_header(file, path);
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0)
        .map_err(|e| io_err(path, "cannot read", e))?;
    let unfinished = h.iter().all(|&b| b == 0)
        && only_zeros(file, HEADER_LEN, len).map_err(|e| io_err(path, "cannot read", e))?;
    if unfinished {
        // Its creation was cut short by a crash: the new size reached the disk but the
        // header did not (found by the crash-state test). Nothing was ever acknowledged
        // from it (appends start only after the header is synced), so it is started
        // afresh.
        return init_header(file, path);
    }
    format::check_header(&h)
        .map_err(|why| PluginError::internal(format!("{}: {why}", path.display())))?;
    Ok(format::header_version(&h))
}

/// Writes a fresh log's header and makes it and the file's name durable.
fn init_header(file: &File, path: &Path) -> Result<u32, PluginError> {
    io::write_at(file, &format::header(), 0)
        .and_then(|()| io::set_len(file, HEADER_LEN))
        .and_then(|()| io::sync_all(file))
        .and_then(|()| io::sync_dir(path))
        .map_err(|e| io_err(path, "cannot initialise", e))?;
    Ok(format::FORMAT_VERSION)
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

impl Syncer {
    /// Starts the thread that fdatasyncs the current file every `period` until `stop` is
    /// dropped, or until a sync fails: then it marks the logger `broken` and ends.
    fn spawn(
        period: Duration,
        path: PathBuf,
        current: Arc<Mutex<Arc<File>>>,
        broken: Arc<AtomicBool>,
        data_syncs: Arc<AtomicU64>,
    ) -> Syncer {
        let (stop, rx) = mpsc::channel::<()>();
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
    }
}
