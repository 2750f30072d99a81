//! The Redis protocol (RESP) as kvs speaks it, for both of its Redis frontends: the
//! native `resp` plug-in and the `wasm-resp` guest. Protocol only — no I/O, no store.
//!
//! * [`Decoder`]: client bytes -> commands. Streaming (a command may arrive in any number
//!   of pieces) and bounded: a bulk string over the configured limit is skipped as it
//!   arrives, never buffered, and answered with an error ([`Decoded::TooLarge`]) while
//!   the connection carries on; bytes that cannot be RESP (a malformed header, a length
//!   no Redis accepts) are a [`ProtocolError`], after which the connection must be
//!   closed, as Redis does, because the stream cannot be resynchronised.
//! * [`Reply`]: server replies, encoded for RESP2 or RESP3.
//! * [`commands`]: the command table kvs answers `COMMAND` from, and [`execute`], which
//!   runs one command against a [`Backend`] (the store as a frontend reaches it).
//!
//! Why not the `redis-protocol` crate: its decoder buffers a frame until complete, so it
//! would hold a 1 GiB length claim's bytes before anyone could refuse them; enforcing the
//! limits needs the header-by-header walk this decoder is.

pub mod commands;
mod decode;
mod reply;

pub use commands::{Backend, ErrorKind, Flow, Render, ServerInfo, Session, StoreError, execute};
pub use decode::{Decoded, Decoder, Limits, ProtocolError, recycle};
pub use reply::{Protocol, Reply};
