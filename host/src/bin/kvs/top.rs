//! `kvs top`: a terminal view of a running kvs, read from its admin listener's
//! `/metrics` — what `redis-cli --stat` gives Redis users. Each refresh shows rates and
//! latency percentiles over the last interval, per frontend and operation, plus the
//! writer, the logger and WASM plug-ins.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name, e.g. `kvs_requests_total`.
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text format (comments skipped; label values unescaped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').to_string(), value));
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The sum of every sample named `name` whose labels include all of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// The `q` quantile of the observations a histogram gained between two scrapes, as the
/// upper bound of the bucket it falls in (what Prometheus's `histogram_quantile` does,
/// without interpolation). `None` if nothing was observed.
fn quantile(
    before: &[Sample],
    now: &[Sample],
    name: &str,
    with: &[(&str, &str)],
    q: f64,
) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = now
        .iter()
        .filter(|s| s.name == bucket && with.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .filter_map(|s| {
            let le: f64 = match s.label("le")? {
                "+Inf" => f64::INFINITY,
                le => le.parse().ok()?,
            };
            let mut labels: Vec<(&str, &str)> = with.to_vec();
            let le_text = s.label("le")?;
            labels.push(("le", le_text));
            Some((le, s.value - sum(before, &bucket, &labels)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

fn millis(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s.is_infinite() => ">10s".into(),
        Some(s) if s < 0.001 => format!("{:.0}us", s * 1e6),
        Some(s) => format!("{:.1}ms", s * 1e3),
    }
}

/// One screen: rates over the `secs` between the `before` and `now` scrapes.
pub fn render(url: &str, before: &[Sample], now: &[Sample], secs: f64) -> String {
    let mut out = String::new();
    let info = now.iter().find(|s| s.name == "kvs_build_info");
    let rate =
        |name: &str, with: &[(&str, &str)]| (sum(now, name, with) - sum(before, name, with)) / secs;
    let _ = writeln!(
        out,
        "kvs {} (plugin-api {}) at {url}  keys {}  data {} B  queue {}  logger {}",
        info.and_then(|s| s.label("version")).unwrap_or("?"),
        info.and_then(|s| s.label("plugin_api")).unwrap_or("?"),
        sum(now, "kvs_keys", &[]),
        sum(now, "kvs_data_bytes", &[]),
        sum(now, "kvs_writer_queue_depth", &[]),
        if sum(now, "kvs_logger_healthy", &[]) >= 1.0 {
            "ok"
        } else {
            "UNHEALTHY"
        },
    );
    let _ = writeln!(
        out,
        "{:<14} {:<7} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "FRONTEND", "OP", "REQ/S", "ERRORS/S", "P50", "P99", "P99.9"
    );
    let mut frontends: BTreeMap<&str, ()> = BTreeMap::new();
    for s in now.iter().filter(|s| s.name == "kvs_requests_total") {
        if let Some(f) = s.label("frontend") {
            frontends.insert(f, ());
        }
    }
    for frontend in frontends.keys() {
        for op in ["get", "put", "delete"] {
            let with = [("frontend", *frontend), ("op", op)];
            if sum(now, "kvs_requests_total", &with) == 0.0 {
                continue; // never used: no row
            }
            let all = rate("kvs_requests_total", &with);
            let ok = rate("kvs_requests_total", &[with[0], with[1], ("outcome", "ok")]);
            let missing = rate(
                "kvs_requests_total",
                &[with[0], with[1], ("outcome", "not_found")],
            );
            let q = |q| quantile(before, now, "kvs_request_duration_seconds", &with, q);
            let _ = writeln!(
                out,
                "{:<14} {:<7} {:>10.1} {:>10.1} {:>9} {:>9} {:>9}",
                frontend,
                op,
                all,
                all - ok - missing,
                millis(q(0.5)),
                millis(q(0.99)),
                millis(q(0.999)),
            );
        }
    }
    let batches = rate("kvs_writer_batch_size_count", &[]);
    let writes = rate("kvs_writer_batch_size_sum", &[]);
    let append = |q| quantile(before, now, "kvs_logger_append_duration_seconds", &[], q);
    let _ = writeln!(
        out,
        "writer: {:.1} appends/s, {:.1} writes/append, append p50 {} p99 {}, errors {}",
        batches,
        if batches > 0.0 { writes / batches } else { 0.0 },
        millis(append(0.5)),
        millis(append(0.99)),
        sum(now, "kvs_logger_append_errors_total", &[]),
    );
    let refused = |reason| rate("kvs_writes_refused_total", &[("reason", reason)]);
    let _ = writeln!(
        out,
        "overload: queue delay {}, refused/s shed {:.1} deadline {:.1} queue full {:.1} queue bytes {:.1} rate limited {:.1}",
        millis(
            now.iter()
                .find(|s| s.name == "kvs_writer_queue_delay_seconds")
                .map(|s| s.value)
        ),
        refused("shed"),
        refused("deadline"),
        refused("queue_full"),
        refused("queue_bytes"),
        rate("kvs_requests_total", &[("outcome", "rate_limited")]),
    );
    let mut plugins: BTreeMap<&str, ()> = BTreeMap::new();
    for s in now.iter().filter(|s| s.name == "kvs_wasm_calls_total") {
        if let Some(p) = s.label("plugin") {
            plugins.insert(p, ());
        }
    }
    for plugin in plugins.keys() {
        let with = [("plugin", *plugin)];
        let _ = writeln!(
            out,
            "wasm {plugin}: {:.1} calls/s, traps {}, timeouts {}, instances replaced {}",
            rate("kvs_wasm_calls_total", &with),
            sum(now, "kvs_wasm_failures_total", &[with[0], ("kind", "trap")]),
            sum(
                now,
                "kvs_wasm_failures_total",
                &[with[0], ("kind", "timeout")]
            ),
            sum(now, "kvs_wasm_instance_replacements_total", &with),
        );
    }
    out
}

fn scrape(agent: &ureq::Agent, url: &str) -> Result<Vec<Sample>> {
    let metrics = format!("{}/metrics", url.trim_end_matches('/'));
    let mut request = agent.get(&metrics);
    // With `[auth]` on, /metrics needs a caller with a role: the token comes from the
    // environment (never a flag, which `ps` would show).
    if let Ok(token) = std::env::var("KVS_TOKEN") {
        request = request.header("authorization", format!("Bearer {}", token.trim()));
    }
    let text = request
        .call()
        .with_context(|| format!("cannot read {metrics}: is kvs running with [admin] listen set?"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read {metrics}"))?;
    let samples = parse(&text);
    if !samples.iter().any(|s| s.name == "kvs_build_info") {
        bail!("{metrics} does not look like kvs's admin listener (no kvs_build_info)");
    }
    Ok(samples)
}

/// Prints a screen every `interval` (`count` times, or until interrupted).
pub fn run(url: &str, interval: Duration, count: Option<u64>) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut before = scrape(&agent, url)?;
    let mut taken = Instant::now();
    let mut shown = 0;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let now = scrape(&agent, url)?;
        let secs = taken.elapsed().as_secs_f64();
        taken = Instant::now();
        let screen = render(url, &before, &now, secs);
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            print!("\x1b[2J\x1b[H{screen}");
        } else {
            say!("{screen}");
        }
        before = now;
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format_and_reads_quantiles_from_bucket_deltas() {
        let before = parse(
            "# HELP x y\nkvs_requests_total{frontend=\"rest\",op=\"get\",outcome=\"ok\"} 10\n\
             kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"get\",le=\"0.001\"} 10\n\
             kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"get\",le=\"0.01\"} 10\n\
             kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"get\",le=\"+Inf\"} 10\n",
        );
        let now = parse(
            "kvs_requests_total{frontend=\"rest\",op=\"get\",outcome=\"ok\"} 110\n\
             kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"get\",le=\"0.001\"} 100\n\
             kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"get\",le=\"0.01\"} 110\n\
             kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"get\",le=\"+Inf\"} 110\n\
             kvs_build_info{version=\"0.1.0\",plugin_api=\"1.2\"} 1\n",
        );
        assert_eq!(now[0].labels[2], ("outcome".to_string(), "ok".to_string()));
        let with = [("frontend", "rest"), ("op", "get")];
        let q = |q| quantile(&before, &now, "kvs_request_duration_seconds", &with, q);
        assert_eq!(q(0.5), Some(0.001));
        assert_eq!(q(0.95), Some(0.01));
        let screen = render("http://x", &before, &now, 2.0);
        assert!(screen.contains("rest"), "{screen}");
        assert!(screen.contains("50.0"), "{screen}");
        let escaped = parse("m{a=\"q\\\"uote\",b=\"x\"} 1");
        assert_eq!(
            escaped[0].labels,
            [("a".into(), "q\"uote".into()), ("b".into(), "x".into())]
        );
    }
}
