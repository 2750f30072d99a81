//! Template: a minimal native logger. One line per event, `sequence kind key value`
//! with key and value in hex, fsynced once per batch. Its config table has one key,
//! `path` (plus `repair`, which `kvs --repair-log` adds to every logger's table). Simple,
//! not fast: see `plugins/file` for a production logger.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use kvs_plugin_api::{Event, EventKind, PluginError, TransactionLogger, export_plugin, log};
use serde::Deserialize;

/// This logger's table. Unknown keys are refused, so a typo is reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The log file.
    path: String,
    /// Set by `kvs --repair-log`: cut the log at an unreadable line (losing what
    /// follows) instead of refusing to start. Every logger must accept it.
    #[serde(default)]
    repair: bool,
}

struct HexLog {
    file: File,
    path: String,
    repair: bool,
}

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
        let mut reader = BufReader::new(File::open(&self.path)?);
        let (mut line, mut offset) = (Vec::new(), 0u64);
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            // Every line ends with its newline, written last: one without it was torn
            // by a crash during an append whose fsync never returned, so its batch was
            // never acknowledged. Cut it off, so the next append starts a whole line.
            if line.last() != Some(&b'\n') {
                log::warn(&format!(
                    "{}: torn last line cut off at byte {offset}",
                    self.path
                ));
                return self.cut_at(offset);
            }
            let Some((sequence, kind, key, value)) = parse(&line[..n - 1]) else {
                // A whole line that does not parse is damage, not a crash: never guess
                // what it said (and never replay what was not written).
                if self.repair {
                    log::warn(&format!(
                        "{}: repair: unreadable line at byte {offset}; cut there, losing it \
                         and everything after it",
                        self.path
                    ));
                    return self.cut_at(offset);
                }
                return Err(PluginError::internal(format!(
                    "{}: unreadable line at byte {offset}: {:?}; start kvs with --repair-log \
                     to cut the log there (losing that line and everything after it)",
                    self.path,
                    String::from_utf8_lossy(&line)
                )));
            };
            sink(&[Event {
                sequence,
                kind: EventKind(kind),
                key: key.as_slice().into(),
                value: value.as_slice().into(),
            }])?;
            offset += n as u64;
        }
    }

    fn close(&mut self) -> Result<(), PluginError> {
        Ok(self.file.sync_all()?)
    }
}

impl HexLog {
    /// Truncates the log at `offset` (a torn or, with `repair`, a damaged tail), durably.
    fn cut_at(&mut self, offset: u64) -> Result<(), PluginError> {
        self.file.set_len(offset)?;
        Ok(self.file.sync_all()?)
    }
}

/// `sequence kind key value`: exactly four fields, numbers and even-length hex.
fn parse(line: &[u8]) -> Option<(u64, u8, Vec<u8>, Vec<u8>)> {
    let line = std::str::from_utf8(line).ok()?;
    let f: Vec<&str> = line.split(' ').collect();
    let [sequence, kind, key, value] = f.as_slice() else {
        return None;
    };
    Some((
        sequence.parse().ok()?,
        kind.parse().ok()?,
        unhex(key)?,
        unhex(value)?,
    ))
}

fn open(config: &str) -> Result<HexLog, PluginError> {
    let config: Config = toml::from_str(config)
        .map_err(|e| PluginError::invalid_input(format!("[plugins.template-logger]: {e}")))?;
    let path = Path::new(&config.path);
    let existed = path.exists();
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if !existed {
        // A new file's name is durable only once its directory is synced: without
        // this, a crash could lose the whole log after its first acknowledged write.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(HexLog {
        file,
        path: config.path,
        repair: config.repair,
    })
}

export_plugin!(logger: open, name: "template-logger", description: "template: hex lines in a file");

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(dir: &Path, repair: bool) -> HexLog {
        let path = dir.join("log");
        open(&format!(
            "path = {:?}\nrepair = {repair}",
            path.display().to_string()
        ))
        .unwrap()
    }

    /// Sequence, key, value.
    type Record = (u64, Vec<u8>, Vec<u8>);

    fn replayed(log: &mut HexLog) -> Result<Vec<Record>, PluginError> {
        let mut got = Vec::new();
        log.replay(&mut |events: &[Event<'_>]| {
            for e in events {
                got.push((e.sequence, e.key.to_vec(), e.value.to_vec()));
            }
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn a_torn_last_line_is_cut_off_never_replayed_as_a_shorter_one() {
        for torn in ["2 1 6b", "2 1 6b6", "2", "2 1 6b 7"] {
            let dir = std::env::temp_dir().join(format!("kvs-template-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut log = logger(&dir, false);
            log.append(&[Event::put(1, b"k", b"v")]).unwrap();
            // A crash in the middle of the next append's line.
            std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("log"))
                .unwrap()
                .write_all(torn.as_bytes())
                .unwrap();
            let mut log = logger(&dir, false);
            let got = replayed(&mut log).unwrap();
            assert_eq!(got, [(1, b"k".to_vec(), b"v".to_vec())], "{torn:?}");
            // The next append follows a whole line.
            log.append(&[Event::put(2, b"k2", b"w")]).unwrap();
            assert_eq!(
                replayed(&mut logger(&dir, false)).unwrap().len(),
                2,
                "{torn:?}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_damaged_whole_line_is_refused_unless_repair_cuts_it() {
        let dir = std::env::temp_dir().join(format!("kvs-template-d-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = logger(&dir, false);
        log.append(&[Event::put(1, b"k", b"v")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("log"))
            .unwrap()
            .write_all(b"2 1 6b\n3 1 6c 77\n")
            .unwrap();
        let refused = replayed(&mut logger(&dir, false)).unwrap_err();
        assert!(refused.message().contains("--repair-log"), "{refused}");
        let got = replayed(&mut logger(&dir, true)).unwrap();
        assert_eq!(got, [(1, b"k".to_vec(), b"v".to_vec())]);
        assert_eq!(
            replayed(&mut logger(&dir, false)).unwrap().len(),
            1,
            "cut for good"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
