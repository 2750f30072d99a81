//! Template: a minimal WASM logger. One hex line per event in `/data/template.log` (the
//! directory the operator grants with `data_dir`), synced per batch; replay returns
//! everything in one chunk. See `wasm-plugins/logger` for a checksummed one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};

use kvs_plugin_api::guest::{DATA_DIR, Event, GuestError, Logger, OwnedEvent};
use kvs_plugin_api::{EventKind, export_wasm_logger};

struct HexLog(File);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Logger for HexLog {
    fn open(_config: &str) -> Result<Self, GuestError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{DATA_DIR}/template.log"))?;
        Ok(HexLog(file))
    }

    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), GuestError> {
        let lines: String = batch
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}\n",
                    e.sequence,
                    e.kind.0,
                    hex(e.key),
                    hex(e.value)
                )
            })
            .collect();
        self.0.write_all(lines.as_bytes())?;
        Ok(self.0.sync_data()?)
    }

    fn replay(&mut self, _cursor: u64) -> Result<(Vec<OwnedEvent>, Option<u64>), GuestError> {
        let mut events = Vec::new();
        let mut reader = BufReader::new(File::open(format!("{DATA_DIR}/template.log"))?);
        let (mut line, mut offset) = (Vec::new(), 0u64);
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            // The newline is written last: a line without it was torn by a crash during
            // an append that was never acknowledged. Cut it off, so the next append
            // starts a whole line (and it is never read as a shorter value).
            if line.last() != Some(&b'\n') {
                self.0.set_len(offset)?;
                self.0.sync_all()?;
                break;
            }
            let text = String::from_utf8_lossy(&line[..n - 1]).into_owned();
            let bad = || {
                GuestError::internal(format!(
                    "unreadable line at byte {offset}: {text:?}; the log is damaged"
                ))
            };
            let f: Vec<&str> = text.split(' ').collect();
            let [sequence, kind, key, value] = f.as_slice() else {
                return Err(bad());
            };
            events.push(OwnedEvent {
                sequence: sequence.parse().map_err(|_| bad())?,
                kind: EventKind(kind.parse().map_err(|_| bad())?),
                key: unhex(key).ok_or_else(bad)?,
                value: unhex(value).ok_or_else(bad)?,
            });
            offset += n as u64;
        }
        Ok((events, None)) // one chunk: fine for a template, not for a million events
    }

    fn close(&mut self) -> Result<(), GuestError> {
        Ok(self.0.sync_all()?)
    }
}

export_wasm_logger!(HexLog, name: "template-wasm-logger", description: "template: hex lines", capabilities: ["fs:data-dir"]);
