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
//! Every host function and export passes its data through Extism's memory: a host
//! function takes (and returns) an Extism memory offset as an `i64`, and an export is
//! an Extism function `() -> i32` (its input and output in Extism's memory, 0 for
//! success). What the bytes say is the [`wire`](crate::wire) format.

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

/// Every host function, in the order they were introduced.
pub const HOST_FUNCTIONS: &[HostFunction] = &[
    KVS_GET,
    KVS_PUT,
    KVS_DELETE,
    KVS_LOG,
    KVS_STATS,
    KVS_CHECK,
    KVS_UPDATE,
    KVS_GET_ENTRY,
];

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
    /// Its parameters: none (its input is in Extism's memory).
    pub params: &'static [ValType],
    /// Its results: an `i32`, 0 for success (its output is in Extism's memory).
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

/// Every export a host calls, in the order they were introduced.
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
    fn no_row_is_newer_than_this_contract() {
        let newest = HOST_FUNCTIONS
            .iter()
            .map(|f| f.since_minor)
            .chain(GUEST_EXPORTS.iter().map(|e| e.since_minor))
            .max();
        assert!(newest <= Some(crate::API_MINOR));
    }
}
