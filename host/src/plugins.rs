//! Plug-in discovery: scan the plugins directory, handshake every file, index by name.
//!
//! A native plug-in is loaded in four steps, each of which can refuse it:
//! 1. `dlopen` the file (not a shared library -> refused). The library is leaked at
//!    once: its initialisers have run, so it is never unloaded, refused or not
//!    (abi_stable's own order);
//! 2. copy the frozen prefix of its `KVS_PLUGIN_HANDSHAKE` static ([`HandshakePrefix`]:
//!    magic and contract version) — bad magic, another major or a newer minor is
//!    refused with both versions before anything else of the library is read;
//! 3. abi_stable's header and layout checks on its root module (the 1.0 entry points);
//! 4. for a plug-in of 1.1 or later, the `KVS_PLUGIN_V1_1` entry points (and from 1.3,
//!    `KVS_PLUGIN_V1_3`), layout-checked
//!    against this host's (see `kvs_plugin_api::versioning`).
//!
//! Every library is loaded with `RawLibrary::load_at` + `init_root_module`, never
//! `RootModule::load_from_*`, which caches one library per root-module type and would
//! hand back the first plug-in for every later one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::StableAbi;
use abi_stable::library::{RawLibrary, lib_header_from_raw_library};
use anyhow::{Context, Result, bail};
use kvs_plugin_api::{
    API_MAJOR, API_MINOR, Handshake, PluginKind,
    handshake::{HANDSHAKE_SYMBOL, HandshakePrefix, MAGIC},
    native::{PluginModRef, v1_1, v1_3},
    version::check_compatible,
};

/// How a plug-in is packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A native shared object (`.so`), loaded with abi_stable.
    Native,
    /// A WebAssembly module (`.wasm`).
    Wasm,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Native => "native",
            Format::Wasm => "wasm",
        })
    }
}

/// A plug-in that passed its handshake and the load-time checks.
#[derive(Clone)]
pub struct Plugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Native or WASM.
    pub format: Format,
    /// Logger or frontend.
    pub kind: PluginKind,
    /// Its declared name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// Its one-line description.
    pub description: String,
    /// The contract version it was built against.
    pub api: (u16, u16),
    /// Capabilities it asked for.
    pub capabilities: Vec<String>,
    /// How to reach its code.
    pub module: Module,
}

/// A loaded plug-in's code.
#[derive(Clone)]
pub enum Module {
    /// A native library's entry points.
    Native(NativeModule),
    /// A `.wasm` file, compiled when it is opened with its sandbox settings.
    Wasm,
}

/// A native library's entry points, per contract version.
#[derive(Clone, Copy)]
pub struct NativeModule {
    /// The 1.0 root module: every native plug-in has it.
    pub v1_0: PluginModRef,
    /// The 1.1 entry points, if the plug-in was built against 1.1 or later. The host
    /// uses these when present: they hand over the host's services and carry contexts.
    pub v1_1: Option<&'static v1_1::Module>,
    /// The 1.3 entry points, if the plug-in was built against 1.3 or later: preferred
    /// over 1.1's (a frontend's store also answers `stats`).
    pub v1_3: Option<&'static v1_3::Module>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// A file in the plugins directory that was not accepted, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The file.
    pub path: PathBuf,
    /// What was wrong and what to do about it.
    pub reason: String,
}

/// Everything a scan of the plugins directory found.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The directory scanned.
    pub dir: PathBuf,
    /// Accepted plug-ins, sorted by kind, name, path.
    pub plugins: Vec<Plugin>,
    /// Refused files, sorted by path.
    pub refused: Vec<Refused>,
}

impl Catalog {
    /// Scans `dir`: every `*.so` and `*.wasm` file is handshaked; other files are ignored.
    /// A file that fails is recorded in `refused`, never fatal. A missing directory is.
    pub fn scan(dir: &Path) -> Result<Catalog> {
        Self::scan_with(dir, false)
    }

    /// [`Catalog::scan`]; with `insecure_modes`, a native plug-in that others could have
    /// changed ([`crate::file_modes`]) is loaded with a warning instead of refused.
    pub fn scan_with(dir: &Path, insecure_modes: bool) -> Result<Catalog> {
        let entries = std::fs::read_dir(dir).with_context(|| {
            format!(
                "cannot read the plugins directory {}: build and stage the plug-ins with \
                 `cargo xtask build`, or point --plugins-dir / KVS_PLUGINS_DIR / plugins_dir \
                 at the directory that holds them",
                dir.display()
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(p.extension().and_then(|e| e.to_str()), Some("so" | "wasm")) && p.is_file()
            })
            .collect();
        paths.sort();
        let mut catalog = Catalog {
            dir: dir.to_path_buf(),
            ..Catalog::default()
        };
        for path in paths {
            match load_with(&path, insecure_modes) {
                Ok(plugin) => catalog.plugins.push(plugin),
                Err(reason) => catalog.refused.push(Refused { path, reason }),
            }
        }
        catalog
            .plugins
            .sort_by(|a, b| (a.kind, &a.name, &a.path).cmp(&(b.kind, &b.name, &b.path)));
        Ok(catalog)
    }

    /// Every accepted plug-in with this kind and name.
    pub fn matching(&self, kind: PluginKind, name: &str) -> Vec<&Plugin> {
        self.plugins
            .iter()
            .filter(|p| p.kind == kind && p.name == name)
            .collect()
    }

    /// Names that more than one file claims, with their files.
    pub fn duplicates(&self) -> BTreeMap<(PluginKind, String), Vec<PathBuf>> {
        let mut by_name: BTreeMap<(PluginKind, String), Vec<PathBuf>> = BTreeMap::new();
        for p in &self.plugins {
            by_name
                .entry((p.kind, p.name.clone()))
                .or_default()
                .push(p.path.clone());
        }
        by_name.retain(|_, paths| paths.len() > 1);
        by_name
    }

    /// The one plug-in of this kind and name, or an error that says what is available
    /// (unknown name) or which files collide (duplicate name).
    pub fn find(&self, kind: PluginKind, name: &str) -> Result<&Plugin> {
        match self.matching(kind, name).as_slice() {
            [one] => Ok(one),
            [] => {
                let available: Vec<&str> = self
                    .plugins
                    .iter()
                    .filter(|p| p.kind == kind)
                    .map(|p| p.name.as_str())
                    .collect();
                let mut msg = format!(
                    "no {kind} plug-in named {name:?} in {}; available {kind}s: {}",
                    self.dir.display(),
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    }
                );
                let refused = self.refused.len();
                if refused > 0 {
                    msg.push_str(&format!(
                        " ({refused} file(s) refused; `kvs plugins list` says why)"
                    ));
                }
                bail!(msg)
            }
            many => {
                let paths: Vec<String> =
                    many.iter().map(|p| p.path.display().to_string()).collect();
                bail!(
                    "{} files declare the {kind} plug-in {name:?}: {}; remove all but one",
                    many.len(),
                    paths.join(" and ")
                )
            }
        }
    }
}

/// Loads one plug-in file, or says why not. A native plug-in that others could have
/// changed is refused before it is opened ([`crate::file_modes`]).
pub fn load(path: &Path) -> Result<Plugin, String> {
    load_with(path, false)
}

/// [`load`]; with `insecure_modes`, loose modes on a native plug-in only warn.
pub fn load_with(path: &Path, insecure_modes: bool) -> Result<Plugin, String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("so") => {
            let checked = crate::file_modes::open_checked(path)?;
            if let Some(why) = &checked.unsafe_because {
                let why = format!(
                    "a native plug-in runs as kvs, and someone other than root or kvs's \
                     user could change this one: {why}"
                );
                if !insecure_modes {
                    return Err(format!(
                        "{why} (or set plugins_insecure_modes = true, for development only)"
                    ));
                }
                tracing::warn!("loading it anyway (plugins_insecure_modes = true): {why}");
            }
            // The file that was checked, not whatever the name points at by now.
            load_native(path, checked)
        }
        Some("wasm") => {
            if let Ok(checked) = crate::file_modes::open_checked(path)
                && let Some(why) = checked.unsafe_because
            {
                tracing::warn!(
                    "others could swap this WebAssembly plug-in for another guest (it stays \
                     in its sandbox either way): {why}"
                );
            }
            load_wasm(path)
        }
        _ => Err("not a plug-in file (expected .so or .wasm)".into()),
    }
}

/// Loads the library `checked` holds open (through `/proc/self/fd/N`), reporting it as
/// `path`.
fn load_native(path: &Path, checked: crate::file_modes::Checked) -> Result<Plugin, String> {
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
    // SAFETY: the library is leaked above, so the 'static references abi_stable hands
    // out stay valid.
    let v1_0 = unsafe { lib_header_from_raw_library(raw) }
        .and_then(|header| header.init_root_module::<PluginModRef>())
        .map_err(|e| {
            format!(
                "its handshake says plugin-api {}.{}, but its exported module does not match \
                 this kvs's plugin-api {API_MAJOR}.{API_MINOR}: rebuild the plug-in against \
                 plugin-api {API_MAJOR}.x ({})",
                api.0,
                api.1,
                one_line(&e.to_string())
            )
        })?;
    let v1_1 = if api.1 >= 1 {
        Some(load_v1_1(raw, api)?)
    } else {
        None
    };
    let v1_3 = if api.1 >= 3 {
        Some(load_v1_3(raw, api)?)
    } else {
        None
    };
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
        module: Module::Native(NativeModule { v1_0, v1_1, v1_3 }),
    })
}

/// The 1.1 entry points of a plug-in whose handshake says 1.1 or later.
fn load_v1_1(raw: &'static RawLibrary, api: (u16, u16)) -> Result<&'static v1_1::Module, String> {
    // SAFETY: a plug-in declaring 1.1+ exports this symbol as a `v1_1::Exports` (see
    // export_plugin!). Its first field, the layout, is read and checked by abi_stable
    // before the module is used.
    let exports: &'static v1_1::Exports = unsafe { exported(raw, v1_1::SYMBOL, api, "1.1")? };
    checked(exports.layout, &exports.module, "1.1")
}

/// The 1.3 entry points of a plug-in whose handshake says 1.3 or later.
fn load_v1_3(raw: &'static RawLibrary, api: (u16, u16)) -> Result<&'static v1_3::Module, String> {
    // SAFETY: as for `load_v1_1`, with 1.3's `Exports`.
    let exports: &'static v1_3::Exports = unsafe { exported(raw, v1_3::SYMBOL, api, "1.3")? };
    checked(exports.layout, &exports.module, "1.3")
}

/// The static named `symbol`, read as a `T`.
///
/// # Safety
/// The library must export `symbol` as a `T` (the handshake's minor promises it).
unsafe fn exported<T>(
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
fn checked<M: StableAbi>(
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

fn load_wasm(path: &Path) -> Result<Plugin, String> {
    let h = crate::wasm::handshake(path)?;
    Ok(Plugin {
        path: path.to_path_buf(),
        format: Format::Wasm,
        kind: h.kind,
        name: h.name,
        version: h.version,
        description: h.description,
        api: (h.api_major, h.api_minor),
        capabilities: h.capabilities,
        module: Module::Wasm,
    })
}

fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.split_whitespace().collect();
    let mut line = joined.join(" ");
    if line.len() > 400 {
        line.truncate(line.floor_char_boundary(400));
        line.push_str(" ...");
    }
    line
}
