//! Logs and traces: the `tracing` subscriber kvs installs, and OpenTelemetry export.
//!
//! Logs go to stderr as text or JSON (`--log-format`), filtered by `RUST_LOG`. Traces
//! are `tracing` spans under the target [`TRACE_TARGET`] — per request a frontend span
//! and a store span (continuing the client's W3C `traceparent`), per group commit a
//! writer batch span with a logger append span — exported over OTLP/HTTP (protobuf)
//! when `[telemetry] otlp_endpoint` is set. Without it no layer wants those spans, so
//! creating one costs a disabled callsite check; the log filter never shows them.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

pub use kvs_config::TelemetryConfig;

/// The target of kvs's trace spans (never shown in logs).
pub const TRACE_TARGET: &str = "kvs::trace";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the exporter alive; dropping it flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Replaces the log filter (`None`: `RUST_LOG` set it, and it stays).
    filter: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
    /// The filter applied last, as configured.
    applied: std::sync::Mutex<Option<String>>,
}

impl Telemetry {
    /// Applies `[telemetry] log` from a reloaded config; says what happened, and
    /// whether it changed anything.
    pub fn set_log_filter(&self, log: Option<&str>) -> Result<(bool, String), String> {
        let Some(handle) = &self.filter else {
            return Ok((
                false,
                "log filter: RUST_LOG set it at start; it stays".into(),
            ));
        };
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.as_deref() == log {
            return Ok((false, "log filter: unchanged".into()));
        }
        let filter = log_filter(log)?;
        handle
            .reload(filter)
            .map_err(|e| format!("log filter: cannot apply it: {e}"))?;
        *applied = log.map(String::from);
        Ok((
            true,
            format!("log filter: now {:?}", log.unwrap_or(DEFAULT_LOG)),
        ))
    }
}

/// The filter for `[telemetry] log` (default `info`), trace spans always off.
fn log_filter(log: Option<&str>) -> Result<EnvFilter, String> {
    let filter = EnvFilter::builder()
        .parse(log.unwrap_or(DEFAULT_LOG))
        .map_err(|e| format!("[telemetry] log: {e}"))?;
    Ok(filter.add_directive(
        format!("{TRACE_TARGET}=off")
            .parse()
            .expect("a valid directive"),
    ))
}

/// extism logs each failed guest call with a full wasm backtrace; kvs logs one line per
/// failure itself.
const DEFAULT_LOG: &str = "info,extism=off";

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: logs in `format`, and traces if `config` says where.
pub fn init(format: LogFormat, config: &TelemetryConfig) -> Result<Telemetry> {
    // RUST_LOG, if set, wins and stays; else `[telemetry] log`, which a reload changes.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::builder().parse(v).ok());
    let fixed = from_env.is_some();
    let filter = match from_env {
        Some(f) => f.add_directive(
            format!("{TRACE_TARGET}=off")
                .parse()
                .expect("a valid directive"),
        ),
        None => log_filter(config.log.as_deref()).map_err(|e| anyhow::anyhow!(e))?,
    };
    let (logs_filter, handle) = reload::Layer::new(filter);
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(logs_filter)
            .boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(logs_filter)
            .boxed(),
    };
    let (traces, provider) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let provider = provider(endpoint, config)?;
            let tracer = provider.tracer("kvs");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(Targets::new().with_target(TRACE_TARGET, tracing::Level::TRACE));
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry {
        provider,
        filter: (!fixed).then_some(handle),
        applied: std::sync::Mutex::new(config.log.clone()),
    })
}

fn provider(endpoint: &str, config: &TelemetryConfig) -> Result<SdkTracerProvider> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let ratio = config.sample_ratio.unwrap_or(1.0);
    anyhow::ensure!(
        (0.0..=1.0).contains(&ratio),
        "[telemetry] sample_ratio must be between 0.0 and 1.0, not {ratio}"
    );
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .build()
        .with_context(|| format!("[telemetry] otlp_endpoint {endpoint}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone().unwrap_or_else(|| "kvs".into()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Messages of the host's own listeners (admin, WASM HTTP frontends) as `tracing`
/// events under the target `kvs::listener`.
pub fn listener_log(level: kvs_plugin_api::log::Level, message: &str) {
    use kvs_plugin_api::log::Level;
    match level {
        Level::ERROR => tracing::error!(target: "kvs::listener", "{message}"),
        Level::WARN => tracing::warn!(target: "kvs::listener", "{message}"),
        _ => tracing::info!(target: "kvs::listener", "{message}"),
    }
}

/// Makes `span` continue the trace of a client's W3C `traceparent` (and `tracestate`).
/// A missing or malformed header leaves the span a new root.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if span.is_disabled() {
        return;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_string(), state.to_string());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The OpenTelemetry context of `span`, to link other spans to it (none when tracing
/// is off).
pub fn span_context(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Links `span` to `other` (e.g. a write to the batch it was logged in).
pub fn link(span: &tracing::Span, other: opentelemetry::trace::SpanContext) {
    span.add_link(other);
}

/// The span of one frontend request: named after the frontend, continuing the client's
/// trace. The host opens it where the request reaches it: the WASM HTTP edge, or a
/// native frontend's store call.
pub fn frontend_span(caller: &crate::caller::Caller<'_>, what: &str) -> tracing::Span {
    let span = tracing::trace_span!(
        target: TRACE_TARGET,
        "frontend",
        otel.name = %format_args!("{} {what}", caller.frontend),
        otel.kind = "server",
        kvs.frontend = caller.frontend,
        client.address = caller.peer,
    );
    continue_trace(&span, caller.traceparent, caller.tracestate);
    span
}

/// The span of one store operation (a child of the current frontend span).
pub fn store_span(op: crate::caller::Action) -> tracing::Span {
    let name = match op {
        crate::caller::Action::Get => "store get",
        crate::caller::Action::Put => "store put",
        crate::caller::Action::Delete => "store delete",
    };
    tracing::trace_span!(target: TRACE_TARGET, "store", otel.name = name)
}
