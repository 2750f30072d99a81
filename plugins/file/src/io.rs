//! Every operation the logger does that changes what is on disk, in one place: file
//! writes, truncation, fsync/fdatasync, create, rename, remove and directory fsync.
//!
//! In a normal build these are the plain `std` calls. In the crate's own tests they are
//! also recorded (for files under a directory a test asks about), so the crash-state
//! test (`crash.rs`) can rebuild every on-disk state a power loss could leave.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Opens (or creates) a file.
pub fn open(options: &OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(test)]
    let existed = path.exists();
    let file = options.open(path)?;
    #[cfg(test)]
    record::opened(path, &file, existed);
    Ok(file)
}

/// Writes all of `buf` at `offset`.
pub fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)?;
    #[cfg(test)]
    record::op(file, |inode| record::Op::Write {
        inode,
        offset,
        data: buf.to_vec(),
    });
    Ok(())
}

/// Sets the file's length.
pub fn set_len(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    #[cfg(test)]
    record::op(file, |inode| record::Op::SetLen { inode, len });
    Ok(())
}

/// `fdatasync`: the file's data (and the size needed to read it) is durable.
pub fn sync_data(file: &File) -> io::Result<()> {
    #[cfg(test)]
    if faults::sync_fails() {
        return Err(io::Error::other("injected fdatasync failure (EIO)"));
    }
    file.sync_data()?;
    #[cfg(test)]
    record::op(file, |inode| record::Op::Sync { inode });
    Ok(())
}

/// `fsync`: the file's data and metadata are durable.
pub fn sync_all(file: &File) -> io::Result<()> {
    file.sync_all()?;
    #[cfg(test)]
    record::op(file, |inode| record::Op::Sync { inode });
    Ok(())
}

/// Renames `from` over `to`. Durable only once their directory is synced.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    #[cfg(test)]
    record::path_op(to, || record::Op::Rename {
        from: record::name(from),
        to: record::name(to),
    });
    Ok(())
}

/// Removes a file. Durable only once its directory is synced.
pub fn remove(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    #[cfg(test)]
    record::path_op(path, || record::Op::Remove {
        name: record::name(path),
    });
    Ok(())
}

/// Fsyncs the directory holding `path`, making its creations, renames and removals
/// durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    record::path_op(path, || record::Op::SyncDir);
    Ok(())
}

/// Writes sequentially through [`write_at`] (for a `BufWriter`).
pub struct Appender<'f> {
    /// The file.
    pub file: &'f File,
    /// Where the next write goes.
    pub offset: u64,
}

impl io::Write for Appender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_at(self.file, buf, self.offset)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub mod faults {
    //! Faults a test asks for, on its own thread only: the next fdatasyncs fail, as
    //! they do when a disk reports an I/O error (PostgreSQL's "fsyncgate").

    use std::cell::Cell;

    thread_local! {
        static FAILING_SYNCS: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes the next `n` `sync_data` calls on this thread fail.
    pub fn fail_syncs(n: u32) {
        FAILING_SYNCS.set(n);
    }

    pub(super) fn sync_fails() -> bool {
        let left = FAILING_SYNCS.get();
        FAILING_SYNCS.set(left.saturating_sub(1));
        left > 0
    }
}

#[cfg(test)]
pub mod record {
    //! The recorder: one global list of operations on files in one directory.

    use std::collections::HashMap;
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    pub use kvs_testkit::crash::Op;

    struct Recording {
        dir: PathBuf,
        /// The planted bug: leave out the directory fsync that follows a rename.
        drop_dir_sync_after_rename: bool,
        ops: Vec<Op>,
        /// Files in `dir` by their real (device, inode): other tests in this process
        /// reuse descriptor numbers, so files are recognised by what they are.
        real: HashMap<(u64, u64), u64>,
        /// The directory as it is now: name -> (recorded inode, real identity).
        names: HashMap<String, (u64, (u64, u64))>,
        next_inode: u64,
    }

    fn identity(file: &File) -> Option<(u64, u64)> {
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    static RECORDING: Mutex<Option<Recording>> = Mutex::new(None);

    /// Starts recording operations on files in `dir` (one recording at a time). With
    /// `drop_dir_sync_after_rename`, a directory fsync right after a rename is left out
    /// of the record, as if the code did not make it (the planted bug).
    pub fn start(dir: &Path, drop_dir_sync_after_rename: bool) {
        *RECORDING.lock().unwrap() = Some(Recording {
            dir: dir.to_path_buf(),
            drop_dir_sync_after_rename,
            ops: Vec::new(),
            real: HashMap::new(),
            names: HashMap::new(),
            next_inode: 1,
        });
    }

    /// Stops and returns what was recorded.
    pub fn stop() -> Vec<Op> {
        RECORDING
            .lock()
            .unwrap()
            .take()
            .map(|r| r.ops)
            .unwrap_or_default()
    }

    /// Adds a test's marker.
    pub fn mark(text: String) {
        if let Some(r) = RECORDING.lock().unwrap().as_mut() {
            r.ops.push(Op::Mark(text));
        }
    }

    pub(super) fn name(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn ours(r: &Recording, path: &Path) -> bool {
        path.parent() == Some(r.dir.as_path())
    }

    pub(super) fn opened(path: &Path, file: &File, existed: bool) {
        let mut guard = RECORDING.lock().unwrap();
        let Some(r) = guard.as_mut().filter(|r| ours(r, path)) else {
            return;
        };
        let Some(real) = identity(file) else { return };
        let name = name(path);
        let inode = match r.names.get(&name) {
            Some(&(inode, _)) if existed => inode,
            _ => {
                let inode = r.next_inode;
                r.next_inode += 1;
                r.names.insert(name.clone(), (inode, real));
                inode
            }
        };
        r.real.insert(real, inode);
        r.ops.push(Op::Open {
            name,
            inode,
            created: !existed,
        });
    }

    pub(super) fn op(file: &File, make: impl FnOnce(u64) -> Op) {
        let mut guard = RECORDING.lock().unwrap();
        let Some(r) = guard.as_mut() else { return };
        if let Some(inode) = identity(file).and_then(|real| r.real.get(&real).copied()) {
            r.ops.push(make(inode));
        }
    }

    pub(super) fn path_op(path: &Path, make: impl FnOnce() -> Op) {
        let mut guard = RECORDING.lock().unwrap();
        let Some(r) = guard.as_mut().filter(|r| ours(r, path)) else {
            return;
        };
        let op = make();
        if op == Op::SyncDir
            && r.drop_dir_sync_after_rename
            && matches!(r.ops.last(), Some(Op::Rename { .. }))
        {
            return;
        }
        match &op {
            Op::Rename { from, to } => {
                if let Some(moved) = r.names.remove(from)
                    && let Some((_, replaced)) = r.names.insert(to.clone(), moved)
                {
                    // Unlinked: its real inode number may be reused by another file.
                    r.real.remove(&replaced);
                }
            }
            Op::Remove { name } => {
                if let Some((_, real)) = r.names.remove(name) {
                    r.real.remove(&real);
                }
            }
            _ => {}
        }
        r.ops.push(op);
    }
}
