//! A plug-in's log message, as a guest hands it to `kvs_log` (1.1).

use super::{Reader, WireError, Writer};
use crate::log::Level;

/// A plug-in's log message, as a guest hands it to the host's `kvs_log` (1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Importance.
    pub level: Level,
    /// The part of the plug-in it comes from; may be empty.
    pub target: String,
    /// The message.
    pub message: String,
    /// Key/value pairs.
    pub fields: Vec<(String, String)>,
}

impl LogRecord {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.level.0).str(&self.target).str(&self.message);
        w.u32(self.fields.len() as u32);
        for (k, v) in &self.fields {
            w.str(k).str(v);
        }
        w.0
    }
    /// Decodes it.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let level = Level(r.u8()?);
        let target = r.str()?.to_string();
        let message = r.str()?.to_string();
        let n = r.u32()?;
        let fields = (0..n)
            .map(|_| Ok((r.str()?.to_string(), r.str()?.to_string())))
            .collect::<Result<_, WireError>>()?;
        Ok(LogRecord {
            level,
            target,
            message,
            fields,
        })
    }
}
