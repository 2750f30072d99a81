//! The lock a WASM logger holds on its granted `data_dir` while it is open, so two kvs
//! (or a `kvs restore`) never write one log: an exclusive `flock` on the directory, and
//! on every file in it once the guest has opened it (a hard link to the log from another
//! directory is the same file). A live swap closes the old logger before it opens the
//! new one; the closed logger's lock waits in [`CLOSED`] for its successor on the same
//! directory to take over, so nothing else can take it in between.

use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kvs_plugin_api::PluginError;

/// Most files in a `data_dir` the lock covers (a guest's log is a few files).
const MAX_FILES: usize = 4096;

/// A held lock: the directory's and its files'.
pub(super) struct DirLock {
    dir: PathBuf,
    _dir_file: File,
    files: Vec<File>,
    /// (device, inode) of each file in `files`: a file is locked once.
    locked: HashSet<(u64, u64)>,
}

/// Locks handed over by closed loggers: (directory, the closed logger's id, its lock).
static CLOSED: Mutex<Vec<(PathBuf, u64, DirLock)>> = Mutex::new(Vec::new());

/// A unique id per logger, so a closed lock is given back only by the logger that
/// handed it over.
pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl DirLock {
    /// The lock on `dir`: the one a closed logger of this process handed over, else a
    /// new `flock`, or an error naming who to blame.
    pub(super) fn acquire(name: &str, dir: &Path) -> Result<DirLock, PluginError> {
        let dir = dir.canonicalize().map_err(|e| {
            PluginError::unavailable(format!(
                "WASM logger {name}: its data_dir {}: {e}",
                dir.display()
            ))
        })?;
        let mut closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = closed.iter().position(|(d, _, _)| *d == dir) {
            return Ok(closed.swap_remove(at).2);
        }
        drop(closed);
        let opened = File::open(&dir).map_err(|e| {
            PluginError::unavailable(format!(
                "WASM logger {name}: cannot open its data_dir {}: {e}",
                dir.display()
            ))
        })?;
        match opened.try_lock() {
            Ok(()) => Ok(DirLock {
                dir,
                _dir_file: opened,
                files: Vec::new(),
                locked: HashSet::new(),
            }),
            Err(TryLockError::WouldBlock) => Err(in_use(name, &dir, None)),
            Err(TryLockError::Error(e)) => Err(PluginError::unavailable(format!(
                "WASM logger {name}: cannot lock its data_dir {}: {e}",
                dir.display()
            ))),
        }
    }

    /// Locks every file now in the directory (and its subdirectories) not locked yet:
    /// after the guest's `open`, which creates its log.
    pub(super) fn cover_files(&mut self, name: &str) -> Result<(), PluginError> {
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    pending.push(path);
                    continue;
                }
                if !meta.is_file() || self.locked.contains(&(meta.dev(), meta.ino())) {
                    continue;
                }
                if self.files.len() >= MAX_FILES {
                    return Ok(());
                }
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                match file.try_lock() {
                    Ok(()) => {
                        self.locked.insert((meta.dev(), meta.ino()));
                        self.files.push(file);
                    }
                    Err(TryLockError::WouldBlock) => {
                        return Err(in_use(name, &self.dir, Some(&path)));
                    }
                    Err(TryLockError::Error(_)) => {}
                }
            }
        }
        Ok(())
    }

    /// Hands the lock over to the next logger this process opens on the directory
    /// (a live swap's), until `owner` is dropped.
    pub(super) fn hand_over(self, owner: u64) {
        let mut closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
        closed.push((self.dir.clone(), owner, self));
    }

    /// Releases what `owner` handed over and nobody took.
    pub(super) fn release(owner: u64) {
        let mut closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
        closed.retain(|(_, o, _)| *o != owner);
    }
}

fn in_use(name: &str, dir: &Path, file: Option<&Path>) -> PluginError {
    let what = match file {
        Some(file) => format!("{} (in its data_dir {})", file.display(), dir.display()),
        None => format!("its data_dir {}", dir.display()),
    };
    PluginError::unavailable(format!(
        "WASM logger {name}: {what} is in use by another kvs (or a `kvs restore`, or a \
         hard link to its log): two writers would corrupt one log; stop the other, or \
         give this one another data_dir"
    ))
}
