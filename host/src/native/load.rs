//! Loading a native plug-in: `dlopen`, the handshake, then the adapter of its generation.
//!
//! Each step can refuse the file:
//! 1. `dlopen` of a private copy of the file, known by the SHA-256 of its bytes (not a shared library -> refused). The library is leaked at once: its
//!    initialisers have run, so it is never unloaded, refused or not;
//! 2. copy the frozen prefix of its `KVS_PLUGIN_HANDSHAKE` static ([`HandshakePrefix`]:
//!    magic and contract version) — bad magic, another major or a newer minor is
//!    refused with both versions before anything else of the library is read;
//! 3. the adapter of the plug-in's generation ([`super::GENERATIONS`]) finds that
//!    generation's entry points and has abi_stable check their layout against this
//!    host's.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use abi_stable::StableAbi;
use abi_stable::library::RawLibrary;
use kvs_plugin_api::{
    API_MAJOR, API_MINOR, Handshake,
    handshake::{HANDSHAKE_SYMBOL, HandshakePrefix, MAGIC},
    version::check_compatible,
};

use sha2::{Digest, Sha256};

use crate::plugins::{Format, Plugin};

/// Loads the library `checked` holds open (through `/proc/self/fd/N`), reporting it as
/// `path`.
pub(crate) fn load(path: &Path, checked: crate::file_modes::Checked) -> Result<Plugin, String> {
    let (raw, hash) = load_private_copy(checked)?;
    // SAFETY: dlsym's address of a symbol of this name. Whatever it is, we copy only the
    // frozen 12-byte prefix (`read_unaligned`: no alignment or validity is assumed of
    // the bytes, and no reference into the library is formed) and check its magic
    // before reading anything more.
    let symbol: *const HandshakePrefix = unsafe {
        *raw.get::<*const HandshakePrefix>(HANDSHAKE_SYMBOL)
            .map_err(|_| {
                // Only asks whether the symbol exists; nothing is called or read.
                let wasm_guest = raw.get::<*const u8>(b"kvs_handshake\0").is_ok();
                if wasm_guest {
                    "a WASM plug-in built for this machine instead of WebAssembly (it exports \
                     kvs_handshake, the WASM entry point): rebuild it with `cargo build \
                     --release --target wasm32-wasip1` and put the .wasm file in the plugins \
                     directory"
                        .to_string()
                } else {
                    "not a kvs plug-in: it has no KVS_PLUGIN_HANDSHAKE symbol \
                     (plug-ins declare one with kvs_plugin_api::export_plugin!)"
                        .to_string()
                }
            })?
    };
    let prefix = unsafe { std::ptr::read_unaligned(symbol) };
    if prefix.magic != MAGIC {
        return Err("not a kvs plug-in: its KVS_PLUGIN_HANDSHAKE has the wrong magic tag".into());
    }
    let api = (prefix.api_major, prefix.api_minor);
    check_compatible(api, (API_MAJOR, API_MINOR)).map_err(|e| e.to_string())?;
    // SAFETY: magic and version say this is a 1.x handshake with a minor this host knows,
    // so the symbol is a `Handshake` of the frozen 1.x layout. Copied, not borrowed.
    let handshake: Handshake = unsafe { std::ptr::read_unaligned(symbol.cast::<Handshake>()) };
    handshake.validate()?;
    let (_, adapter) = super::GENERATIONS
        .iter()
        .find(|(first_minor, _)| *first_minor <= api.1)
        .expect("generation 1.0 takes every 1.x minor");
    let entry = adapter(raw, api)?;
    Ok(Plugin {
        path: path.to_path_buf(),
        format: Format::Native,
        kind: handshake.kind,
        name: handshake.name.as_str().to_string(),
        version: handshake.version.as_str().to_string(),
        description: handshake.description.as_str().to_string(),
        api,
        capabilities: handshake
            .capabilities
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        entry,
        hash,
        wasm: None,
    })
}

/// The libraries loaded so far, by the SHA-256 of their bytes: loading the same bytes
/// again (a rescan on reload) finds the same library instead of running a second copy.
static LOADED: Mutex<BTreeMap<[u8; 32], &'static RawLibrary>> = Mutex::new(BTreeMap::new());

/// `dlopen`s a private copy of the file `checked` holds open, never the file itself,
/// so that overwriting the file in place while kvs runs (`cp new.so plugins/`) can
/// neither crash kvs (the old library's pages would change under it: SIGBUS) nor be
/// ignored (glibc hands back the library already loaded from the same inode). The copy
/// is written to a directory of its own and removed once loaded: the mapping keeps it
/// alive, on disk rather than in memory. Returns the library and the hex SHA-256 of its
/// bytes.
fn load_private_copy(
    mut checked: crate::file_modes::Checked,
) -> Result<(&'static RawLibrary, String), String> {
    // Streamed, not read whole: a scan passes every plug-in file (hundreds of MiB in a
    // debug build) through here.
    let mut hasher = Sha256::new();
    std::io::copy(&mut checked.file, &mut hasher).map_err(|e| format!("cannot read: {e}"))?;
    let digest: [u8; 32] = hasher.finalize().into();
    let hash = hex(&digest);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(raw) = loaded.get(&digest) {
        return Ok((raw, hash));
    }
    if let Some(why) = truncated_elf(&checked.file) {
        return Err(why);
    }
    let raw = load_copy(&mut checked.file, &hash)?;
    // Never unload: its initialisers have run (refused or not), and the module, the
    // handshake and every object the plug-in hands out point into the library.
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));
    loaded.insert(digest, raw);
    Ok((raw, hash))
}

/// Loads a copy of `source`: from a new directory only this user can enter under
/// `/var/tmp` (on disk on most systems, where `/tmp` may be memory), removed once loaded;
/// where that cannot be written or mapped executable (a read-only or `noexec` mount),
/// from the temporary directory; failing that, from an in-memory file (`memfd`), kept
/// open for the life of the process.
///
/// The copies are made in the kernel (`std::io::copy` between files uses
/// `copy_file_range`) from the descriptor that was checked and hashed.
fn load_copy(source: &mut std::fs::File, hash: &str) -> Result<RawLibrary, String> {
    let mut first_error = None;
    for parent in [Path::new("/var/tmp"), &std::env::temp_dir()] {
        let attempt = tempfile::Builder::new()
            .prefix("kvs-plugin-")
            .tempdir_in(parent)
            .and_then(|dir| {
                let copy = dir.path().join(format!("{hash}.so"));
                copy_whole(source, &mut std::fs::File::create(&copy)?)?;
                Ok((dir, copy))
            });
        let Ok((dir, copy)) = attempt else {
            continue; // cannot write there: try the next place
        };
        // glibc knows the library by the copy's name, which names these bytes only;
        // once mapped, the copy can go (the mapping keeps its pages).
        let loaded = RawLibrary::load_at(&copy).map_err(|e| one_line(&e.to_string()));
        drop(dir);
        match loaded {
            Ok(raw) => return Ok(raw),
            // A mount that forbids mapping code: try the next place.
            Err(why) if why.contains("map segment") || why.contains("not permitted") => {
                first_error.get_or_insert(why);
            }
            Err(why) => return Err(refusal(why)),
        }
    }
    let memfd = sealed_copy(source, hash).map_err(|e| {
        format!(
            "cannot make a private copy to load ({}; memfd: {e})",
            first_error
                .as_deref()
                .unwrap_or("/var/tmp and the temporary directory are not writable")
        )
    })?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
    let raw = RawLibrary::load_at(&path).map_err(|e| refusal(one_line(&e.to_string())))?;
    // Open for ever: glibc knows the library by the /proc/self/fd/N name, which a
    // reused descriptor number would otherwise give to another file.
    std::mem::forget(memfd);
    Ok(raw)
}

/// What an Extism guest imports from the Extism kernel (`extism:host/env`), which a
/// guest compiled for this machine instead of WebAssembly leaves undefined.
const EXTISM_KERNEL_IMPORTS: &[&str] = &[
    "input_length",
    "input_load_u8",
    "input_load_u64",
    "output_set",
    "length",
    "length_unsafe",
    "alloc",
    "free",
    "load_u8",
    "load_u64",
    "store_u8",
    "store_u64",
    "error_set",
    "config_get",
    "var_get",
    "var_set",
    "http_request",
    "http_status_code",
    "log_info",
    "log_warn",
    "log_error",
    "log_debug",
    "log_trace",
];

/// Why a library that could be read was refused by the dynamic loader.
fn refusal(why: String) -> String {
    // A WASM guest (extism-pdk) compiled for the host imports the host functions as
    // ordinary symbols, which no library provides.
    let missing = why
        .split("undefined symbol: ")
        .nth(1)
        .map(|rest| rest.split([' ', ',', ')']).next().unwrap_or(""));
    let guest_import = missing.is_some_and(|symbol| {
        symbol.starts_with("kvs_")
            || symbol.starts_with("extism_")
            || EXTISM_KERNEL_IMPORTS.contains(&symbol)
    });
    if guest_import {
        format!(
            "a WASM plug-in built for this machine instead of WebAssembly ({why}): rebuild \
             it with `cargo build --release --target wasm32-wasip1` and put the .wasm file in \
             the plugins directory"
        )
    } else {
        format!("not a loadable shared library: {why}")
    }
}

/// `source` in an anonymous in-memory file, sealed against any change.
fn sealed_copy(source: &mut std::fs::File, hash: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(format!("kvs-plugin-{}", &hash[..16])).expect("no NUL");
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new
    // descriptor or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    copy_whole(source, &mut file)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Why a 64-bit ELF file is shorter than the segments its program headers load (a copy
/// cut short): the dynamic loader would map pages past its end, and the first touch of
/// one kills the process with SIGBUS. `None`: complete, or not such a file (the loader
/// says what is wrong with that).
fn truncated_elf(file: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    const PT_LOAD: u32 = 1;
    let len = file.metadata().ok()?.len();
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    // 64-bit little-endian ELF only: what this host loads.
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u64::from(u16_at(&header, 0x36)),
        u64::from(u16_at(&header, 0x38)),
    );
    let needed = |end: u64| format!("truncated: it needs {end} bytes, the file has {len}");
    let table_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if phentsize < 56 || table_end > len {
        return Some(needed(table_end));
    }
    let mut entry = [0u8; 56];
    for i in 0..phnum {
        file.read_exact_at(&mut entry, phoff + i * phentsize).ok()?;
        let kind = u32::from_le_bytes(entry[..4].try_into().unwrap());
        let end = u64_at(&entry, 8).saturating_add(u64_at(&entry, 32));
        if kind == PT_LOAD && end > len {
            return Some(needed(end));
        }
    }
    None
}

/// Copies all of `source`, from its start, to `to`.
fn copy_whole(source: &mut std::fs::File, to: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::Seek;
    source.seek(std::io::SeekFrom::Start(0))?;
    std::io::copy(source, to).map(drop)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The static named `symbol`, read as a `T`.
///
/// # Safety
/// The library must export `symbol` as a `T` (the handshake's minor promises it).
pub(super) unsafe fn exported<T>(
    raw: &'static RawLibrary,
    symbol: &[u8],
    api: (u16, u16),
    minor: &str,
) -> Result<&'static T, String> {
    let name = String::from_utf8_lossy(&symbol[..symbol.len() - 1]).into_owned();
    // SAFETY: the caller promises the symbol's type; it lives as long as the library,
    // which is never unloaded.
    unsafe {
        let sym = raw.get::<*const T>(symbol).map_err(|_| {
            format!(
                "its handshake says plugin-api {}.{} but it has no {name} symbol: \
                 declare it with kvs_plugin_api::export_plugin! (plugin-api {minor} or later)",
                api.0, api.1
            )
        })?;
        Ok(&**sym)
    }
}

/// `module`, once abi_stable agrees its layout as built (`layout`) is this host's `M`.
pub(super) fn checked<M: StableAbi>(
    layout: &'static abi_stable::type_layout::TypeLayout,
    module: &'static M,
    minor: &str,
) -> Result<&'static M, String> {
    abi_stable::abi_stability::abi_checking::check_layout_compatibility(
        <M as StableAbi>::LAYOUT,
        layout,
    )
    .map_err(|e| {
        format!(
            "its plugin-api {minor} entry points do not match this kvs's: rebuild the \
                 plug-in against plugin-api {API_MAJOR}.x ({})",
            one_line(&e.to_string())
        )
    })?;
    Ok(module)
}

pub(super) fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.split_whitespace().collect();
    let mut line = joined.join(" ");
    if line.len() > 400 {
        line.truncate(line.floor_char_boundary(400));
        line.push_str(" ...");
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_guest_built_for_this_machine_is_told_to_rebuild_for_wasm32() {
        for symbol in ["kvs_get", "extism_log_info", "input_length", "output_set"] {
            let why = super::refusal(format!(
                "/proc/self/fd/9: undefined symbol: {symbol} (a dlopen error)"
            ));
            assert!(why.contains("wasm32-wasip1"), "{symbol}: {why}");
        }
        let why = super::refusal("/x.so: undefined symbol: some_c_function".into());
        assert!(why.starts_with("not a loadable shared library"), "{why}");
    }

    #[test]
    fn a_library_cut_short_is_refused_before_it_is_mapped() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole");
        std::fs::write(&whole, &exe).unwrap();
        assert_eq!(
            super::truncated_elf(&std::fs::File::open(&whole).unwrap()),
            None
        );
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &exe[..100_000]).unwrap();
        let why = super::truncated_elf(&std::fs::File::open(&cut).unwrap()).unwrap();
        assert!(why.starts_with("truncated"), "{why}");
        let text = dir.path().join("text");
        std::fs::write(&text, b"not elf").unwrap();
        assert_eq!(
            super::truncated_elf(&std::fs::File::open(&text).unwrap()),
            None
        );
    }
}
