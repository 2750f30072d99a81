//! A `.wasm` logger behind the native logger port: one instance, reopened after a trap.
//!
//! Its replay is bounded: each chunk by `call_timeout_ms`, the progress of the loop by
//! its cursor (it must increase; at most `MAX_EMPTY_REPLAY_CHUNKS` empty chunks in a
//! row), events delivered twice by the writer's sequence check, and the whole by
//! `replay_timeout_ms`: a guest that replays new events forever fails start-up within
//! `replay_timeout_ms` + one chunk.

use super::module::Source;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::direct::Instance;
use kvs_plugin_api::wire::{self, Reader, Writer};
use kvs_plugin_api::{Event, PluginError};

use super::dir_lock::DirLock;
use super::module::{CallError, Compiled, call, compile, instance, metered_call};
use super::sandbox::Sandbox;
use crate::metrics::WasmMeter;
use crate::ports::{HealthCheck, Log};

/// Consecutive empty non-final replay chunks after which a guest's replay is declared
/// stuck.
const MAX_EMPTY_REPLAY_CHUNKS: u32 = 1000;

/// A `.wasm` logger behind the native logger port.
struct WasmLogger {
    name: String,
    compiled: Compiled,
    guest_config: String,
    /// The one instance holding the logger's state; `None` after a trap, reopened on
    /// the next call.
    instance: Option<Instance>,
    /// Where its guest calls are counted.
    meter: Option<Arc<WasmMeter>>,
    /// The granted directory (host path), synced after each `open`.
    data_dir: Option<std::path::PathBuf>,
    /// The granted directory's lock while the logger is open (`dir_lock`): a second
    /// kvs (or `kvs restore`) given the same directory or a hard link to its log is
    /// refused instead of writing into the same log.
    lock: Option<DirLock>,
    /// Who handed a lock over at `close` (`dir_lock`).
    id: u64,
    /// Longest the whole replay may take (`replay_timeout_ms`).
    replay_timeout: Duration,
}

impl WasmLogger {
    /// A fresh instance with the guest's `open` run on it: at start-up, and after a
    /// trap discarded the previous one.
    fn reopen(&mut self) -> Result<(), PluginError> {
        let mut fresh = instance(&self.compiled)?;
        call(&mut fresh, "kvs_logger_open", self.guest_config.as_bytes()).map_err(|e| {
            let e = e.into_error();
            PluginError::new(
                e.code(),
                format!("WASM logger {}: {}", self.name, e.message()),
            )
        })?;
        // The guest cannot fsync a directory (WASI gives it no right to), so a log file
        // its `open` created would not be a durable name: a power loss could take the
        // whole log, acknowledged writes and all (found by the crash-state test). The
        // host syncs the granted directory for it.
        if let Some(lock) = &mut self.lock {
            lock.cover_files(&self.name)?;
        }
        if let Some(dir) = &self.data_dir {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| {
                    PluginError::unavailable(format!(
                        "WASM logger {}: cannot fsync its data_dir {}: {e}",
                        self.name,
                        dir.display()
                    ))
                })?;
        }
        self.instance = Some(fresh);
        Ok(())
    }

    fn call(&mut self, func: &str, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        if self.instance.is_none() {
            self.reopen()?;
        }
        let plugin = self.instance.as_mut().expect("just ensured");
        match metered_call(plugin, func, input, self.meter.as_deref()) {
            Ok(out) => Ok(out),
            Err(CallError::Guest(e)) => Err(e),
            Err(failed) => {
                self.instance = None;
                let e = failed.into_error();
                Err(PluginError::new(
                    e.code(),
                    format!(
                        "WASM logger {}: {}; instance discarded",
                        self.name,
                        e.message()
                    ),
                ))
            }
        }
    }
}

impl Log for WasmLogger {
    fn health(&self) -> Option<HealthCheck> {
        None
    }

    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        let mut w = Writer::default();
        wire::encode_events(
            &mut w,
            batch.iter().map(|e| wire::Event {
                sequence: e.sequence,
                kind: e.kind,
                key: e.key.as_slice(),
                value: e.value.as_slice(),
            }),
        );
        self.call("kvs_logger_append", &w.0).map(drop)
    }

    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let mut cursor = 0u64;
        let mut empty_chunks = 0u32;
        let (started, mut delivered, mut chunks) = (Instant::now(), 0u64, 0u64);
        loop {
            let out = self.call("kvs_logger_replay", &cursor.to_le_bytes())?;
            let mut r = Reader::new(&out);
            let parsed = (|| {
                Ok::<_, wire::WireError>((r.u64()?, r.u8()? != 0, wire::decode_events(&mut r)?))
            })();
            let (next, done, events) =
                parsed.map_err(|e| PluginError::internal(format!("replay: {e}")))?;
            let native: Vec<Event<'_>> = events
                .iter()
                .map(|e| Event {
                    sequence: e.sequence,
                    kind: e.kind,
                    key: e.key.into(),
                    value: e.value.into(),
                })
                .collect();
            sink(&native)?;
            if done {
                return Ok(());
            }
            delivered += native.len() as u64;
            chunks += 1;
            // Progress is not enough: a guest can hand out new events forever.
            if started.elapsed() > self.replay_timeout {
                return Err(PluginError::unavailable(format!(
                    "WASM logger {}: replay did not finish within replay_timeout_ms = {} \
                     ({delivered} events in {chunks} chunks, cursor at {next}); if the log is \
                     really that long, raise replay_timeout_ms in [plugins.{}]",
                    self.name,
                    self.replay_timeout.as_millis(),
                    self.name
                )));
            }
            // The per-call timeout bounds each chunk, not the loop: a guest whose cursor
            // never moves on, or that returns empty chunks forever, would hang start-up.
            empty_chunks = if native.is_empty() {
                empty_chunks + 1
            } else {
                0
            };
            if next <= cursor || empty_chunks > MAX_EMPTY_REPLAY_CHUNKS {
                return Err(PluginError::internal(format!(
                    "WASM logger {}: replay is not making progress (cursor {cursor} -> {next}, \
                     {empty_chunks} empty chunk(s) in a row): a replay cursor must increase \
                     and chunks must carry events; the guest's replay is broken",
                    self.name
                )));
            }
            cursor = next;
        }
    }

    fn close(&mut self) -> Result<(), PluginError> {
        let closed = if self.instance.is_none() {
            Ok(())
        } else {
            self.call("kvs_logger_close", &[]).map(drop)
        };
        self.instance = None;
        // Kept for a live swap's next logger on this directory until this one drops.
        if let Some(lock) = self.lock.take() {
            lock.hand_over(self.id);
        }
        closed
    }
}

/// Opens a `.wasm` logger with its table.
pub fn open_logger<'a>(
    module: impl Into<Source<'a>>,
    name: &str,
    table: &str,
    meter: Option<Arc<WasmMeter>>,
) -> Result<Box<dyn Log>, PluginError> {
    let (sandbox, guest_config) = Sandbox::split(table)?;
    let compiled = compile(module.into(), name, &sandbox, None).map_err(PluginError::internal)?;
    let lock = match &sandbox.data_dir {
        Some(dir) => Some(DirLock::acquire(name, dir)?),
        None => None,
    };
    let mut logger = WasmLogger {
        name: name.to_string(),
        compiled,
        guest_config,
        instance: None,
        meter,
        data_dir: sandbox.data_dir.clone(),
        lock,
        id: super::dir_lock::next_id(),
        replay_timeout: Duration::from_millis(sandbox.replay_timeout_ms),
    };
    // Open now, so a bad config or a missing grant fails start-up, not the first write.
    logger.reopen()?;
    Ok(Box::new(logger))
}

impl Drop for WasmLogger {
    fn drop(&mut self) {
        DirLock::release(self.id);
    }
}
