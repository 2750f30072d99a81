//! `kvs plugins check`: the contract's behavioural checks, run against one plug-in file.
//!
//! For a logger: replay of an empty log; a batch with binary keys and empty values; a
//! batch of many events in one append; close, reopen, and replay returns every event in
//! order, unchanged. For a frontend (started through the same `lifecycle::Builder` as
//! kvs itself, over a logger that keeps nothing): it starts, reports an endpoint, accepts
//! connections there (any protocol: the check does not assume the REST plug-in's URLs),
//! and stops within its deadline. Every check reports pass or fail with a reason.

use std::path::Path;

use kvs_plugin_api::{EventKind, PluginKind};

use kvs_host::plugins;

mod frontend;
mod logger;

/// One check's outcome.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// What was checked.
    pub name: String,
    /// `Ok` or why it failed.
    pub result: Result<(), String>,
    /// Not run (and not failed): nothing here can exercise it, e.g. a non-HTTP endpoint.
    pub skipped: bool,
}

pub(super) type Owned = (u64, EventKind, Vec<u8>, Vec<u8>);

/// `--send` and `--expect`: bytes a frontend's own protocol should answer, and how.
pub(crate) struct Exchange {
    pub(crate) send: Vec<u8>,
    pub(crate) expect: Vec<u8>,
}

/// `text` with the escapes `\r`, `\n`, `\t`, `\0`, `\\` and `\xNN` turned into bytes.
pub(crate) fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let (byte, len) = match next {
            Some(b'n') => (b'\n', 2),
            Some(b'r') => (b'\r', 2),
            Some(b't') => (b'\t', 2),
            Some(b'0') => (0, 2),
            Some(b'\\') => (b'\\', 2),
            Some(b'x') => {
                let hex = text
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{text:?}: \\x needs two hex digits"))?;
                (hex, 4)
            }
            _ => {
                return Err(format!(
                    "{text:?}: unknown escape at byte {i} (\\n \\r \\t \\0 \\\\ \\xNN)"
                ));
            }
        };
        out.push(byte);
        i += len;
    }
    Ok(out)
}

/// Bytes as text, escaped back the same way (for messages).
pub(crate) fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Runs every check that applies to the plug-in at `path`. `table` is its config table
/// (TOML); `{tmp}` in it is replaced by a fresh temporary directory. `exchange`, for a
/// frontend: bytes to send to its endpoint and the answer to expect.
pub(crate) fn run(path: &Path, table: &str, exchange: Option<&Exchange>) -> Vec<Outcome> {
    let mut out = Vec::new();
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return vec![fail("temporary directory", e.to_string())],
    };
    let mut table = table.replace("{tmp}", &tmp.path().display().to_string());
    let plugin = match plugins::load(path) {
        Ok(p) => {
            out.push(pass(format!(
                "handshake: {} {} {} (plugin-api {}.{})",
                p.format, p.kind, p.name, p.api.0, p.api.1
            )));
            p
        }
        Err(why) => {
            out.push(fail("handshake", why));
            return out;
        }
    };
    // A WASM logger gets a granted directory unless the table names one.
    if plugin.format == plugins::Format::Wasm
        && plugin.kind == PluginKind::LOGGER
        && !table.contains("data_dir")
    {
        table.push_str(&format!("\ndata_dir = {:?}\n", tmp.path().join("data")));
    }
    let shared = plugin
        .capabilities
        .iter()
        .any(|c| c == kvs_plugin_api::capability::LOG_SHARED);
    if plugin.kind == PluginKind::LOGGER && shared {
        // Its behaviour is that of a cluster (several nodes, a log that delivers): the
        // `cluster` tests check the etcd one against real etcd members.
        out.push(skip(
            "a shared logger (log:shared): append/replay checks do not apply; it is checked \
             by running kvs nodes on it (see the cluster tests)",
        ));
    } else if plugin.kind == PluginKind::LOGGER {
        logger::check_logger(&plugin, &table, tmp.path(), &mut out);
    } else {
        frontend::check_frontend(&plugin, &table, exchange, &mut out);
    }
    out
}

pub(super) fn pass(name: impl Into<String>) -> Outcome {
    Outcome {
        name: name.into(),
        result: Ok(()),
        skipped: false,
    }
}

pub(super) fn skip(name: impl Into<String>) -> Outcome {
    Outcome {
        name: name.into(),
        result: Ok(()),
        skipped: true,
    }
}

pub(super) fn fail(name: impl Into<String>, why: impl Into<String>) -> Outcome {
    Outcome {
        name: name.into(),
        result: Err(why.into()),
        skipped: false,
    }
}

pub(super) fn check(out: &mut Vec<Outcome>, name: &str, result: Result<(), String>) -> bool {
    let ok = result.is_ok();
    out.push(Outcome {
        name: name.into(),
        result,
        skipped: false,
    });
    ok
}
