//! Loading a native plug-in: `dlopen`, the handshake, then the adapter of its generation.
//!
//! Each step can refuse the file:
//! 1. `dlopen` (not a shared library -> refused). The library is leaked at once: its
//!    initialisers have run, so it is never unloaded, refused or not;
//! 2. copy the frozen prefix of its `KVS_PLUGIN_HANDSHAKE` static ([`HandshakePrefix`]:
//!    magic and contract version) — bad magic, another major or a newer minor is
//!    refused with both versions before anything else of the library is read;
//! 3. the adapter of the plug-in's generation ([`super::GENERATIONS`]) finds that
//!    generation's entry points and has abi_stable check their layout against this
//!    host's.

use std::path::Path;

use abi_stable::StableAbi;
use abi_stable::library::RawLibrary;
use kvs_plugin_api::{
    API_MAJOR, API_MINOR, Handshake,
    handshake::{HANDSHAKE_SYMBOL, HandshakePrefix, MAGIC},
    version::check_compatible,
};

use crate::plugins::{Format, Plugin};

/// Loads the library `checked` holds open (through `/proc/self/fd/N`), reporting it as
/// `path`.
pub(crate) fn load(path: &Path, checked: crate::file_modes::Checked) -> Result<Plugin, String> {
    let raw = RawLibrary::load_at(&checked.load_path()).map_err(|e| {
        let why = one_line(&e.to_string());
        // A WASM guest (extism-pdk) compiled for the host imports the host functions
        // as ordinary symbols, which no library provides.
        if why.contains("undefined symbol: kvs_") || why.contains("undefined symbol: extism_") {
            format!(
                "a WASM plug-in built for this machine instead of WebAssembly ({why}): \
                 rebuild it with `cargo build --release --target wasm32-wasip1` and put the \
                 .wasm file in the plugins directory"
            )
        } else {
            format!("not a loadable shared library: {why}")
        }
    })?;
    // The descriptor stays open as long as the library (for ever): glibc knows a loaded
    // library by the name it was opened under, and a reused /proc/self/fd/N would
    // otherwise hand back this library for another file.
    std::mem::forget(checked.file);
    // Never unload: its initialisers have run, and the module, the handshake and every
    // object the plug-in hands out point into the library.
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));
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
    })
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
