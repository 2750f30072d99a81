//! `[telemetry]`: trace export and the log filter.

use serde::Deserialize;

/// The `[telemetry]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where to send traces over OTLP/HTTP, e.g. `http://127.0.0.1:4318` (the
    /// collector's base URL; `/v1/traces` is added). Unset: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces recorded, 0.0 to 1.0 (default 1.0). A request that carries
    /// a sampled `traceparent` is recorded whatever this says (parent-based sampling).
    pub sample_ratio: Option<f64>,
    /// `service.name` of the exported spans. Default `kvs`.
    pub service_name: Option<String>,
    /// Which log lines are shown, in `RUST_LOG`'s syntax (e.g. `info,kvs_host=debug`),
    /// when `RUST_LOG` is not set. Default `info`. A reload applies a change.
    pub log: Option<String>,
}
