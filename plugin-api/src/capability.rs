//! Capability strings a plug-in may list in its handshake: what it asks of the host, or
//! what it promises. Unknown ones are ignored, so a minor version may add more.

/// A WASM logger asks for the directory the operator grants (`data_dir`), mounted at
/// `/data` in the sandbox.
pub const FS_DATA_DIR: &str = "fs:data-dir";

/// A WASM frontend in HTTP mode (the host owns the listener and calls its handler per
/// request). Every WASM frontend declares it; `export_wasm_http_frontend!` does.
pub const FRONTEND_HTTP: &str = "frontend:http";

/// A frontend that serves the book's REST API at its first endpoint: `PUT`, `GET` and
/// `DELETE /v1/key/{key}` answered 201, 200 / 404 and 200. `kvs plugins check` then
/// round-trips a key through it (1.2). Frontends that speak something else declare no
/// protocol and are checked for start, endpoint and stop only.
pub const PROTOCOL_KVS_REST: &str = "protocol:kvs-rest";

/// A WASM frontend in stream mode (1.3): the host owns a TCP listener and hands the
/// guest each connection's bytes (`kvs_stream_open`, `kvs_stream_data`,
/// `kvs_stream_close`), so a sandboxed plug-in can speak any protocol.
/// `export_wasm_stream_frontend!` declares it.
pub const FRONTEND_STREAM: &str = "frontend:stream";

/// A frontend that speaks the Redis protocol (RESP) at its first endpoint, at least
/// `PING`, `GET`, `SET` and `DEL` (1.3). `kvs plugins check` then round-trips a key
/// through it.
pub const PROTOCOL_RESP: &str = "protocol:resp";

/// A logger whose log other writers share (1.3): it implements
/// [`SharedLog`](crate::SharedLog), exported with `export_plugin!(shared_logger: ...)`,
/// which declares this for it. The host then applies writes only as the log delivers
/// them.
pub const LOG_SHARED: &str = "log:shared";

/// A logger that stores expiry deadlines (1.4): it accepts
/// [`EventKind::PUT_UNTIL`](crate::EventKind::PUT_UNTIL) events and replays them
/// unchanged. The host refuses a write with a deadline when its logger does not declare
/// this (a logger built against an older minor cannot), rather than make it permanent.
pub const LOG_EXPIRY: &str = "log:expiry";

/// A shared log that appends conditionally (1.4): it honours an
/// [`EventKind::EXPECT`](crate::EventKind::EXPECT) leading a batch, and fails the append
/// with [`ErrorCode::CONFLICT`](crate::ErrorCode::CONFLICT) when the key has moved. Over
/// such a log a kvs cluster serves atomic operations; over one without it they are
/// refused.
pub const LOG_CONDITIONAL: &str = "log:conditional";

/// A logger whose `append` is all or none (1.6): after a crash, replay hands back
/// either every event of a batch or none of it, never a part. The host writes a
/// [`Transaction`](crate::Transaction) that changes more than one key only to such a
/// logger, in one batch, and refuses it otherwise. A database logger that appends a
/// batch in one database transaction has it; a file needs a batch framing (the `file`
/// logger's format 2). A shared log ([`LOG_SHARED`]) that declares it also honours
/// every [`EventKind::EXPECT`](crate::EventKind::EXPECT) leading a batch, not only the
/// first — each comparing its own key, the batch appended only if all hold — which is
/// what a transaction over a cluster needs.
pub const LOG_ATOMIC_BATCH: &str = "log:atomic_batch";

/// A frontend that commits its own writes (1.7): the host queues its writes without
/// waking its writer thread, and the frontend calls [`Store::commit`](crate::Store::commit)
/// once its connections have run what they had, so that the writes of all of them share
/// one append made on its thread, with no wake-up of another thread per write. For an
/// event loop serving many connections per thread (the `resp` frontend); a frontend
/// that does not declare it needs nothing new.
pub const FRONTEND_COMMITS: &str = "frontend:commits";
