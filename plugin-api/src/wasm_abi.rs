//! The WASM contract as one table: the host functions a guest may import and the
//! exports a host calls, each with the minor version that introduced it.
//!
//! This is the source of truth. The host registers its host functions with the names
//! and signatures here (`host/src/wasm/host_fns.rs`), so changing a registered
//! signature means changing this table, and `tests/frozen.rs` checks the table, minor
//! by minor, against the snapshots `frozen/wasm-1.N.txt` of every released minor (see
//! [`versioning`](crate::versioning)). A minor may add rows; it never changes or
//! removes one.
//!
//! Two ways to pass data, the same [`wire`](crate::wire) bytes either way:
//!
//! * **Through Extism's memory** (every minor): a host function takes (and returns) an
//!   Extism memory offset as an `i64`, and an export is an Extism function `() -> i32`
//!   (its input and output in Extism's memory, 0 for success).
//! * **Direct** (1.4; cheaper: nothing is copied through Extism's kernel, 8 bytes per
//!   kernel call): the guest's own memory on both sides.
//!   - A guest calls host function `f` as [`KVS_CALL`]`(op, in, in_len, out, out_cap)`,
//!     where `op` is `f`'s position in [`HOST_FUNCTIONS`] ([`op`]): the host reads the
//!     input at `in`, writes the result frame at `out` if it fits in `out_cap` bytes,
//!     and returns the frame's length. If it did not fit, the host holds it until the
//!     guest's next host call, and [`KVS_CALL_RESULT`]`(out, out_cap)` copies it
//!     (returning its length, or -1 if none is held or it does not fit).
//!   - A guest that exports [`KVS_BUFFER`] and [`KVS_DISPATCH`] is called directly: the
//!     host asks `kvs_buffer(len)` for the address of a buffer of at least `len` bytes
//!     (it stays valid until the next `kvs_buffer` call, so the host asks again only for
//!     a longer input), writes the input there, and calls `kvs_dispatch(export, len)`,
//!     where `export` is the export's position in [`GUEST_EXPORTS`] ([`export_index`]).
//!     The result is where the export's result frame lies in the guest's memory (its
//!     address in the high 32 bits, its length in the low 32), valid until the next
//!     call. A guest that has only the Extism-form exports is called as before.
//!
//!   Positions never change: rows are only ever appended to both tables.

/// A WebAssembly value type: a parameter or result of a host function or export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValType {
    /// `i32`.
    I32,
    /// `i64`; also an Extism memory offset.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl ValType {
    /// The name WebAssembly's text format uses: `i32`, `i64`, `f32`, `f64`.
    pub const fn name(self) -> &'static str {
        match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
        }
    }
}

/// An Extism memory offset, as host functions take and return it (Extism's `PTR`).
pub const PTR: ValType = ValType::I64;

/// The module a guest imports host functions from (Extism's user functions).
pub const HOST_MODULE: &str = "extism:host/user";

/// A host function a guest may import from [`HOST_MODULE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFunction {
    /// The import's name.
    pub name: &'static str,
    /// Its parameters.
    pub params: &'static [ValType],
    /// Its results.
    pub results: &'static [ValType],
    /// The contract minor (of major 1) that introduced it: a host of that minor or
    /// later provides it.
    pub since_minor: u16,
}

/// `kvs_get`: key -> result(found:u8 value:bytes), as the caller whose request the
/// call serves.
pub const KVS_GET: HostFunction = HostFunction {
    name: "kvs_get",
    params: &[PTR],
    results: &[PTR],
    since_minor: 0,
};

/// `kvs_put`: key value -> result(), accepted now and durable before the guest's
/// answer is sent.
pub const KVS_PUT: HostFunction = HostFunction {
    name: "kvs_put",
    params: &[PTR],
    results: &[PTR],
    since_minor: 0,
};

/// `kvs_delete`: key -> result(), like `kvs_put`.
pub const KVS_DELETE: HostFunction = HostFunction {
    name: "kvs_delete",
    params: &[PTR],
    results: &[PTR],
    since_minor: 0,
};

/// `kvs_log`: a log record into the host's `tracing`; returns nothing.
pub const KVS_LOG: HostFunction = HostFunction {
    name: "kvs_log",
    params: &[PTR],
    results: &[],
    since_minor: 1,
};

/// `kvs_stats`: -> result(keys:u64 data_bytes:u64).
pub const KVS_STATS: HostFunction = HostFunction {
    name: "kvs_stats",
    params: &[PTR],
    results: &[PTR],
    since_minor: 3,
};

/// `kvs_check`: action:u8 key -> result(): may the caller do this to the key? The
/// host's answer to the call itself, without making it (1.4).
pub const KVS_CHECK: HostFunction = HostFunction {
    name: "kvs_check",
    params: &[PTR],
    results: &[PTR],
    since_minor: 4,
};

/// `kvs_update`: update -> result(outcome): an atomic update (a condition, a
/// read-modify-write, a deadline; [`update`](crate::update)), returning once what it
/// wrote is durable, with its outcome (1.4).
pub const KVS_UPDATE: HostFunction = HostFunction {
    name: "kvs_update",
    params: &[PTR],
    results: &[PTR],
    since_minor: 4,
};

/// `kvs_get_entry`: key -> result(found:u8 entry): the value with its revision and
/// deadline (1.4).
pub const KVS_GET_ENTRY: HostFunction = HostFunction {
    name: "kvs_get_entry",
    params: &[PTR],
    results: &[PTR],
    since_minor: 4,
};

/// `kvs_call`: `(op, in, in_len, out, out_cap) -> len`: host function `op` called
/// directly, its input and result in the guest's own memory (1.4; see the module docs).
pub const KVS_CALL: HostFunction = HostFunction {
    name: "kvs_call",
    params: &[
        ValType::I32,
        ValType::I32,
        ValType::I32,
        ValType::I32,
        ValType::I32,
    ],
    results: &[ValType::I32],
    since_minor: 4,
};

/// `kvs_call_result`: `(out, out_cap) -> len`: the result of the last `kvs_call` that did
/// not fit its buffer, or -1 (1.4).
pub const KVS_CALL_RESULT: HostFunction = HostFunction {
    name: "kvs_call_result",
    params: &[ValType::I32, ValType::I32],
    results: &[ValType::I32],
    since_minor: 4,
};

/// Every host function, in the order they were introduced. A row's position is its op
/// for [`KVS_CALL`].
pub const HOST_FUNCTIONS: &[HostFunction] = &[
    KVS_GET,
    KVS_PUT,
    KVS_DELETE,
    KVS_LOG,
    KVS_STATS,
    KVS_CHECK,
    KVS_UPDATE,
    KVS_GET_ENTRY,
    KVS_CALL,
    KVS_CALL_RESULT,
];

/// `f`'s op for [`KVS_CALL`]: its position in [`HOST_FUNCTIONS`] (1.4). `None` for a
/// function that is not in the table.
pub const fn op(f: &HostFunction) -> Option<u32> {
    let mut i = 0;
    while i < HOST_FUNCTIONS.len() {
        if str_eq(HOST_FUNCTIONS[i].name, f.name) {
            return Some(i as u32);
        }
        i += 1;
    }
    None
}

/// The position in [`GUEST_EXPORTS`] of the export named `name`: its number for
/// [`KVS_DISPATCH`] (1.4).
pub const fn export_index(name: &str) -> Option<u32> {
    let mut i = 0;
    while i < GUEST_EXPORTS.len() {
        if str_eq(GUEST_EXPORTS[i].name, name) {
            return Some(i as u32);
        }
        i += 1;
    }
    None
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Which guests export something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exporter {
    /// Every WASM plug-in.
    Every,
    /// Loggers.
    Logger,
    /// Frontends in HTTP mode (capability `frontend:http`).
    HttpFrontend,
    /// Frontends in stream mode (capability `frontend:stream`, 1.3).
    StreamFrontend,
}

impl Exporter {
    /// `every plug-in`, `loggers`, `HTTP frontends`, `stream frontends`.
    pub const fn describe(self) -> &'static str {
        match self {
            Exporter::Every => "every plug-in",
            Exporter::Logger => "loggers",
            Exporter::HttpFrontend => "HTTP frontends",
            Exporter::StreamFrontend => "stream frontends",
        }
    }
}

/// An export the host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestExport {
    /// The export's name.
    pub name: &'static str,
    /// Its parameters: none for an Extism-form export (its input is in Extism's
    /// memory); see the module docs for the direct ones (1.4).
    pub params: &'static [ValType],
    /// Its results: an `i32`, 0 for success, for an Extism-form export (its output is in
    /// Extism's memory); see the module docs for the direct ones (1.4).
    pub results: &'static [ValType],
    /// Who exports it.
    pub exporter: Exporter,
    /// Whether every [`exporter`](Self::exporter) must export it; an optional export
    /// is called only if present.
    pub required: bool,
    /// The contract minor (of major 1) that introduced it: a host of that minor or
    /// later calls it.
    pub since_minor: u16,
}

const fn export(
    name: &'static str,
    exporter: Exporter,
    required: bool,
    since_minor: u16,
) -> GuestExport {
    GuestExport {
        name,
        params: &[],
        results: &[ValType::I32],
        exporter,
        required,
        since_minor,
    }
}

/// `kvs_handshake`: -> the plug-in's handshake. Called first, at discovery.
pub const KVS_HANDSHAKE: GuestExport = export("kvs_handshake", Exporter::Every, true, 0);
/// `kvs_logger_open`: config -> (). Opens the logger.
pub const KVS_LOGGER_OPEN: GuestExport = export("kvs_logger_open", Exporter::Logger, true, 0);
/// `kvs_logger_append`: batch -> (). Makes a batch durable.
pub const KVS_LOGGER_APPEND: GuestExport = export("kvs_logger_append", Exporter::Logger, true, 0);
/// `kvs_logger_replay`: cursor -> the next chunk of events.
pub const KVS_LOGGER_REPLAY: GuestExport = export("kvs_logger_replay", Exporter::Logger, true, 0);
/// `kvs_logger_close`: -> (). Flushes and releases.
pub const KVS_LOGGER_CLOSE: GuestExport = export("kvs_logger_close", Exporter::Logger, true, 0);
/// `kvs_http_handle`: request -> response.
pub const KVS_HTTP_HANDLE: GuestExport = export("kvs_http_handle", Exporter::HttpFrontend, true, 0);
/// `kvs_http_configure`: config -> (). Called once per instance before any request, if
/// present.
pub const KVS_HTTP_CONFIGURE: GuestExport =
    export("kvs_http_configure", Exporter::HttpFrontend, false, 2);
/// `kvs_stream_open`: connection and peer -> (). A connection starts.
pub const KVS_STREAM_OPEN: GuestExport =
    export("kvs_stream_open", Exporter::StreamFrontend, true, 3);
/// `kvs_stream_data`: bytes that arrived -> bytes to send.
pub const KVS_STREAM_DATA: GuestExport =
    export("kvs_stream_data", Exporter::StreamFrontend, true, 3);
/// `kvs_stream_close`: connection -> (). A connection ended.
pub const KVS_STREAM_CLOSE: GuestExport =
    export("kvs_stream_close", Exporter::StreamFrontend, true, 3);

/// `kvs_buffer`: `(len) -> address` of a buffer of at least `len` bytes for a direct
/// call's input; 0 if the guest cannot lend one (1.4). Exported with [`KVS_DISPATCH`].
pub const KVS_BUFFER: GuestExport = GuestExport {
    name: "kvs_buffer",
    params: &[ValType::I32],
    results: &[ValType::I32],
    exporter: Exporter::Every,
    required: false,
    since_minor: 4,
};

/// `kvs_dispatch`: `(export, len) -> address << 32 | length`: the export at position
/// `export` of [`GUEST_EXPORTS`] called directly on the input in the `kvs_buffer`, and
/// where its result frame lies (1.4). With it, the host calls no Extism-form export but
/// the handshake.
pub const KVS_DISPATCH: GuestExport = GuestExport {
    name: "kvs_dispatch",
    params: &[ValType::I32, ValType::I32],
    results: &[ValType::I64],
    exporter: Exporter::Every,
    required: false,
    since_minor: 4,
};

/// Every export a host calls, in the order they were introduced. A row's position is
/// its number for [`KVS_DISPATCH`].
pub const GUEST_EXPORTS: &[GuestExport] = &[
    KVS_HANDSHAKE,
    KVS_LOGGER_OPEN,
    KVS_LOGGER_APPEND,
    KVS_LOGGER_REPLAY,
    KVS_LOGGER_CLOSE,
    KVS_HTTP_HANDLE,
    KVS_HTTP_CONFIGURE,
    KVS_STREAM_OPEN,
    KVS_STREAM_DATA,
    KVS_STREAM_CLOSE,
    KVS_BUFFER,
    KVS_DISPATCH,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = HOST_FUNCTIONS.iter().map(|f| f.name).collect();
        names.extend(GUEST_EXPORTS.iter().map(|e| e.name));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name appears twice in the WASM table");
    }

    #[test]
    fn positions_are_the_direct_numbers() {
        assert_eq!(op(&KVS_GET), Some(0));
        assert_eq!(op(&KVS_GET_ENTRY), Some(7));
        assert_eq!(export_index("kvs_handshake"), Some(0));
        assert_eq!(export_index("kvs_stream_data"), Some(8));
        assert_eq!(export_index("nope"), None);
    }

    #[test]
    fn no_row_is_newer_than_this_contract() {
        let newest = HOST_FUNCTIONS
            .iter()
            .map(|f| f.since_minor)
            .chain(GUEST_EXPORTS.iter().map(|e| e.since_minor))
            .max();
        assert!(newest <= Some(crate::API_MINOR));
    }
}
