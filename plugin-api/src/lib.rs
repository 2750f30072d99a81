//! The contract between the `kvs` host and its plug-ins.
//!
//! kvs is a durable key-value service whose frontends (how clients reach it) and
//! transaction loggers (where its writes become durable) are plug-ins loaded at run time.
//! This crate is everything a plug-in author builds against; it does no I/O of its own.
//!
//! # Brief overview
//!
//! * A plug-in **declares itself** with a [`Handshake`]: magic tag, contract version,
//!   kind, name, version, description, capabilities. The host reads it first and refuses
//!   incompatible plug-ins (see [`versioning`]).
//! * A **logger** implements [`TransactionLogger`]: append a batch of sequenced
//!   [`Event`]s durably, replay them in order, close.
//! * A **shared logger** (1.3) implements [`SharedLog`]: a log other kvs nodes append
//!   to as well (e.g. etcd), delivered back to the host in log order through a
//!   [`Follower`]; the host applies writes only as they are delivered.
//! * A **frontend** implements [`Frontend`] and serves clients through the [`Store`] the
//!   host gives it: `get` from memory, `put`/`delete` resolving once durable.
//! * A frontend may pass the read [`Consistency`] a client asked for (1.3): it matters
//!   only when kvs nodes share a log.
//! * Frontends pass each call's [`RequestContext`] (credentials as presented, trace
//!   context, deadline, peer) so the host can decide for every frontend alike (1.1).
//! * Plug-ins log through the host with [`log`]: one `RUST_LOG`, one format, the
//!   plug-in's name on every line (1.1).
//! * Failures cross as [`PluginError`]: an [`ErrorCode`] to branch on, plus a message.
//! * [`export_plugin!`] generates the native (`.so`) exports: the handshake static and
//!   this generation's entry points ([`native::current::Module`]), with panics caught at
//!   the boundary.
//! * A frontend can ask the store how much it holds ([`Store::stats`], 1.3), and a WASM
//!   frontend can speak any protocol over TCP as a *stream* frontend (1.3; see `guest`).
//!
//! # A logger in full
//!
//! ```no_run
//! use kvs_plugin_api::{Event, PluginError, TransactionLogger, export_plugin};
//!
//! /// Keeps events in memory: fast, and forgets everything on exit.
//! struct Forgetful(Vec<(u64, u8, Vec<u8>, Vec<u8>)>);
//!
//! impl TransactionLogger for Forgetful {
//!     fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
//!         for e in batch {
//!             self.0.push((e.sequence, e.kind.0, e.key.to_vec(), e.value.to_vec()));
//!         }
//!         Ok(())
//!     }
//!     fn replay(
//!         &mut self,
//!         sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
//!     ) -> Result<(), PluginError> {
//!         Ok(()) // nothing survives a restart
//!     }
//!     fn close(&mut self) -> Result<(), PluginError> {
//!         Ok(())
//!     }
//! }
//!
//! fn open(_config: &str) -> Result<Forgetful, PluginError> {
//!     Ok(Forgetful(Vec::new()))
//! }
//!
//! export_plugin!(logger: open, name: "forgetful", description: "keeps nothing across restarts");
//! ```
//!
//! Build it as a `cdylib` (`[lib] crate-type = ["cdylib"]`) depending on this crate alone,
//! and drop the `.so` into the host's plugins directory. The repository's
//! `docs/writing-plugins.md` walks through native and WASM plug-ins, templates and
//! `kvs plugins check`.
//!
//! # Rules for native plug-ins
//!
//! * **Threads.** A logger is called from one host thread at a time. A frontend runs its
//!   own threads (its own tokio runtime if it wants one): runtimes do not cross the
//!   library boundary. [`Store`] methods may be called from any thread.
//! * **Panics** are caught by the generated wrappers and returned as
//!   [`ErrorCode::INTERNAL`]; a logger that panicked is never called again.
//! * **Trust.** Load-time checks (handshake, abi_stable layout checks) catch mistakes,
//!   not malice: a native plug-in runs with the host's privileges. Libraries are never
//!   unloaded.
#![deny(missing_docs)]

pub mod capability;
pub mod context;
pub mod error;
pub mod event;
#[cfg(feature = "guest")]
pub mod guest;
pub mod handshake;
pub mod log;
#[cfg(feature = "native")]
pub mod native;
#[cfg(feature = "native")]
pub mod ports;
#[cfg(feature = "native")]
pub mod store;
pub mod update;
pub mod version;
pub mod versioning;
pub mod wasm_abi;
pub mod wire;

#[cfg(all(test, feature = "native"))]
mod tests;

pub use context::{Action, Consistency, RequestContext};
pub use error::ErrorCode;
#[cfg(feature = "native")]
pub use error::PluginError;
#[cfg(feature = "native")]
pub use event::Event;
pub use event::EventKind;
#[cfg(feature = "native")]
pub use handshake::Handshake;
pub use handshake::PluginKind;
#[cfg(feature = "native")]
pub use native::Limits;
#[cfg(feature = "native")]
pub use ports::{Follower, Frontend, Health, SharedLog, TransactionLogger};
#[cfg(feature = "native")]
pub use store::Store;
pub use update::{Change, Condition, DeadlineCondition, Expiry, Outcome, Transaction, Update};
pub use version::{API_MAJOR, API_MINOR};

/// Re-exported so generated code and hosts use the same version as this crate.
#[cfg(feature = "native")]
pub use abi_stable;

/// Exports a native plug-in: its [`Handshake`] static and its entry points, the static
/// `KVS_PLUGIN_ENTRIES` (a [`native::Entries`] of this generation's
/// [`native::current::Module`]). Nothing of older generations: from plugin-api 1.4 a
/// plug-in exports its own generation only, and a host drives it through that one.
///
/// One per library. For a logger, pass a function `fn(&str) -> Result<L, PluginError>`
/// where `L: TransactionLogger`; for a shared logger (1.3, `shared_logger:`), one
/// returning an `L: SharedLog`; for a frontend, a function
/// `fn(Store, &str) -> Result<F, PluginError>` where `F: Frontend`. The `&str` is the
/// plug-in's own config table from `config.toml`, serialized as TOML (empty if none).
/// The plug-in's version is taken from its crate's `CARGO_PKG_VERSION`.
///
/// ```ignore
/// export_plugin!(logger: open, name: "file", description: "binary log file");
/// export_plugin!(frontend: start, name: "rest", description: "HTTP API",
///                capabilities: ["net:listen"]);
/// ```
#[cfg(feature = "native")]
#[macro_export]
macro_rules! export_plugin {
    (logger: $open:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_plugin!(@handshake LOGGER, $name, $desc, [$($($cap),*)?]);

        extern "C" fn __kvs_open_logger(
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::LoggerBox, $crate::PluginError> {
            $crate::native::export::open_logger(config, host, $open)
        }

        $crate::export_plugin!(@entries
            open_logger: __kvs_open_logger,
            open_shared_logger: $crate::native::export::not_a_shared_logger,
            start_frontend: $crate::native::export::not_a_frontend);
    };
    (shared_logger: $open:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_plugin!(@handshake LOGGER, $name, $desc, ["log:shared" $($(, $cap)*)?]);

        extern "C" fn __kvs_open_shared_logger(
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::v1_3::SharedLoggerBox, $crate::PluginError> {
            $crate::native::export::open_shared_logger(config, host, $open)
        }

        $crate::export_plugin!(@entries
            open_logger: $crate::native::export::shared_only,
            open_shared_logger: __kvs_open_shared_logger,
            start_frontend: $crate::native::export::not_a_frontend);
    };
    (frontend: $start:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_plugin!(@handshake FRONTEND, $name, $desc, [$($($cap),*)?]);

        extern "C" fn __kvs_start_frontend(
            store: $crate::native::current::StoreBox,
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::current::FrontendBox, $crate::PluginError> {
            $crate::native::export::start_frontend(store, config, host, $start)
        }

        $crate::export_plugin!(@entries
            open_logger: $crate::native::export::not_a_logger,
            open_shared_logger: $crate::native::export::not_a_shared_logger,
            start_frontend: __kvs_start_frontend);
    };
    (@entries open_logger: $open_logger:path, open_shared_logger: $open_shared:path,
     start_frontend: $start_frontend:path) => {
        /// This plug-in's entry points, read by the host after the handshake.
        #[unsafe(no_mangle)]
        pub static KVS_PLUGIN_ENTRIES: $crate::native::Entries<$crate::native::current::Module> =
            $crate::native::Entries::new($crate::native::current::Module {
                open_logger: $open_logger,
                open_shared_logger: $open_shared,
                start_frontend: $start_frontend,
            });
    };
    (@handshake $kind:ident, $name:literal, $desc:literal, [$($cap:literal),*]) => {
        /// This plug-in's handshake, read by the kvs host before anything else.
        #[unsafe(no_mangle)]
        pub static KVS_PLUGIN_HANDSHAKE: $crate::Handshake = $crate::Handshake::new(
            $crate::PluginKind::$kind,
            $name,
            env!("CARGO_PKG_VERSION"),
            $desc,
            &[$($crate::abi_stable::std_types::RStr::from_str($cap)),*],
        );
    };
}
