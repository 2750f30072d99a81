//! Observability end to end: a real Prometheus server scrapes kvs's admin listener and
//! its query API returns the counts the traffic produced; `promtool check metrics`
//! accepts the exposition; `/plugins`, `/readyz`, `kvs top` and JSON logs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::util::{Kvs, http_client, staged_plugins, write_config};

const WASM_TABLE: &str = "\n[plugins.wasm-rest]\nlisten = \"127.0.0.1:0\"\n";
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// `config.toml` with rest and wasm-rest on free ports and `extra` (top-level tables).
fn config_with_both(dir: &Path, extra: &str) -> std::path::PathBuf {
    let config = write_config(dir, extra);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "frontends = [\"rest\"]",
        "frontends = [\"rest\", \"wasm-rest\"]",
    );
    text.push_str(WASM_TABLE);
    std::fs::write(&config, text).unwrap();
    config
}

fn observed_kvs(dir: &Path, args: &[&str]) -> Kvs {
    Kvs::start(&config_with_both(dir, ADMIN), &staged_plugins(), args)
}

/// A Prometheus server (Debian's `prometheus`) scraping `target` every 500 ms.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
                 scrape_configs:\n  - job_name: kvs\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (`.ci/run` installs Debian's prometheus package)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant query that returns one series, if it does yet.
    fn query(&self, http: &reqwest::blocking::Client, query: &str) -> Option<f64> {
        let response = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .ok()?;
        let body: serde_json::Value = serde_json::from_str(&response.text().ok()?).ok()?;
        let result = body["data"]["result"].as_array()?;
        let [series] = result.as_slice() else {
            return None;
        };
        series["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` returns `want`; panics with the last value after 30 s.
    fn wait_for(&self, http: &reqwest::blocking::Client, query: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(http, query);
            if last == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Prometheus says {query} = {last:?}, want {want}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_admin_listener_and_promtool_accepts_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = observed_kvs(dir.path(), &[]);
    let admin = kvs.admin();
    let http = http_client();
    assert_eq!(
        http.get(format!("{admin}/readyz")).send().unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(format!("{admin}/healthz"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Traffic with known outcomes through two frontends.
    let rest = kvs.endpoint("rest");
    let wasm = kvs.endpoint("wasm-rest");
    for i in 0..7 {
        let r = http
            .put(format!("{rest}/v1/key/k{i}"))
            .body("value")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for i in 0..5 {
        let r = http.get(format!("{rest}/v1/key/k{i}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for _ in 0..3 {
        let r = http.get(format!("{rest}/v1/key/missing")).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    for i in 0..4 {
        let r = http
            .put(format!("{wasm}/v1/key/w{i}"))
            .body("v")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = http.delete(format!("{rest}/v1/key/k0")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "kvs_requests_total{frontend=\"rest\",op=\"put\",outcome=\"ok\"} 7",
        "kvs_requests_total{frontend=\"rest\",op=\"get\",outcome=\"ok\"} 5",
        "kvs_requests_total{frontend=\"rest\",op=\"get\",outcome=\"not_found\"} 3",
        "kvs_requests_total{frontend=\"wasm-rest\",op=\"put\",outcome=\"ok\"} 4",
        "kvs_requests_total{frontend=\"rest\",op=\"delete\",outcome=\"ok\"} 1",
        "kvs_keys 10",
        "kvs_wasm_calls_total{plugin=\"wasm-rest\"} 4",
        "kvs_logger_healthy 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    // 6 keys of 2 bytes + 5-byte values, 4 of 2 bytes + 1-byte values.
    assert!(
        metrics.lines().any(|l| l == "kvs_data_bytes 54"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "kvs_request_duration_seconds_bucket{frontend=\"rest\",op=\"put\",le=\"+Inf\"} 7"
    ));
    assert!(metrics.contains("kvs_writer_batch_size_count"));
    assert!(metrics.contains("kvs_build_info{plugin_api="));
    assert!(metrics.contains("process_cpu_seconds_total"));

    // promtool's linter: names, units, _total suffixes, help texts.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it and answers queries with the same numbers.
    let target = admin.trim_start_matches("http://");
    let prometheus = Prometheus::start(target);
    prometheus.wait_for(
        &http,
        "kvs_requests_total{frontend=\"rest\",op=\"put\",outcome=\"ok\"}",
        7.0,
    );
    prometheus.wait_for(&http, "sum(kvs_requests_total{op=\"put\"})", 11.0);
    prometheus.wait_for(&http, "kvs_keys", 10.0);
    // More traffic shows up in the next scrapes.
    for i in 0..5 {
        http.put(format!("{rest}/v1/key/more{i}"))
            .body("x")
            .send()
            .unwrap();
    }
    prometheus.wait_for(
        &http,
        "kvs_requests_total{frontend=\"rest\",op=\"put\",outcome=\"ok\"}",
        12.0,
    );
    prometheus.wait_for(
        &http,
        "kvs_request_duration_seconds_count{frontend=\"rest\",op=\"put\"}",
        12.0,
    );
    kvs.stop();
}

#[test]
fn plugins_readiness_top_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = observed_kvs(dir.path(), &["--log-format", "json"]);
    let admin = kvs.admin();
    let http = http_client();
    let plugins: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{admin}/plugins"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    let list = plugins.as_array().unwrap();
    let find = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {plugins}"))
    };
    let file = find("file");
    assert_eq!(file["role"], "logger");
    assert_eq!(file["format"], "native");
    assert_eq!(file["health"], "ok");
    assert!(
        file["file"]
            .as_str()
            .unwrap()
            .ends_with("libkvs_plugin_file.so")
    );
    let wasm = find("wasm-rest");
    assert_eq!(wasm["role"], "frontend");
    assert_eq!(wasm["format"], "wasm");
    assert_eq!(wasm["endpoints"][0], kvs.endpoint("wasm-rest"));
    assert_eq!(
        find("rest")["api"],
        format!(
            "{}.{}",
            kvs_plugin_api::API_MAJOR,
            kvs_plugin_api::API_MINOR
        )
    );

    // `kvs top` while traffic runs: two screens, with the frontend's PUT rate.
    let rest = kvs.endpoint("rest");
    let traffic = std::thread::spawn(move || {
        let http = http_client();
        let until = Instant::now() + Duration::from_millis(1500);
        let mut n = 0;
        while Instant::now() < until {
            http.put(format!("{rest}/v1/key/t{n}"))
                .body("v")
                .send()
                .unwrap();
            n += 1;
        }
        n
    });
    let out = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args([
            "top",
            "--admin",
            &admin,
            "--interval",
            "0.5",
            "--count",
            "2",
        ])
        .output()
        .unwrap();
    let written = traffic.join().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{screen}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(written > 0);
    let put_line = screen
        .lines()
        .find(|l| l.starts_with("rest ") && l.contains(" put "))
        .unwrap_or_else(|| panic!("no rest put line:\n{screen}"));
    let rate: f64 = put_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rate > 0.0, "{screen}");
    assert!(screen.contains("writer:"), "{screen}");
    assert!(screen.contains("wasm wasm-rest"), "{screen}");

    // A wrong address says what to check.
    let out = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["top", "--admin", "http://127.0.0.1:1", "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[admin] listen"));

    // Every log line is one JSON object; plug-ins' lines name the plug-in.
    let log = kvs.stop();
    let mut saw_ready = false;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        saw_ready |= v["message"]
            .as_str()
            .is_some_and(|m| m.contains("kvs ready"));
        if v["target"] == "kvs::plugin" {
            assert!(v["plugin"].is_string(), "{line}");
        }
    }
    assert!(saw_ready, "{log}");
}

/// Spans received by a small OTLP/HTTP receiver: the protobuf requests kvs's exporter
/// sends, decoded with opentelemetry-proto.
type Received = std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>;

fn otlp_receiver() -> (String, Received, tokio::runtime::Runtime) {
    use axum::body::Bytes;
    use prost::Message;
    let received: Received = Default::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink = received.clone();
    runtime.spawn(async move {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut spans = sink.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    (url, received, runtime)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn traces_continue_the_clients_traceparent_through_store_writer_and_logger() {
    let (otlp, received, _runtime) = otlp_receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_both(
        dir.path(),
        &format!("[telemetry]\notlp_endpoint = {otlp:?}\nsample_ratio = 1.0\n"),
    );
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let http = http_client();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = http
        .put(format!("{}/v1/key/traced", kvs.endpoint("rest")))
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .body("v")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let wasm_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = http
        .get(format!("{}/v1/key/traced", kvs.endpoint("wasm-rest")))
        .header(
            "traceparent",
            format!("00-{wasm_trace}-b7ad6b7169203331-01"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Stopping flushes the exporter.
    kvs.stop();

    let spans = received.lock().unwrap().clone();
    let find = |name: &str, trace_id: Option<&str>| {
        spans
            .iter()
            .find(|s| s.name == name && trace_id.is_none_or(|t| hex(&s.trace_id) == t))
            .unwrap_or_else(|| {
                let all: Vec<_> = spans.iter().map(|s| (&s.name, hex(&s.trace_id))).collect();
                panic!("no span {name:?} in trace {trace_id:?}; got {all:?}")
            })
    };
    // frontend -> store, under the client's trace and span.
    let frontend = find("rest put", Some(trace));
    assert_eq!(hex(&frontend.parent_span_id), client_span);
    let store = find("store put", Some(trace));
    assert_eq!(store.parent_span_id, frontend.span_id);
    // The group commit: a batch span with the append inside, linked both ways.
    let batch = spans
        .iter()
        .find(|s| s.name == "writer batch" && s.links.iter().any(|l| l.span_id == store.span_id))
        .unwrap_or_else(|| panic!("no writer batch linking to the write: {spans:?}"));
    assert!(
        store
            .links
            .iter()
            .any(|l| l.span_id == batch.span_id && l.trace_id == batch.trace_id),
        "the write does not link to its batch: {store:?}"
    );
    let append = spans
        .iter()
        .find(|s| s.name == "logger append" && s.parent_span_id == batch.span_id)
        .expect("logger append inside the batch");
    assert_eq!(append.trace_id, batch.trace_id);
    // The write's span lasts until it is durable: it ends after the append.
    assert!(
        store.end_time_unix_nano >= append.end_time_unix_nano,
        "store {}..{} append {}..{} frontend {}..{}",
        store.start_time_unix_nano,
        store.end_time_unix_nano,
        append.start_time_unix_nano,
        append.end_time_unix_nano,
        frontend.start_time_unix_nano,
        frontend.end_time_unix_nano
    );
    // A WASM frontend's request, and the guest's store call inside it.
    let edge = find("wasm-rest request", Some(wasm_trace));
    let get = find("store get", Some(wasm_trace));
    assert_eq!(get.parent_span_id, edge.span_id);
}
