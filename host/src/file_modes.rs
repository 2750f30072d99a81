//! Who could have changed a plug-in file. Opening a native plug-in runs its code inside
//! kvs, with kvs's privileges and environment (the JWT secret, the database password),
//! so a `.so` that someone else can write — the file, or a directory on its path — is
//! someone else's code. Like OpenSSH's StrictModes, kvs refuses it before `dlopen`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Group- or world-writable.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// World-writable.
const WORLD_WRITABLE: u32 = 0o002;
/// Only a file's owner may remove or rename it, however writable the directory is.
const STICKY: u32 = 0o1000;

/// Says why `path` is not safe to run as kvs, if it is not: it is writable by group or
/// others, owned by a user other than root or kvs's own, or lies in a directory (up to
/// `/`) that others can write without the sticky bit.
pub fn check(path: &Path) -> Result<(), String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot stat: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "{} is writable by {} (mode {mode:o}): anyone who can write it runs code as \
             kvs; fix with `chmod go-w {}` (or set plugins_insecure_modes = true for a \
             development setup)",
            real.display(),
            if mode & WORLD_WRITABLE != 0 {
                "everyone"
            } else {
                "its group"
            },
            real.display()
        ));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{} is owned by user {}, not by root or kvs's own user ({me}): its owner can \
             change the code kvs runs; fix with `chown root {}` (or set \
             plugins_insecure_modes = true for a development setup)",
            real.display(),
            meta.uid(),
            real.display()
        ));
    }
    for dir in real.ancestors().skip(1) {
        let meta =
            std::fs::metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
        let mode = meta.mode() & 0o7777;
        if mode & WORLD_WRITABLE != 0 && mode & STICKY == 0 {
            return Err(format!(
                "{} lies in {}, which everyone can write (mode {mode:o}, no sticky bit): \
                 anyone can replace the file; fix with `chmod o-w {}` (or set \
                 plugins_insecure_modes = true for a development setup)",
                real.display(),
                dir.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}
