//! The handshake: what a plug-in says about itself before the host uses it.
//!
//! Every plug-in library exports one `static` named [`HANDSHAKE_SYMBOL`] of type
//! [`Handshake`]. It is plain data, so the host reads it without running plug-in code and
//! before abi_stable's layout checks: a plug-in built for another major version is refused
//! with a message about versions, not about type layouts.

use std::fmt;

#[cfg(feature = "native")]
use abi_stable::std_types::{RSlice, RStr};

#[cfg(feature = "native")]
use crate::version::{API_MAJOR, API_MINOR};

/// The first eight bytes of every [`Handshake`]: marks a library as a kvs plug-in.
pub const MAGIC: [u8; 8] = *b"KVSPLUG\0";

/// The exported symbol holding a native plug-in's [`Handshake`], NUL-terminated for `dlsym`.
pub const HANDSHAKE_SYMBOL: &[u8] = b"KVS_PLUGIN_HANDSHAKE\0";

/// The role a plug-in plays: the port it implements.
#[repr(transparent)]
#[cfg_attr(feature = "native", derive(abi_stable::StableAbi))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginKind(pub u8);

impl PluginKind {
    /// A transaction logger: the host calls it to make writes durable and to replay them.
    pub const LOGGER: PluginKind = PluginKind(1);
    /// A frontend: it calls the host's store on behalf of clients.
    pub const FRONTEND: PluginKind = PluginKind(2);

    /// `"logger"`, `"frontend"`, or `"unknown"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::LOGGER => "logger",
            Self::FRONTEND => "frontend",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a plug-in declares about itself. Read by the host before anything else.
///
/// **Layout promise.** `magic`, `api_major` and `api_minor` keep their offsets in every
/// version of the contract, including future majors, so any host can tell any plug-in
/// "wrong version". The remaining fields are frozen for major 1; a minor version may only
/// append fields at the end, and the host reads them only from plug-ins whose
/// `api_minor` says they exist.
#[cfg(feature = "native")]
#[repr(C)]
#[derive(abi_stable::StableAbi, Clone, Copy)]
pub struct Handshake {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The contract major version the plug-in was built against.
    pub api_major: u16,
    /// The contract minor version the plug-in was built against.
    pub api_minor: u16,
    /// Logger or frontend.
    pub kind: PluginKind,
    /// The name operators use (`--logger file`): lower-case ASCII letters, digits, `-`, `_`.
    pub name: RStr<'static>,
    /// The plug-in's own version (its crate version), for `kvs plugins list`.
    pub version: RStr<'static>,
    /// One line saying what the plug-in does.
    pub description: RStr<'static>,
    /// Optional features the plug-in asks of the host, e.g. `"fs:data-dir"`.
    /// Unknown capabilities are reported and ignored by the host.
    pub capabilities: RSlice<'static, RStr<'static>>,
}

/// The part of every [`Handshake`] that is frozen across all majors: the magic tag and
/// the contract version. A host reads a library's handshake symbol through this first
/// (a plain copy, no reference into the library), and the rest only once the version
/// says the layout is one it knows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakePrefix {
    /// Must be [`MAGIC`].
    pub magic: [u8; 8],
    /// The contract major version the plug-in was built against.
    pub api_major: u16,
    /// The contract minor version the plug-in was built against.
    pub api_minor: u16,
}

#[cfg(feature = "native")]
impl Handshake {
    /// A handshake for this version of the contract. Used by [`export_plugin!`](crate::export_plugin).
    pub const fn new(
        kind: PluginKind,
        name: &'static str,
        version: &'static str,
        description: &'static str,
        capabilities: &'static [RStr<'static>],
    ) -> Self {
        Handshake {
            magic: MAGIC,
            api_major: API_MAJOR,
            api_minor: API_MINOR,
            kind,
            name: RStr::from_str(name),
            version: RStr::from_str(version),
            description: RStr::from_str(description),
            capabilities: RSlice::from_slice(capabilities),
        }
    }

    /// Checks the fields a host relies on: magic, a usable name, a known kind.
    /// (Version compatibility is [`crate::version::check_compatible`]'s job.)
    pub fn validate(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err("bad magic tag: not a kvs plug-in".into());
        }
        if self.kind != PluginKind::LOGGER && self.kind != PluginKind::FRONTEND {
            return Err(format!("unknown plug-in kind {}", self.kind.0));
        }
        validate_name(self.name.as_str())
    }
}

/// Checks a plug-in name: 1..=64 bytes of `a-z`, `0-9`, `-`, `_`, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid plug-in name {name:?}: use 1-64 of a-z, 0-9, '-', '_', starting with a letter"
        ))
    }
}

#[cfg(feature = "native")]
impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field(
                "api",
                &format_args!("{}.{}", self.api_major, self.api_minor),
            )
            .field("kind", &self.kind)
            .field("name", &self.name.as_str())
            .field("version", &self.version.as_str())
            .finish_non_exhaustive()
    }
}
