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
//! * [`export_plugin!`] generates the native (`.so`) exports: the handshake static, the
//!   abi_stable root module ([`native::PluginMod`], 1.0) and the 1.1 and 1.3 entry
//!   points ([`native::v1_1::Exports`], [`native::v1_3::Exports`]), with panics caught
//!   at the boundary.
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
pub mod version;
pub mod versioning;
pub mod wire;

#[cfg(all(test, feature = "native"))]
mod tests;

pub use context::{Consistency, RequestContext};
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
pub use version::{API_MAJOR, API_MINOR};

/// Re-exported so generated code and hosts use the same version as this crate.
#[cfg(feature = "native")]
pub use abi_stable;

/// Exports a native plug-in: its [`Handshake`] static, its abi_stable root module (the
/// 1.0 entry points), its `KVS_PLUGIN_V1_1` static (the 1.1 entry points: they hand the
/// plug-in its host services) and its `KVS_PLUGIN_V1_3` static (the 1.3 entry points: a
/// store that answers [`Store::stats`]). A host uses the newest it knows.
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
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::LoggerBox, $crate::PluginError> {
            $crate::native::open_logger_with(config, $open)
        }

        extern "C" fn __kvs_open_logger_v1_1(
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::LoggerBox, $crate::PluginError> {
            $crate::native::v1_1::open_logger_with(config, host, $open)
        }

        extern "C" fn __kvs_open_logger_v1_3(
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::LoggerBox, $crate::PluginError> {
            $crate::native::v1_3::open_logger_with(config, host, $open)
        }

        $crate::export_plugin!(@root __kvs_open_logger, $crate::native::not_a_frontend);
        $crate::export_plugin!(@v1_1 __kvs_open_logger_v1_1, $crate::native::v1_1::not_a_frontend);
        $crate::export_plugin!(@v1_3 __kvs_open_logger_v1_3, $crate::native::v1_3::not_a_frontend);
    };
    (shared_logger: $open:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_plugin!(@handshake LOGGER, $name, $desc, ["log:shared" $($(, $cap)*)?]);

        extern "C" fn __kvs_open_logger(
            config: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::LoggerBox, $crate::PluginError> {
            $crate::native::v1_3::shared_only(config)
        }

        extern "C" fn __kvs_open_logger_v1_1(
            config: $crate::abi_stable::std_types::RStr<'_>,
            _host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::LoggerBox, $crate::PluginError> {
            $crate::native::v1_3::shared_only(config)
        }

        extern "C" fn __kvs_open_shared_logger(
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::v1_3::SharedLoggerBox, $crate::PluginError> {
            $crate::native::v1_3::open_shared_logger_with(config, host, $open)
        }

        $crate::export_plugin!(@root __kvs_open_logger, $crate::native::not_a_frontend);
        $crate::export_plugin!(@v1_1 __kvs_open_logger_v1_1, $crate::native::v1_1::not_a_frontend);
        $crate::export_plugin!(@v1_3 __kvs_open_logger_v1_1, $crate::native::v1_3::not_a_frontend, __kvs_open_shared_logger);
    };
    (frontend: $start:path, name: $name:literal, description: $desc:literal
     $(, capabilities: [$($cap:literal),* $(,)?])? $(,)?) => {
        $crate::export_plugin!(@handshake FRONTEND, $name, $desc, [$($($cap),*)?]);

        extern "C" fn __kvs_start_frontend(
            store: $crate::native::StoreBox,
            config: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::FrontendBox, $crate::PluginError> {
            $crate::native::start_frontend_with(store, config, $start)
        }

        extern "C" fn __kvs_start_frontend_v1_1(
            store: $crate::native::v1_1::StoreBox,
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::FrontendBox, $crate::PluginError> {
            $crate::native::v1_1::start_frontend_with(store, config, host, $start)
        }

        extern "C" fn __kvs_start_frontend_v1_3(
            store: $crate::native::v1_3::StoreBox,
            config: $crate::abi_stable::std_types::RStr<'_>,
            host: $crate::native::v1_1::HostBox,
        ) -> $crate::abi_stable::std_types::RResult<$crate::native::FrontendBox, $crate::PluginError> {
            $crate::native::v1_3::start_frontend_with(store, config, host, $start)
        }

        $crate::export_plugin!(@root $crate::native::not_a_logger, __kvs_start_frontend);
        $crate::export_plugin!(@v1_1 $crate::native::v1_1::not_a_logger, __kvs_start_frontend_v1_1);
        $crate::export_plugin!(@v1_3 $crate::native::v1_1::not_a_logger, __kvs_start_frontend_v1_3);
    };
    (@v1_3 $open_logger:path, $start_frontend:path) => {
        $crate::export_plugin!(@v1_3 $open_logger, $start_frontend, $crate::native::v1_3::not_a_shared_logger);
    };
    (@v1_3 $open_logger:path, $start_frontend:path, $open_shared:path) => {
        /// The plugin-api 1.3 entry points, read by hosts of 1.3 and later.
        #[unsafe(no_mangle)]
        pub static KVS_PLUGIN_V1_3: $crate::native::v1_3::Exports =
            $crate::native::v1_3::Exports::new($crate::native::v1_3::Module {
                open_logger: $open_logger,
                start_frontend: $start_frontend,
                open_shared_logger: $open_shared,
            });
    };
    (@v1_1 $open_logger:path, $start_frontend:path) => {
        /// The plugin-api 1.1 entry points, read by hosts of 1.1 and later.
        #[unsafe(no_mangle)]
        pub static KVS_PLUGIN_V1_1: $crate::native::v1_1::Exports =
            $crate::native::v1_1::Exports::new($crate::native::v1_1::Module {
                open_logger: $open_logger,
                start_frontend: $start_frontend,
            });
    };
    (@root $open_logger:path, $start_frontend:path) => {
        fn __kvs_root_module() -> $crate::native::PluginModRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::native::PluginMod {
                open_logger: $open_logger,
                start_frontend: $start_frontend,
            }
            .leak_into_prefix()
        }

        // What abi_stable's `#[export_root_module]` generates, spelled out with `$crate`
        // paths so that a plug-in needs no direct abi_stable dependency. The symbol name
        // is abi_stable 0.11's `ROOT_MODULE_LOADER_NAME` (a unit test pins it).
        /// The abi_stable library header: the loader's entry point to the root module.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            extern "C" fn __kvs_erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(__kvs_root_module)
            }
            // SAFETY: the constructor returns a PluginModRef, the module type named here.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::native::PluginModRef>(
                    __kvs_erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
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
