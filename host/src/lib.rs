//! The kvs host: owns the store and runs the plug-ins that reach it.
//!
//! # Layout
//!
//! * [`config`]: the config file, `KVS_*` environment and flags, resolved into [`config::Config`].
//! * [`plugins`]: scans the plugins directory, handshakes each file, finds plug-ins by name.
//! * [`store`]: the store frontends use: limits, readiness, the request hook.
//! * [`map`]: the sharded in-memory map, one allocation per entry.
//! * [`caller`]: who is calling (the request context frontends carry) and the
//!   [`caller::RequestHook`] that sees every frontend request first.
//! * [`access`]: that hook's one implementation: bearer tokens, client certificates,
//!   roles on key prefixes (`[auth]`).
//! * [`ports`]: the host's own traits for plug-ins (`Log`, `SharedLog`,
//!   `RunningFrontend`, `Entry`), which everything past the edge is written against.
//! * [`native`]: `.so` plug-ins: loading, and one adapter per contract generation
//!   (what each is handed: the store as its `StoreApi`, the host's services).
//! * [`write_request`]: a queued write and its completion, shared by store and writer.
//! * [`writer`]: the single writer thread: group commit, log-then-apply; and replay.
//! * [`lifecycle`]: start (logger, replay, writer, frontends) and graceful stop.
//! * [`metrics`]: what kvs counts (atomics on the hot path) and its Prometheus text.
//! * [`admin`]: the host's admin listener: `/metrics`, `/healthz`, `/readyz`, `/plugins`.
//! * [`telemetry`]: the log subscriber (text or JSON) and trace export over OTLP.
//! * [`wasm`]: `.wasm` plug-ins (Extism): handshake, sandbox, logger and HTTP frontend adapters.
//!
//! The `kvs` binary (`src/bin/kvs/`) is the CLI around these: parse flags, start, wait
//! for SIGTERM/SIGINT, stop; and its commands `kvs plugins check` and `kvs top`.

pub mod access;
pub mod admin;
pub mod backup;
pub mod caller;
pub mod config;
pub mod file_modes;
pub mod lifecycle;
pub mod map;
pub mod metrics;
pub mod native;
pub mod overload;
pub mod plugins;
pub mod ports;
pub mod rate_limit;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod wasm;
pub mod write_request;
pub mod writer;
