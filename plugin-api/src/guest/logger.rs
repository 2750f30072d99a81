//! WASM loggers: the [`Logger`] trait and what `export_wasm_logger!` generates.

use super::{Event, GuestError, frame};
use crate::EventKind;
use crate::wire::{self, Reader, Writer};

/// An event a logger owns (what [`Logger::replay`] returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEvent {
    /// Position in the log.
    pub sequence: u64,
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A transaction logger inside the sandbox. Same contract as the native
/// `TransactionLogger`: `append` returns only once the batch is durable.
pub trait Logger: Sized + Send + 'static {
    /// Opens the log; `config` is the plug-in's TOML table from `config.toml`.
    fn open(config: &str) -> Result<Self, GuestError>;
    /// Makes a batch durable, in order, as one unit.
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), GuestError>;
    /// Returns the next chunk of events from `cursor` (0 at the start) and the cursor to
    /// continue from, or `None` when this was the last chunk. Keep chunks coarse (e.g. a
    /// few thousand events): every call crosses the sandbox boundary.
    fn replay(&mut self, cursor: u64) -> Result<(Vec<OwnedEvent>, Option<u64>), GuestError>;
    /// Flushes and releases resources.
    fn close(&mut self) -> Result<(), GuestError>;
}

/// Runs one logger export against the instance's logger state.
#[doc(hidden)]
pub fn logger_call<L: Logger>(
    state: &std::sync::Mutex<Option<L>>,
    op: &str,
    input: &[u8],
) -> Vec<u8> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    frame((|| match op {
        "open" => {
            let config = std::str::from_utf8(input)
                .map_err(|_| GuestError::invalid_input("config is not UTF-8"))?;
            *state = Some(L::open(config)?);
            Ok(Vec::new())
        }
        _ => {
            let logger = state
                .as_mut()
                .ok_or_else(|| GuestError::internal("logger used before open"))?;
            match op {
                "append" => {
                    let events = wire::decode_events(&mut Reader::new(input))
                        .map_err(|e| GuestError::invalid_input(e.to_string()))?;
                    logger.append(&events)?;
                    Ok(Vec::new())
                }
                "replay" => {
                    let cursor = Reader::new(input)
                        .u64()
                        .map_err(|e| GuestError::invalid_input(e.to_string()))?;
                    let (events, next) = logger.replay(cursor)?;
                    let mut w = Writer::default();
                    w.u64(next.unwrap_or(0)).u8(next.is_none() as u8);
                    wire::encode_events(
                        &mut w,
                        events.iter().map(|e| Event {
                            sequence: e.sequence,
                            kind: e.kind,
                            key: &e.key,
                            value: &e.value,
                        }),
                    );
                    Ok(w.0)
                }
                _ => {
                    logger.close()?;
                    *state = None;
                    Ok(Vec::new())
                }
            }
        }
    })())
}

/// Exports a WASM logger: `export_wasm_logger!(MyLogger, name: "wal", description: "...",
/// capabilities: ["fs:data-dir"]);`
#[macro_export]
macro_rules! export_wasm_logger {
    ($logger:ty, name: $name:literal, description: $desc:literal $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        static __KVS_LOGGER: ::std::sync::Mutex<Option<$logger>> = ::std::sync::Mutex::new(None);

        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_handshake() -> i32 {
            $crate::guest::respond($crate::guest::handshake(
                $crate::PluginKind::LOGGER, $name, env!("CARGO_PKG_VERSION"), $desc, &[$($($cap),*)?],
            ))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_open() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "open", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_append() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "append", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_replay() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "replay", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_logger_close() -> i32 {
            $crate::guest::respond($crate::guest::logger_call(&__KVS_LOGGER, "close", &[]))
        }
        $crate::__kvs_direct_exports!(
            |export: &$crate::wasm_abi::GuestExport, input: &[u8], out: &mut Vec<u8>| {
                let op = match export.name {
                    "kvs_logger_open" => "open",
                    "kvs_logger_append" => "append",
                    "kvs_logger_replay" => "replay",
                    "kvs_logger_close" => "close",
                    _ => return false,
                };
                *out = $crate::guest::logger_call(&__KVS_LOGGER, op, input);
                true
            }
        );
    };
}
