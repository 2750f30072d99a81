//! The kvs host: owns the store and runs the plug-ins that reach it.
//!
//! # Layout
//!
//! * [`check`]: `kvs plugins check`, the contract's behavioural checks on one file.
//! * [`config`]: the config file, `KVS_*` environment and flags, resolved into [`config::Config`].
//! * [`plugins`]: scans the plugins directory, handshakes each file, finds plug-ins by name.
//! * [`store`]: the sharded in-memory map, with limits and readiness.
//! * [`writer`]: the single writer thread: group commit, log-then-apply; and replay.
//! * [`lifecycle`]: start (logger, replay, writer, frontends) and graceful stop.
//! * [`wasm`]: `.wasm` plug-ins (Extism): handshake, sandbox, logger and HTTP frontend adapters.
//!
//! `main.rs` is the CLI around these: parse flags, start, wait for SIGTERM/SIGINT, stop.

pub mod check;
pub mod config;
pub mod lifecycle;
pub mod plugins;
pub mod store;
pub mod wasm;
pub mod writer;
