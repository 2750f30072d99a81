//! WASM stream frontends (1.3): [`StreamConnection`] and what
//! `export_wasm_stream_frontend!` generates.

use super::{GuestError, frame};
use crate::wire::{self, Reader};

/// One client connection of a stream frontend (1.3): the guest's per-connection state.
pub trait StreamConnection: Sized + Send + 'static {
    /// A client connected; `context` is what the host knows of it (its peer address).
    /// An error refuses the connection (the host closes it).
    fn open(context: &crate::RequestContext) -> Result<Self, GuestError>;
    /// `input` arrived from the client (the next bytes of its stream, split anywhere).
    /// Append the reply bytes, if any, to `output`; return [`Flow::Close`] to close the
    /// connection once `output` is sent.
    fn data(&mut self, input: &[u8], output: &mut Vec<u8>) -> Flow;
    /// The connection is gone (either side closed it). Nothing can be sent any more.
    fn close(self) {}
}

/// Whether a stream connection stays open after a [`StreamConnection::data`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Send the output, then close.
    Close,
}

/// The live connections of a stream frontend, by the host's connection id.
#[doc(hidden)]
pub type Connections<C> = std::sync::Mutex<std::collections::BTreeMap<u64, C>>;

/// Runs a stream frontend export: `open`, `data` or `close`.
#[doc(hidden)]
pub fn stream_call<C: StreamConnection>(
    connections: &Connections<C>,
    op: &str,
    input: &[u8],
) -> Vec<u8> {
    frame((|| {
        let bad = |e: wire::WireError| GuestError::invalid_input(e.to_string());
        let mut r = Reader::new(input);
        let conn = r.u64().map_err(bad)?;
        let mut connections = connections.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            "open" => {
                let context = wire::decode_context(&mut r).map_err(bad)?;
                connections.insert(conn, C::open(&context)?);
                Ok(Vec::new())
            }
            "data" => {
                let data = r.bytes().map_err(bad)?;
                let connection = connections
                    .get_mut(&conn)
                    .ok_or_else(|| GuestError::invalid_input(format!("no connection {conn}")))?;
                let mut output = wire::StreamOutput::default();
                output.close = connection.data(data, &mut output.data) == Flow::Close;
                Ok(output.encode())
            }
            _ => {
                if let Some(connection) = connections.remove(&conn) {
                    connection.close();
                }
                Ok(Vec::new())
            }
        }
    })())
}

/// Exports a WASM stream frontend (1.3): `export_wasm_stream_frontend!(MyConnection,
/// name: "wasm-resp", description: "...");` where `MyConnection: StreamConnection`.
/// Capabilities listed after the description (e.g. `protocol:resp`) are declared too.
#[macro_export]
macro_rules! export_wasm_stream_frontend {
    ($connection:ty, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        static __KVS_CONNECTIONS: $crate::guest::Connections<$connection> =
            ::std::sync::Mutex::new(::std::collections::BTreeMap::new());

        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_handshake() -> i32 {
            $crate::guest::respond($crate::guest::handshake(
                $crate::PluginKind::FRONTEND,
                $name,
                env!("CARGO_PKG_VERSION"),
                $desc,
                &[$crate::capability::FRONTEND_STREAM $($(, $cap)*)?],
            ))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_stream_open() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::stream_call(&__KVS_CONNECTIONS, "open", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_stream_data() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::stream_call(&__KVS_CONNECTIONS, "data", &input))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn kvs_stream_close() -> i32 {
            let input = $crate::guest::extism_pdk::input_bytes();
            $crate::guest::respond($crate::guest::stream_call(&__KVS_CONNECTIONS, "close", &input))
        }
        $crate::__kvs_direct_exports!(
            |export: &$crate::wasm_abi::GuestExport, input: &[u8], out: &mut Vec<u8>| {
                let op = match export.name {
                    "kvs_stream_open" => "open",
                    "kvs_stream_data" => "data",
                    "kvs_stream_close" => "close",
                    _ => return false,
                };
                *out = $crate::guest::stream_call(&__KVS_CONNECTIONS, op, input);
                true
            }
        );
    };
}
