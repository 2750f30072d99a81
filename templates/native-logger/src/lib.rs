//! Template: a minimal native logger. One line per event, `sequence kind key value`
//! with key and value in hex, fsynced once per batch. Its config table has one key,
//! `path` (plus `repair`, which `kvs --repair-log` adds to every logger's table). Simple,
//! not fast: see `plugins/file` for a production logger.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};

use kvs_plugin_api::{Event, EventKind, PluginError, TransactionLogger, export_plugin};
use serde::Deserialize;

/// This logger's table. Unknown keys are refused, so a typo is reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The log file.
    path: String,
    /// Set by `kvs --repair-log`. Accept it even if, like this logger, you have nothing
    /// to repair (replay here stops at the first unreadable line anyway).
    #[serde(default)]
    #[allow(dead_code)]
    repair: bool,
}

struct HexLog {
    file: File,
    path: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl TransactionLogger for HexLog {
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        let mut lines = String::new();
        for e in batch {
            let (key, value) = (hex(e.key.as_slice()), hex(e.value.as_slice()));
            lines.push_str(&format!("{} {} {key} {value}\n", e.sequence, e.kind.0));
        }
        self.file.write_all(lines.as_bytes())?;
        self.file.sync_data()?; // durable before we return Ok
        Ok(())
    }

    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        for line in BufReader::new(File::open(&self.path)?).lines() {
            let line = line?;
            let f: Vec<&str> = line.split(' ').collect();
            let bad = || PluginError::internal(format!("{}: bad line {line:?}", self.path));
            let (seq, kind) = (
                f[0].parse().map_err(|_| bad())?,
                f[1].parse().map_err(|_| bad())?,
            );
            let (key, value) = (
                unhex(f[2]).ok_or_else(bad)?,
                unhex(f.get(3).unwrap_or(&"")).ok_or_else(bad)?,
            );
            sink(&[Event {
                sequence: seq,
                kind: EventKind(kind),
                key: key.as_slice().into(),
                value: value.as_slice().into(),
            }])?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), PluginError> {
        Ok(self.file.sync_all()?)
    }
}

fn open(config: &str) -> Result<HexLog, PluginError> {
    let config: Config = toml::from_str(config)
        .map_err(|e| PluginError::invalid_input(format!("[plugins.template-logger]: {e}")))?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.path)?;
    Ok(HexLog {
        file,
        path: config.path,
    })
}

export_plugin!(logger: open, name: "template-logger", description: "template: hex lines in a file");
