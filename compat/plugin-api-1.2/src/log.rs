//! Logging through the host (plugin-api 1.1).
//!
//! A plug-in's messages become events in the host's `tracing` output: filtered by the
//! operator's `RUST_LOG`, formatted like the host's own lines, and tagged with the
//! plug-in's declared name (`plugin=file`). The host emits them under the `tracing`
//! target `kvs::plugin`, so `RUST_LOG=kvs::plugin=debug` shows every plug-in's debug
//! messages and nothing else's.
//!
//! ```
//! use kvs_plugin_api::log;
//! log::warn("compaction skipped: disk nearly full");
//! log::log(log::Level::INFO, "compaction", "log rewritten", &[("bytes", &4096)]);
//! ```
//!
//! Works the same in native and WASM plug-ins. Before the host has handed the plug-in
//! its handle (in a plug-in's own unit tests, say), messages go to stderr.

use std::fmt;

/// How important a message is; the host maps it to the `tracing` level of the same name.
///
/// A transparent `u8` so that the set could grow; an unknown level is logged as `INFO`.
#[repr(transparent)]
#[cfg_attr(feature = "native", derive(abi_stable::StableAbi))]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(pub u8);

impl Level {
    /// Something failed and needs the operator.
    pub const ERROR: Level = Level(1);
    /// Something unexpected that the plug-in handled.
    pub const WARN: Level = Level(2);
    /// A notable event in normal operation.
    pub const INFO: Level = Level(3);
    /// Detail for diagnosing problems.
    pub const DEBUG: Level = Level(4);
    /// Very detailed tracing.
    pub const TRACE: Level = Level(5);

    /// `"ERROR"`, `"WARN"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::ERROR => "ERROR",
            Self::WARN => "WARN",
            Self::DEBUG => "DEBUG",
            Self::TRACE => "TRACE",
            _ => "INFO",
        }
    }
}

impl fmt::Debug for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Logs `message` at `level`. `target` names the part of the plug-in it comes from (may
/// be empty); `fields` are key/value pairs the host attaches to the event.
pub fn log(level: Level, target: &str, message: &str, fields: &[(&str, &dyn fmt::Display)]) {
    let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
    sink::emit(level, target, message, &fields);
}

/// Logs an error.
pub fn error(message: &str) {
    log(Level::ERROR, "", message, &[]);
}

/// Logs a warning.
pub fn warn(message: &str) {
    log(Level::WARN, "", message, &[]);
}

/// Logs an informational message.
pub fn info(message: &str) {
    log(Level::INFO, "", message, &[]);
}

/// Logs a debug message.
pub fn debug(message: &str) {
    log(Level::DEBUG, "", message, &[]);
}

#[cfg(any(feature = "native", not(feature = "guest")))]
fn to_stderr(level: Level, target: &str, message: &str, fields: &[(&str, String)]) {
    let mut line = if target.is_empty() {
        format!("{} {message}", level.name())
    } else {
        format!("{} {target}: {message}", level.name())
    };
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    eprintln!("{line}");
}

#[cfg(feature = "native")]
mod sink {
    //! Native: the host handle the 1.1 entry points install (`native::v1_1`).
    use std::sync::OnceLock;

    use abi_stable::std_types::{RSlice, RStr};

    use super::Level;
    use crate::native::v1_1::{HostBox, LogField, LogRecord};

    static HOST: OnceLock<HostBox> = OnceLock::new();

    /// Keeps the first host handle this library receives (every later one is the same
    /// host speaking for the same plug-in).
    pub(crate) fn install(host: HostBox) {
        let _ = HOST.set(host);
    }

    pub(super) fn emit(level: Level, target: &str, message: &str, fields: &[(&str, String)]) {
        let Some(host) = HOST.get() else {
            return super::to_stderr(level, target, message, fields);
        };
        let fields: Vec<LogField<'_>> = fields
            .iter()
            .map(|(k, v)| LogField {
                key: RStr::from_str(k),
                value: RStr::from_str(v),
            })
            .collect();
        host.log(&LogRecord {
            level,
            target: RStr::from_str(target),
            message: RStr::from_str(message),
            fields: RSlice::from_slice(&fields),
        });
    }
}

#[cfg(feature = "native")]
pub(crate) use sink::install;

#[cfg(all(feature = "guest", not(feature = "native")))]
mod sink {
    //! WASM: the host function `kvs_log`.
    use super::Level;

    pub(super) fn emit(level: Level, target: &str, message: &str, fields: &[(&str, String)]) {
        crate::guest::host_log(level, target, message, fields);
    }
}

#[cfg(not(any(feature = "native", feature = "guest")))]
mod sink {
    use super::Level;

    pub(super) fn emit(level: Level, target: &str, message: &str, fields: &[(&str, String)]) {
        super::to_stderr(level, target, message, fields);
    }
}
