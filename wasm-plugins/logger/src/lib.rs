//! `wasm-log`: a transaction logger inside the WASM sandbox.
//!
//! Each batch is one frame in `/data/wasm.log` (the directory the operator grants with
//! `data_dir`): `len:u32 crc32c:u32 events` in the wire format, then `fdatasync`. Replay
//! reads the frames; a torn or damaged last frame (a crash mid-write) is cut off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use kvs_plugin_api::export_wasm_logger;
use kvs_plugin_api::guest::{DATA_DIR, Event, GuestError, Logger, OwnedEvent};
use kvs_plugin_api::wire::{self, Reader, Writer};

const CHUNK: usize = 4096;

struct WasmLog {
    file: File,
    /// Events read at the first replay call, handed out a chunk at a time.
    replay: Option<Vec<OwnedEvent>>,
}

impl Logger for WasmLog {
    fn open(_config: &str) -> Result<Self, GuestError> {
        let path = format!("{DATA_DIR}/wasm.log");
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| {
                GuestError::invalid_input(format!("cannot open {path}: {e} (is data_dir granted?)"))
            })?;
        Ok(WasmLog { file, replay: None })
    }

    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), GuestError> {
        let mut body = Writer::default();
        wire::encode_events(&mut body, batch.iter().copied());
        let mut frame = Vec::with_capacity(body.0.len() + 8);
        frame.extend_from_slice(&(body.0.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&body.0).to_le_bytes());
        frame.extend_from_slice(&body.0);
        self.file.write_all(&frame)?;
        self.file.sync_data()?;
        Ok(())
    }

    fn replay(&mut self, cursor: u64) -> Result<(Vec<OwnedEvent>, Option<u64>), GuestError> {
        if self.replay.is_none() {
            self.replay = Some(self.read_all()?);
        }
        let all = self.replay.as_ref().unwrap();
        let start = cursor as usize;
        let end = (start + CHUNK).min(all.len());
        let chunk = all[start.min(end)..end].to_vec();
        let next = (end < all.len()).then_some(end as u64);
        if next.is_none() {
            self.replay = None; // free it: replay happens once
        }
        Ok((chunk, next))
    }

    fn close(&mut self) -> Result<(), GuestError> {
        self.file.sync_all()?;
        Ok(())
    }
}

impl WasmLog {
    fn read_all(&mut self) -> Result<Vec<OwnedEvent>, GuestError> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        let mut events = Vec::new();
        let mut at = 0usize;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            let Some(body) = bytes.get(at + 8..at + 8 + len) else {
                break;
            };
            if crc32c::crc32c(body) != crc {
                break;
            }
            let decoded = wire::decode_events(&mut Reader::new(body))
                .map_err(|e| GuestError::internal(format!("frame at {at}: {e}")))?;
            events.extend(decoded.into_iter().map(|e| OwnedEvent {
                sequence: e.sequence,
                kind: e.kind,
                key: e.key.to_vec(),
                value: e.value.to_vec(),
            }));
            at += 8 + len;
        }
        if at < bytes.len() {
            // A frame cut short or damaged at the end: never acknowledged, so drop it.
            self.file.set_len(at as u64)?;
            self.file.sync_all()?;
        }
        Ok(events)
    }
}

export_wasm_logger!(
    WasmLog,
    name: "wasm-log",
    description: "checksummed batches in a granted directory, synced per batch (WASM)",
    // It stores every event kind as it came and replays it unchanged, so deadlines
    // (PUT_UNTIL, plugin-api 1.4) too.
    capabilities: ["fs:data-dir", "log:expiry"],
);
