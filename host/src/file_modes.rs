//! Who could have changed a plug-in file. Opening a native plug-in runs its code inside
//! kvs, with kvs's privileges and environment (the JWT secret, the database password),
//! so a `.so` that someone else can write — the file, a directory on its path, or a
//! directory holding a symbolic link on the way to it — is someone else's code. Like
//! OpenSSH's StrictModes, kvs refuses it before `dlopen`, and then loads the very file
//! it checked (through its open descriptor), so it cannot be swapped in between.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Group- or world-writable.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// Only a file's owner may remove or rename it, however writable the directory is.
const STICKY: u32 = 0o1000;
/// Symbolic links followed at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// A plug-in file, opened after its modes were checked.
pub struct Checked {
    /// The open file: load it as `/proc/self/fd/N` ([`Checked::load_path`]), never by
    /// its name again.
    pub file: File,
    /// Why it is not safe to run as kvs, if it is not.
    pub unsafe_because: Option<String>,
}

impl Checked {
    /// The path that names exactly the file that was checked.
    pub fn load_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Opens `path` and says whether someone other than root or kvs's own user could have
/// changed what it holds: the file writable by group or others or owned by another user;
/// or, on the way to it (every directory of the path as given, of each symbolic link
/// followed and of the file's real location, up to `/`), a directory writable by group
/// or others without the sticky bit, or owned by another user.
pub fn open_checked(path: &Path) -> Result<Checked, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    let unsafe_because = file_problem(path, &meta).or_else(|| path_problem(path));
    Ok(Checked {
        file,
        unsafe_because,
    })
}

fn file_problem(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 {
        let who = if mode & 0o002 != 0 {
            "everyone"
        } else {
            "its group"
        };
        return Some(format!(
            "{} is writable by {who} (mode {mode:o}); fix with `chmod go-w {}`",
            path.display(),
            path.display()
        ));
    }
    if !trusted_owner(meta.uid()) {
        return Some(format!(
            "{} is owned by user {}, not by root or kvs's own user; fix with `chown root {}`",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    None
}

/// The directories whose writers could change what `path` leads to.
fn directories_on_the_way(path: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let absolute = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        }
    };
    let mut at = absolute(path);
    for _ in 0..MAX_LINKS {
        // The directories as named (a link among them is followed by stat, and its own
        // directory is named too), and where they really are.
        dirs.extend(at.ancestors().skip(1).map(Path::to_path_buf));
        if let Some(parent) = at.parent().and_then(|p| p.canonicalize().ok()) {
            dirs.extend(parent.ancestors().map(Path::to_path_buf));
        }
        match std::fs::read_link(&at) {
            Ok(target) => {
                let base = at.parent().map(Path::to_path_buf).unwrap_or_default();
                at = absolute(&base.join(target));
            }
            Err(_) => break,
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

fn path_problem(path: &Path) -> Option<String> {
    for dir in directories_on_the_way(path) {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        if mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            };
            return Some(format!(
                "{} lies in {}, which {who} can write (mode {mode:o}, no sticky bit): they \
                 can replace the file; fix with `chmod go-w {}`{}",
                path.display(),
                dir.display(),
                dir.display(),
                if who == "everyone" {
                    " (chmod o-w at least)"
                } else {
                    ""
                }
            ));
        }
        if !trusted_owner(meta.uid()) {
            return Some(format!(
                "{} lies in {}, owned by user {}, not by root or kvs's own user: its owner \
                 can replace the file; fix with `chown root {}`",
                path.display(),
                dir.display(),
                meta.uid(),
                dir.display()
            ));
        }
    }
    None
}
