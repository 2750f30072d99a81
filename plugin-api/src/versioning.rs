//! The compatibility promise: what a version of this contract may change.
//!
//! The contract has its own version, [`API_MAJOR`](crate::API_MAJOR).[`API_MINOR`](crate::API_MINOR),
//! independent of kvs releases and of this crate's patch releases.
//!
//! **The rule.** A host loads a plug-in iff their majors are equal and the plug-in's minor
//! is at most the host's ([`check_compatible`](crate::version::check_compatible)). So a
//! plug-in built against 1.0 loads in every 1.x host, and a 1.3 plug-in is refused by a
//! 1.2 host with a message saying to upgrade kvs.
//!
//! **A minor version may only add:**
//! * new exported symbols beside `KVS_PLUGIN_HANDSHAKE` and the root module (e.g. a
//!   `KVS_PLUGIN_V1_1` entry point), which the host looks up only when the plug-in's
//!   `api_minor` says they exist;
//! * fields at the end of [`Handshake`](crate::Handshake), read likewise;
//! * new optional WASM exports and new wire-message fields at the end;
//! * new [`ErrorCode`](crate::ErrorCode), [`EventKind`](crate::EventKind) and
//!   [`PluginKind`](crate::PluginKind) values (they are transparent integers, and
//!   unknown error codes read as `internal`);
//! * new provided (defaulted) methods on [`TransactionLogger`](crate::TransactionLogger)
//!   and [`Frontend`](crate::Frontend);
//! * new capability strings.
//!
//! The host checks the plug-in's `api_minor` before it uses anything a minor added.
//!
//! **Frozen for all of major 1: every type reachable from the root module.** That is
//! [`native::PluginMod`](crate::native::PluginMod) and the `#[sabi_trait]` objects
//! (`StoreApi`, `LoggerApi`, `FrontendApi`, `ReplaySink`, `WriteCallback`,
//! `HealthProbe`), whatever their `last_prefix_field` markers suggest. abi_stable checks
//! a library against the loader's layout and accepts a library with *more* prefix
//! fields than the loader, never fewer: it is built for a newer library under an older
//! user. kvs is the other way round — a newer host must load older plug-ins — so
//! appending a field or method there would make every older plug-in fail to load. The
//! `compat/` test (a plug-in built against the frozen 1.0) caught exactly that when a
//! field was appended to `PluginMod`; new capabilities therefore arrive as new symbols.
//!
//! **Never within a major:** removing or reordering fields or methods, changing a type or
//! a signature, changing what a method means (e.g. what "durable" means for `append`),
//! changing the offsets of `magic`, `api_major`, `api_minor` in the handshake (those are
//! frozen across *all* majors so any host can say "wrong version").
//!
//! **Why the abi_stable version string only carries the major.** abi_stable's own check
//! refuses a library whose minor is lower than the loader's; that is the opposite of the
//! rule above, so the root module's `VERSION_STRINGS` stay `1.0.0` for all of major 1 and
//! the handshake does the version check. abi_stable's layout check still runs and catches
//! a mismatched type in any case.
