//! The compatibility promise: what a version of this contract may change, and how a
//! host reads plug-ins of every minor version.
//!
//! The contract has its own version, [`API_MAJOR`](crate::API_MAJOR).[`API_MINOR`](crate::API_MINOR),
//! independent of kvs releases and of this crate's patch releases.
//!
//! **The rule.** A host loads a plug-in iff their majors are equal and the plug-in's minor
//! is at most the host's ([`check_compatible`](crate::version::check_compatible)). So a
//! plug-in built against 1.0 loads in every 1.x host, and a 1.2 plug-in is refused by a
//! 1.1 host with a message naming both versions and saying to upgrade kvs.
//!
//! # How a minor version is added: interface types frozen per minor
//!
//! Every native type a plug-in and a host exchange belongs to exactly one minor version
//! and never changes after it ships:
//!
//! * 1.0 is [`native`](crate::native): the root module
//!   [`PluginMod`](crate::native::PluginMod) and the `#[sabi_trait]` objects
//!   (`StoreApi`, `LoggerApi`, `FrontendApi`, `ReplaySink`, `WriteCallback`,
//!   `HealthProbe`), reached through abi_stable's library header.
//! * 1.1 is [`native::v1_1`](crate::native::v1_1): host services (`HostApi`), the
//!   request context (`RequestContextRef`), a `StoreApi` that carries it, and the entry
//!   points (`Module`) that hand them over, exported as the static `KVS_PLUGIN_V1_1`.
//! * 1.2 added no native types, so a 1.2 plug-in exports 1.1's entry points. It added:
//!   two error codes for the host's access control
//!   ([`ErrorCode::UNAUTHENTICATED`](crate::ErrorCode::UNAUTHENTICATED),
//!   [`ErrorCode::PERMISSION_DENIED`](crate::ErrorCode::PERMISSION_DENIED)); the optional
//!   WASM export `kvs_http_configure`, through which an HTTP frontend gets its config
//!   table (a 1.1 host never calls it, and refuses keys it does not know, as before);
//!   the [`capability`](crate::capability) constants, among them the promise
//!   `protocol:kvs-rest`; and the guest helpers `key_from_path` and
//!   `GuestError::http_status` (guest-side code only, nothing crosses the boundary). A
//!   1.0/1.1 frontend reads the new codes as `internal` (its clients see a 500 whose
//!   message says why), so rebuild frontends against 1.2 when access control is on.
//! * 1.3 is [`native::v1_3`](crate::native::v1_3): [`StoreStats`](crate::native::v1_3::StoreStats)
//!   and a frontend `StoreApi` that answers it ([`Store::stats`](crate::Store::stats)),
//!   with entry points exported as `KVS_PLUGIN_V1_3` (beside 1.1's, which 1.3 plug-ins
//!   still export). For WASM it added, all optional: the host function `kvs_stats`, and
//!   stream frontends — the capability `frontend:stream` and the exports
//!   `kvs_stream_open`, `kvs_stream_data`, `kvs_stream_close` (a 1.2 host refuses the
//!   plug-in by its version before it could misread one). Also the capability
//!   `protocol:resp`; shared loggers: [`SharedLog`](crate::SharedLog), opened
//!   through `Module::open_shared_logger` and declared with the capability `log:shared`;
//!   read consistency per request: [`Consistency`](crate::Consistency) and
//!   [`Store::get_consistent`](crate::Store::get_consistent) (on an older host the plain
//!   read, which is linearizable there anyway). One host behaviour, not a type, changed
//!   for WASM frontends of every minor: a guest's `put`/`delete` return once the write is
//!   accepted, and the host holds the guest's answer until the write is durable (see
//!   `guest::put`). Plug-ins built against 1.0, 1.1 and 1.2 load and work unchanged (the
//!   `compat/` tests run every released minor, native and WASM).
//! * 1.4 is
//!   [`native::v1_4`](crate::native::v1_4): its own `StoreApi` and `Module`. From 1.4
//!   a plug-in exports its own generation only: the handshake and `KVS_PLUGIN_ENTRIES`
//!   ([`native::ENTRIES_SYMBOL`](crate::native::ENTRIES_SYMBOL)), an
//!   [`Entries`](crate::native::Entries) of its minor's `Module` — no 1.0 root module,
//!   no older entry points. An older host refuses a 1.4 plug-in by its handshake before
//!   it would look for them, so nothing it reads goes missing.
//!   [`native::current`](crate::native::current) names the generation this crate builds
//!   plug-ins as; `Store`'s constructors for older store objects are deprecated.
//!   For WASM, 1.4 adds direct calls ([`wasm_abi`](crate::wasm_abi)): a guest's data
//!   passes in its own memory, not Extism's (`kvs_call`, `kvs_call_result`,
//!   `kvs_buffer`, `kvs_dispatch`). Guests built with this crate use them; the
//!   Extism-form exports stay, and a host calls older guests as before.
//! * 1.5 added no native types (a 1.5 plug-in exports 1.4's `Module`, and a host drives
//!   it through 1.4's generation): two error codes for the host's overload decisions,
//!   [`ErrorCode::RATE_LIMITED`](crate::ErrorCode::RATE_LIMITED) (a client over its
//!   rate limit: REST 429, gRPC RESOURCE_EXHAUSTED) and
//!   [`ErrorCode::DEADLINE_EXCEEDED`](crate::ErrorCode::DEADLINE_EXCEEDED) (REST 504,
//!   gRPC DEADLINE_EXCEEDED), and [`ErrorCode::since_minor`](crate::ErrorCode::since_minor).
//!   A host hands a frontend of an older minor `unavailable` instead of either (and
//!   instead of 1.4's `storage full` to one older than 1.4), never a code it would read
//!   as `internal`; the WASM ABI is otherwise 1.4's.
//! * 1.6 added no native types either: [`Transaction`](crate::Transaction)s — several
//!   updates made all or none at one place in log order (`MSETNX`), and
//!   [`DeadlineCondition`](crate::DeadlineCondition)s on a key's deadline (`EXPIRE ...
//!   NX|XX|GT|LT`) — travel through 1.4's `update` entry point (native `StoreApi::update`,
//!   WASM `kvs_update`) as fields after the update a 1.4 reader knows, and come back as
//!   `outcomes` ([`Store::transact_with`](crate::Store::transact_with),
//!   `guest::transact`). A host never reads a 1.6 plug-in's bytes as 1.4's: it refuses
//!   plug-ins of a newer minor than its own. For loggers, the capability
//!   [`LOG_ATOMIC_BATCH`](crate::capability::LOG_ATOMIC_BATCH): replay hands back a batch
//!   whole or not at all, which a transaction writing several keys needs.
//! * 1.7 is [`native::v1_7`](crate::native::v1_7): its `StoreApi` is 1.4's plus
//!   `commit`, handed to frontends by its own `Module` (otherwise 1.4's), so a frontend
//!   declaring [`FRONTEND_COMMITS`](crate::capability::FRONTEND_COMMITS) commits its
//!   own writes ([`Store::commit`](crate::Store::commit)). Nothing changed for WASM
//!   guests.
//! * 1.8 added no native types and nothing that crosses the boundary: WASM HTTP
//!   frontends may be *borrowing handlers*, `fn(&HttpRequestRef<'_>, &mut
//!   HttpResponseWriter<'_>)` ([`guest::HttpHandler`](crate::guest::HttpHandler)),
//!   which read the request where the host wrote it and write the response straight
//!   into the call's result, and `guest::get_with` lends a value in place — the same
//!   wire frames as before, read and written without allocating. It is a minor, not a
//!   patch, because it adds public items (and any guest built with it says 1.8 in its
//!   handshake).
//! * 1.N (when it needs new native types) will be `native::v1_N`, exported under the
//!   same `KVS_PLUGIN_ENTRIES` symbol (the handshake says which `Module` it is).
//!
//! **Patch releases** of this crate change no contract: nothing new crosses the
//! boundary, no public item is added, and the handshake still says the same minor.
//! 1.3.1 only made the guest library cheaper: a value `guest::get` reads is copied out of
//! Extism's memory once instead of three times, and host-call inputs and HTTP answers
//! are encoded into buffers of the right size (a WASM REST GET runs ~4% fewer
//! instructions). Guests built with 1.3.0 and 1.3.1 behave alike on every host.
//! 1.8.1 only fixed the guest library: a closure given to `guest::get_with` that called
//! the host again (a log line, another store call) trapped in 1.8.0, which held the
//! host call's reply buffer borrowed while it ran.
//!
//! A host reads a plug-in's handshake first and then drives it through exactly one
//! generation: the newest at or below the plug-in's minor (1.0, 1.1 for 1.1 and 1.2,
//! 1.3, 1.4 for 1.4, 1.5 and 1.6, 1.7 for 1.7 and 1.8). It looks up that generation's entry points (the 1.0 root module through
//! abi_stable's library header, `KVS_PLUGIN_V1_1`, `KVS_PLUGIN_V1_3`, or
//! `KVS_PLUGIN_ENTRIES`), checks their layout with abi_stable
//! (`check_layout_compatibility`, the layout the plug-in was built with against its own),
//! and uses them. Plug-ins of 1.0-1.3 also exported older generations' entry points
//! (their `export_plugin!` wrote them all); a host no longer reads those. A 1.0
//! plug-in gets no host services: its stderr stays its own and its frontend's calls
//! arrive as an anonymous caller.
//!
//! **Why not append to the 1.0 types?** abi_stable's prefix types let a *library* have
//! more fields than its *loader* expects, never fewer: its layout check refuses a
//! library whose prefix type (root module or trait-object vtable) is shorter than the
//! loader's. That suits a newer library under an older host; kvs needs the opposite (a
//! newer host loading older plug-ins), so a field appended to `PluginMod` or a method
//! appended to `StoreApi` would make every older plug-in fail to load — the `compat/`
//! test caught exactly that. Hence whole new types per minor.
//!
//! **A minor version may only add:**
//! * a `native::v1_N` module, exported as `KVS_PLUGIN_ENTRIES`, as above;
//! * new optional WASM exports, new host functions, and new wire-message fields at the
//!   end of a message (readers ignore bytes they do not know);
//! * new [`ErrorCode`](crate::ErrorCode), [`EventKind`](crate::EventKind),
//!   [`PluginKind`](crate::PluginKind) and [`log::Level`](crate::log::Level) values
//!   (transparent integers; unknown error codes read as `internal`);
//! * new provided (defaulted) methods on [`TransactionLogger`](crate::TransactionLogger)
//!   and [`Frontend`](crate::Frontend), new methods on [`Store`](crate::Store), new
//!   capability strings.
//!
//! **Never within a major:** removing, reordering or changing anything a released minor
//! defined (fields, methods, signatures, the [`Handshake`](crate::Handshake), which is
//! frozen for major 1 and read whole once its version is checked), changing what a
//! method means (e.g. what "durable" means for `append`), changing the offsets of
//! `magic`, `api_major`, `api_minor` ([`HandshakePrefix`](crate::handshake::HandshakePrefix),
//! frozen across *all* majors so any host can say "wrong version").
//!
//! **Frozen by a test, not a comment.** Released minors are frozen by
//! `plugin-api/tests/frozen.rs` against the snapshots in `plugin-api/frozen/`, one row
//! of its `RELEASED` table per minor: `native-1.N.txt`, a text dump of abi_stable's
//! layout of the native types that minor added and of every type they reach (fields,
//! function pointers, vtables and their `last_prefix_field`, sizes, alignments, module
//! paths; 1.0's also the handshake's offsets; 1.2 added no native types), and
//! `wasm-1.N.txt`, the host functions and exports of [`wasm_abi`](crate::wasm_abi) up
//! to that minor. Changing any of them fails the test, naming the minor, the type or
//! function and the lines that differ: put the change in the next minor instead. A
//! snapshot is written once, when its minor is released
//! (`KVS_FREEZE_MINOR=1.N cargo test -p kvs-plugin-api --test frozen`), and never
//! regenerated. The 1.0 and 1.1 snapshots are what those minors shipped (they equal the
//! layouts of the released crates in `compat/releases/`). 1.3's is its layout as
//! of commit d28f6c6, not as first declared: `Module::open_shared_logger` and
//! `StoreApi::get_consistent` were added after 1.3.0 was first declared (20e92de), so
//! a native plug-in built at 20e92de does not pass today's 1.3 layout check — a host
//! refuses its `KVS_PLUGIN_V1_3` entry points and says to rebuild it.
//!
//! **WASM plug-ins** follow the same rule through the [`wire`](crate::wire) format: the
//! handshake's version decides, a 1.1 host provides every host function of 1.0 and 1.1
//! (`kvs_log` is new in 1.1), and a request message carries 1.1's context after the
//! fields 1.0 reads. A guest importing a host function this kvs does not have (built
//! against a newer minor) cannot even be instantiated; the host says so and to upgrade.
//!
//! **abi_stable's own version string** ([`RootModule::VERSION_STRINGS`] of the root
//! module) stays `1.0.0` for all of major 1. abi_stable compares those strings' minors
//! only for major 0 (`0.x` versions are treated as incompatible across minors); for
//! 1.x it checks the majors alone. The string is pinned so that the root module stays
//! byte-for-byte the 1.0 one; the handshake does the version check.
//!
//! [`RootModule::VERSION_STRINGS`]: abi_stable::library::RootModule::VERSION_STRINGS
