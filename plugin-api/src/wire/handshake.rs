//! A `.wasm` guest's handshake, as `kvs_handshake` returns it.

use super::{Reader, WireError, Writer};
use crate::handshake::{MAGIC, PluginKind};

/// A plug-in's handshake as a `.wasm` guest returns it from `kvs_handshake`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Contract major version.
    pub api_major: u16,
    /// Contract minor version.
    pub api_minor: u16,
    /// Logger or frontend.
    pub kind: PluginKind,
    /// Declared name.
    pub name: String,
    /// The plug-in's own version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Requested capabilities, e.g. `"fs:data-dir"`, `"frontend:http"`.
    pub capabilities: Vec<String>,
}

impl Handshake {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(&MAGIC);
        w.u16(self.api_major).u16(self.api_minor).u8(self.kind.0);
        w.str(&self.name).str(&self.version).str(&self.description);
        w.u32(self.capabilities.len() as u32);
        for c in &self.capabilities {
            w.str(c);
        }
        w.0
    }

    /// Reads only the frozen prefix: the magic tag and the contract version.
    pub fn decode_version(buf: &[u8]) -> Result<(u16, u16), WireError> {
        let mut r = Reader::new(buf);
        if r.take(8)? != MAGIC {
            return Err(WireError(
                "bad magic tag: not a kvs plug-in handshake".into(),
            ));
        }
        Ok((r.u16()?, r.u16()?))
    }

    /// Decodes a whole handshake (call after checking the version).
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let (api_major, api_minor) = Self::decode_version(buf)?;
        let mut r = Reader::new(&buf[12..]);
        let kind = PluginKind(r.u8()?);
        let name = r.str()?.to_string();
        let version = r.str()?.to_string();
        let description = r.str()?.to_string();
        let n = r.u32()?;
        let capabilities = (0..n)
            .map(|_| r.str().map(str::to_string))
            .collect::<Result<_, _>>()?;
        Ok(Handshake {
            api_major,
            api_minor,
            kind,
            name,
            version,
            description,
            capabilities,
        })
    }
}
