//! Plug-in discovery: scan the plugins directory, handshake every file, index by name.
//!
//! A `.so` is checked for who could have changed it ([`crate::file_modes`]), then
//! loaded by [`crate::native`] (dlopen, handshake, the adapter of its contract
//! generation); a `.wasm` by [`crate::wasm`] (its handshake in a small sandbox). Either
//! way the result is a [`Plugin`] whose [`Entry`] the lifecycle calls.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kvs_plugin_api::PluginKind;

use sha2::Digest;

use crate::ports::Entry;

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
    /// Its entry points, as the host calls them.
    pub entry: Arc<dyn Entry>,
    /// A WASM plug-in's bytes as scanned: what is compiled when it is opened or
    /// started, whatever the file holds by then (`None` for native plug-ins).
    pub wasm: Option<Arc<[u8]>>,
    /// The hex SHA-256 of the file's bytes as loaded: how a reload tells a changed file
    /// (a new build) from the one in use, whatever its name or mtime.
    pub hash: String,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("api", &self.api)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Where a WASM plug-in's module comes from: the bytes scanned, else its file.
    pub fn wasm_source(&self) -> crate::wasm::Source<'_> {
        match &self.wasm {
            Some(bytes) => crate::wasm::Source::Bytes(bytes),
            None => crate::wasm::Source::File(&self.path),
        }
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
            crate::native::load(path, checked)
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

fn load_wasm(path: &Path) -> Result<Plugin, String> {
    let bytes = crate::wasm::read_module(path)?;
    let h = crate::wasm::handshake(path, &bytes)?;
    let hash = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Plugin {
        path: path.to_path_buf(),
        format: Format::Wasm,
        kind: h.kind,
        name: h.name,
        version: h.version,
        description: h.description,
        api: (h.api_major, h.api_minor),
        capabilities: h.capabilities,
        entry: crate::wasm::entry(),
        hash,
        wasm: Some(bytes.into()),
    })
}
