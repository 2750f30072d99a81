//! What kvs counts, and the Prometheus text it is scraped as (`/metrics` on the admin
//! listener, [`crate::admin`]).
//!
//! Recording is atomics only: every series a request touches is created up front (per
//! frontend: a counter per operation and outcome, a latency histogram per operation) and
//! held as a handle, so the hot path never looks a label set up or takes a lock. Values
//! that are cheap to read when scraped (keys, queue depth, logger health) are read then.
//! Names follow Prometheus conventions: `kvs_` prefix, base units, `_total` counters,
//! histograms in seconds.

use std::sync::Arc;
use std::time::Duration;

use kvs_plugin_api::{ErrorCode, PluginError};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::caller::Action;

/// Latency buckets, seconds: 10 us (a GET) to 10 s (a stalled logger).
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Writes per logger call.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// How a request ended, as the `outcome` label.
pub const OUTCOMES: [&str; 11] = [
    "ok",
    "not_found",
    "invalid_input",
    "too_large",
    "unavailable",
    "unauthenticated",
    "permission_denied",
    "internal",
    "storage_full",
    "rate_limited",
    "deadline_exceeded",
];
const OPS: [Action; 3] = [Action::Get, Action::Put, Action::Delete];

fn op_name(op: Action) -> &'static str {
    match op {
        Action::Get => "get",
        Action::Put => "put",
        Action::Delete => "delete",
    }
}

fn op_index(op: Action) -> usize {
    match op {
        Action::Get => 0,
        Action::Put => 1,
        Action::Delete => 2,
    }
}

/// The `outcome` of an error.
fn outcome_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::NOT_FOUND => 1,
        ErrorCode::INVALID_INPUT => 2,
        ErrorCode::TOO_LARGE => 3,
        ErrorCode::UNAVAILABLE => 4,
        ErrorCode::UNAUTHENTICATED => 5,
        ErrorCode::PERMISSION_DENIED => 6,
        ErrorCode::STORAGE_FULL => 8,
        ErrorCode::RATE_LIMITED => 9,
        ErrorCode::DEADLINE_EXCEEDED => 10,
        _ => 7,
    }
}

/// Every metric of one running kvs.
pub struct Metrics {
    registry: Registry,
    /// Whether frontends' requests are counted (off when nothing can read them).
    per_request: bool,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    /// Writes waiting for the writer, set when scraped.
    pub queue_depth: IntGauge,
    /// Writes per `append` call.
    pub batch_size: Histogram,
    /// How long `append` took (for `sync = always` loggers: including the fsync).
    pub append_seconds: Histogram,
    /// Batches the writer thread committed.
    pub batches_by_writer: IntCounter,
    /// Batches a frontend that commits its own writes committed on its thread.
    pub batches_by_frontend: IntCounter,
    /// `append` calls that failed.
    pub append_errors: IntCounter,
    /// Keys the expiry sweep removed.
    pub expired_keys: IntCounter,
    /// 1 while the logger reports itself healthy (or reports nothing), else 0.
    pub logger_healthy: IntGauge,
    /// Keys held, set when scraped.
    pub keys: IntGauge,
    /// Bytes of keys and values held (the data, not the map's overhead).
    pub bytes: IntGauge,
    /// How long start-up replay took.
    pub replay_seconds: Gauge,
    /// Events replayed at start-up.
    pub replay_events: IntGauge,
    wasm_calls: IntCounterVec,
    wasm_failures: IntCounterVec,
    wasm_replacements: IntCounterVec,
    /// Reloads, by outcome: `applied`, `partial` (something refused), `refused`
    /// (nothing changed).
    pub reloads: IntCounterVec,
    /// Plug-ins swapped by a reload, by role (`logger`, `frontend`) and outcome (`ok`,
    /// `failed`: the old one kept serving).
    pub swaps: IntCounterVec,
    /// Writes refused or dropped under overload, by reason (`crate::overload`).
    pub writes_refused: IntCounterVec,
    /// How long the first write of the writer's latest batch waited in its queue.
    pub queue_delay: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on a malformed name or a duplicate registration: a bug here, not input.
    r.expect("metric definitions are valid")
}

/// Creates series and registers them, failing loudly on a name clash (a bug).
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        must(self.0.register(Box::new(c.clone())));
        c
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(must(IntCounterVec::new(Opts::new(name, help), labels)))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(must(IntGauge::new(name, help)))
    }

    fn int_counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(must(IntCounter::new(name, help)))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(must(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        )))
    }

    /// `kvs_build_info`: always 1, its labels say what is running.
    fn build_info(&self) {
        let build = self.register(must(IntGaugeVec::new(
            Opts::new("kvs_build_info", "Always 1; labels say what is running."),
            &["version", "plugin_api"],
        )));
        let api = format!(
            "{}.{}",
            kvs_plugin_api::API_MAJOR,
            kvs_plugin_api::API_MINOR
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &api])
            .set(1);
    }
}

impl Metrics {
    /// A fresh set, registered in its own registry. `per_request`: whether frontends'
    /// requests are counted and timed (kvs turns it off when no admin listener can
    /// show them; everything else is counted per batch or read when scraped).
    pub fn new(per_request: bool) -> Arc<Metrics> {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let requests = r.counter_vec(
            "kvs_requests_total",
            "Frontend requests served, by frontend, operation and outcome.",
            &["frontend", "op", "outcome"],
        );
        let request_seconds = r.register(must(HistogramVec::new(
            HistogramOpts::new(
                "kvs_request_duration_seconds",
                "Time from a frontend's store call to its answer (writes: until durable).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["frontend", "op"],
        )));
        let replay_seconds = r.register(must(Gauge::new(
            "kvs_replay_duration_seconds",
            "How long replaying the transaction log took at start-up.",
        )));
        r.build_info();
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        let batches_by = r.counter_vec(
            "kvs_writer_batches_total",
            "Batches committed, by the thread that committed them: the writer thread, or a \
             frontend that commits its own writes (frontend:commits) on its own thread.",
            &["by"],
        );
        Arc::new(Metrics {
            per_request,
            batches_by_writer: batches_by.with_label_values(&["writer"]),
            batches_by_frontend: batches_by.with_label_values(&["frontend"]),
            requests,
            request_seconds,
            queue_depth: r.int_gauge("kvs_writer_queue_depth", "Writes waiting for the writer."),
            batch_size: r.histogram(
                "kvs_writer_batch_size",
                "Writes per logger append (group commit).",
                BATCH_BUCKETS,
            ),
            append_seconds: r.histogram(
                "kvs_logger_append_duration_seconds",
                "How long the logger's append took (with sync = always: including fsync).",
                LATENCY_BUCKETS,
            ),
            append_errors: r.int_counter(
                "kvs_logger_append_errors_total",
                "Logger appends that failed (their writes were answered with the error).",
            ),
            expired_keys: r.int_counter(
                "kvs_expired_keys_total",
                "Keys removed by the expiry sweep once past their deadline (logged as deletes).",
            ),
            logger_healthy: r.int_gauge(
                "kvs_logger_healthy",
                "1 while the logger reports itself healthy (or reports nothing), else 0.",
            ),
            keys: r.int_gauge("kvs_keys", "Keys held."),
            bytes: r.int_gauge("kvs_data_bytes", "Bytes of keys and values held."),
            replay_seconds,
            replay_events: r.int_gauge("kvs_replay_events", "Events replayed at start-up."),
            wasm_calls: r.counter_vec(
                "kvs_wasm_calls_total",
                "Calls into WASM guests, by plug-in.",
                &["plugin"],
            ),
            wasm_failures: r.counter_vec(
                "kvs_wasm_failures_total",
                "Guest calls that trapped, ran out of memory or timed out, by plug-in and kind.",
                &["plugin", "kind"],
            ),
            wasm_replacements: r.counter_vec(
                "kvs_wasm_instance_replacements_total",
                "Guest instances discarded after a failure and replaced, by plug-in.",
                &["plugin"],
            ),
            reloads: r.counter_vec(
                "kvs_reloads_total",
                "Reloads (SIGHUP, POST /reload, kvs reload), by outcome: applied, partial, refused.",
                &["outcome"],
            ),
            swaps: r.counter_vec(
                "kvs_plugin_swaps_total",
                "Plug-ins replaced by a reload, by role and outcome (failed: the old one kept serving).",
                &["role", "outcome"],
            ),
            writes_refused: r.counter_vec(
                "kvs_writes_refused_total",
                "Writes refused or dropped before the logger under overload, by reason: shed \
                 (the queue was slow and the client had a write in flight), queue_full, \
                 queue_bytes, deadline (the caller's deadline passed while it queued).",
                &["reason"],
            ),
            queue_delay: r.register(must(Gauge::new(
                "kvs_writer_queue_delay_seconds",
                "How long the first write of the writer's latest batch waited in its queue.",
            ))),
            registry,
        })
    }

    /// The counters `crate::overload` records refusals into.
    pub fn refusal_counters(&self) -> crate::overload::RefusalCounters {
        let reason = |r: &str| self.writes_refused.with_label_values(&[r]);
        crate::overload::RefusalCounters {
            shed: reason("shed"),
            queue_full: reason("queue_full"),
            queue_bytes: reason("queue_bytes"),
            deadline: reason("deadline"),
        }
    }

    /// The handles one frontend's requests record into.
    pub fn frontend(&self, name: &str) -> Arc<FrontendMeter> {
        let counters = OPS.map(|op| {
            OUTCOMES.map(|outcome| {
                self.requests
                    .with_label_values(&[name, op_name(op), outcome])
            })
        });
        let seconds = OPS.map(|op| self.request_seconds.with_label_values(&[name, op_name(op)]));
        Arc::new(FrontendMeter {
            enabled: self.per_request,
            counters,
            seconds,
        })
    }

    /// The handles one WASM plug-in's guest calls record into.
    pub fn wasm(&self, plugin: &str) -> Arc<WasmMeter> {
        Arc::new(WasmMeter {
            calls: self.wasm_calls.with_label_values(&[plugin]),
            traps: self.wasm_failures.with_label_values(&[plugin, "trap"]),
            timeouts: self.wasm_failures.with_label_values(&[plugin, "timeout"]),
            replacements: self.wasm_replacements.with_label_values(&[plugin]),
        })
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// One frontend's request series.
#[derive(Debug)]
pub struct FrontendMeter {
    enabled: bool,
    counters: [[IntCounter; OUTCOMES.len()]; 3],
    seconds: [Histogram; 3],
}

impl FrontendMeter {
    /// Whether requests are counted at all (else the store skips even the clock).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one request and its latency.
    pub fn record(&self, op: Action, outcome: Result<(), &PluginError>, took: Duration) {
        let o = match outcome {
            Ok(()) => 0,
            Err(e) => outcome_index(e.code()),
        };
        let i = op_index(op);
        self.counters[i][o].inc();
        self.seconds[i].observe(took.as_secs_f64());
    }

    /// Counts a GET that found nothing (not an error to the store, a miss to the client).
    pub fn record_miss(&self, took: Duration) {
        self.counters[0][1].inc();
        self.seconds[0].observe(took.as_secs_f64());
    }
}

/// One WASM plug-in's guest-call series.
#[derive(Debug)]
pub struct WasmMeter {
    /// Every call.
    pub calls: IntCounter,
    /// Calls that trapped or ran out of memory.
    pub traps: IntCounter,
    /// Calls stopped by `call_timeout_ms`.
    pub timeouts: IntCounter,
    /// Instances replaced after a failure.
    pub replacements: IntCounter,
}
