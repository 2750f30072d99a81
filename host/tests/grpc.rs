//! The `grpc` frontend in a real kvs, called by real tonic clients.

use std::time::Duration;

use kvs_proto::{book, v1};
use tonic::Code;
use tonic::transport::Channel;

use crate::util::{Kvs, config, lib, namespace, plugin_dir, staged_plugins, write_config};

const GRPC_TABLE: &str = "[plugins.grpc]\nlisten = \"127.0.0.1:0\"\n";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn channel(endpoint: &str) -> Channel {
    let url = endpoint.replace("grpc://", "http://");
    Channel::from_shared(url).unwrap().connect().await.unwrap()
}

fn start_both(dir: &std::path::Path, extra: &str) -> Kvs {
    let config = write_config(dir, &format!("{extra}{GRPC_TABLE}"));
    Kvs::start(
        &config,
        &staged_plugins(),
        &["--frontend", "rest", "--frontend", "grpc"],
    )
}

#[test]
fn the_books_service_and_the_bytes_service_share_one_store_with_rest() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_both(dir.path(), "");
    runtime().block_on(async {
        let ch = channel(&kvs.endpoint("grpc")).await;
        let mut bookc = book::key_value_client::KeyValueClient::new(ch.clone());
        let mut bytes = v1::key_value_client::KeyValueClient::new(ch);

        // The book's session.
        let put = |k: &str, v: &str| book::PutRequest {
            key: k.into(),
            value: v.into(),
        };
        bookc.put(put("key-a", "hello")).await.unwrap();
        let got = bookc
            .get(book::GetRequest {
                key: "key-a".into(),
            })
            .await
            .unwrap();
        assert_eq!(got.into_inner().value, "hello");
        bookc.put(put("key-a", "overwritten")).await.unwrap();
        let got = bookc
            .get(book::GetRequest {
                key: "key-a".into(),
            })
            .await
            .unwrap();
        assert_eq!(got.into_inner().value, "overwritten");
        bookc
            .delete(book::DeleteRequest {
                key: "key-a".into(),
            })
            .await
            .unwrap();
        let err = bookc
            .get(book::GetRequest {
                key: "key-a".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        bookc
            .delete(book::DeleteRequest {
                key: "key-a".into(),
            })
            .await
            .unwrap();
        let err = bookc.put(put("", "v")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        // Odd bytes through kvs.v1; the book's service explains what it cannot return.
        let key = b"\xff\x00 bin\n/key".to_vec();
        let value = vec![0u8, 0xff, 0x80, b'\t'];
        bytes
            .put(v1::PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let got = bytes
            .get(v1::GetRequest { key: key.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.value, value);
        bytes
            .put(v1::PutRequest {
                key: b"text".to_vec(),
                value: vec![0xc3, 0x28],
                ..Default::default()
            })
            .await
            .unwrap();
        let err = bookc
            .get(book::GetRequest { key: "text".into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("kvs.v1.KeyValue"),
            "{}",
            err.message()
        );

        // Conditions, counters and deadlines (kvs.v1 since plugin-api 1.4).
        let absent = || {
            Some(v1::Condition {
                when: Some(v1::condition::When::Absent(true)),
            })
        };
        let created = bytes
            .put(v1::PutRequest {
                key: b"cas".to_vec(),
                value: b"1".to_vec(),
                condition: absent(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(created.applied && created.revision > 0, "{created:?}");
        let again = bytes
            .put(v1::PutRequest {
                key: b"cas".to_vec(),
                value: b"2".to_vec(),
                condition: absent(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!again.applied, "{again:?}");
        let got = bytes
            .get(v1::GetRequest {
                key: b"cas".to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (got.value.as_slice(), got.revision),
            (&b"1"[..], created.revision)
        );
        let at_revision = |r| {
            Some(v1::Condition {
                when: Some(v1::condition::When::Revision(r)),
            })
        };
        let stale = bytes
            .delete(v1::DeleteRequest {
                key: b"cas".to_vec(),
                condition: at_revision(created.revision + 1000),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!stale.applied);
        let swapped = bytes
            .put(v1::PutRequest {
                key: b"cas".to_vec(),
                value: b"3".to_vec(),
                condition: at_revision(created.revision),
                ttl_ms: 60_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(swapped.applied && swapped.revision > created.revision);
        let got = bytes
            .get(v1::GetRequest {
                key: b"cas".to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(got.expires_at_ms > 0, "{got:?}");
        for expected in [5, 3] {
            let by = if expected == 5 { 5 } else { -2 };
            let n = bytes
                .increment(v1::IncrementRequest {
                    key: b"count".to_vec(),
                    by,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(n.value, expected);
        }
        let err = bytes
            .increment(v1::IncrementRequest {
                key: b"text".to_vec(),
                by: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

        // REST and gRPC see each other's writes.
        bookc.put(put("shared", "from grpc")).await.unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = http.get(kvs.at("/v1/key/shared")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "from grpc");
        let r = http
            .put(kvs.at("/v1/key/from-rest"))
            .body("via http")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let got = bookc
            .get(book::GetRequest {
                key: "from-rest".into(),
            })
            .await
            .unwrap();
        assert_eq!(got.into_inner().value, "via http");
        let got = bytes
            .get(v1::GetRequest {
                key: b"shared".to_vec(),
            })
            .await
            .unwrap();
        assert_eq!(got.into_inner().value, b"from grpc");
    });
    kvs.stop();
}

#[test]
fn an_oversized_value_is_invalid_argument_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let kvs = start_both(dir.path(), "[limits]\nmax_value_bytes = 1000\n");
    runtime().block_on(async {
        let mut c = v1::key_value_client::KeyValueClient::new(channel(&kvs.endpoint("grpc")).await);
        let err = c
            .put(v1::PutRequest {
                key: b"k".to_vec(),
                value: vec![1; 1001],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("1000"), "{}", err.message());
        c.put(v1::PutRequest {
            key: b"k".to_vec(),
            value: vec![1; 1000],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    kvs.stop();
}

#[test]
fn health_follows_readiness_and_reflection_lists_the_services() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let dir = tempfile::tempdir().unwrap();
    let kvs = start_both(dir.path(), "");
    let endpoint = kvs.endpoint("grpc");
    let rt = runtime();
    let mut watch = rt.block_on(async {
        let ch = channel(&endpoint).await;
        let mut health = HealthClient::new(ch.clone());
        let req = || HealthCheckRequest {
            service: String::new(),
        };
        let status = health.check(req()).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32);
        let status = health
            .check(HealthCheckRequest {
                service: "KeyValue".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);

        // Reflection, as grpcurl uses it.
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut refl = ServerReflectionClient::new(ch);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = refl
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for want in ["KeyValue", "kvs.v1.KeyValue", "grpc.health.v1.Health"] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        health.watch(req()).await.unwrap().into_inner()
    });
    // Shutdown: the watcher sees NOT_SERVING before the stream ends.
    let stopper = std::thread::spawn(move || kvs.stop());
    let seen = rt.block_on(async {
        let mut seen = Vec::new();
        while let Ok(Ok(Some(msg))) =
            tokio::time::timeout(Duration::from_secs(10), watch.message()).await
        {
            seen.push(msg.status);
        }
        seen
    });
    stopper.join().unwrap();
    assert!(
        seen.contains(&(ServingStatus::NotServing as i32)),
        "{seen:?}"
    );
}

#[test]
fn a_client_deadline_ends_a_slow_write_with_deadline_exceeded() {
    // In-process host with a slow fixture logger, so a write outlives the deadline.
    let dir = plugin_dir(&["kvs_fixture_memory_logger"]);
    std::fs::copy(
        lib("kvs_plugin_grpc"),
        dir.path().join("libkvs_plugin_grpc.so"),
    )
    .unwrap();
    let toml = format!(
        "frontends = [\"grpc\"]\n[plugins.memory]\nnamespace = {:?}\nappend_delay_ms = 500\n{GRPC_TABLE}",
        namespace("deadline")
    );
    let cfg = config(dir.path(), "memory", &toml);
    let catalog = kvs_host::plugins::Catalog::scan(dir.path()).unwrap();
    let running = kvs_host::lifecycle::start(&cfg, &catalog).unwrap();
    let endpoint = running.endpoints()[0].1[0].clone();
    let status = runtime().block_on(raw_put_with_deadline(&endpoint, "100m"));
    assert_eq!(status.0, Code::DeadlineExceeded as i32, "{status:?}");
    assert!(status.1 < Duration::from_millis(450), "{:?}", status.1);
    running.stop().unwrap();
}

/// A gRPC Put sent with plain hyper, carrying `grpc-timeout` but enforcing nothing
/// locally: tonic's own client also enforces the deadline and reports its expiry as
/// CANCELLED, which would race the server's answer under test. Returns the
/// `grpc-status` and how long the call took.
async fn raw_put_with_deadline(endpoint: &str, timeout: &str) -> (i32, Duration) {
    use http_body_util::{BodyExt, Full};
    use prost::Message;

    let addr = endpoint.trim_start_matches("grpc://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let message = v1::PutRequest {
        key: b"slow".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let request = hyper::Request::post(format!("http://{addr}/kvs.v1.KeyValue/Put"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let started = std::time::Instant::now();
    let response = sender.send_request(request).await.unwrap();
    // An error status may come as a trailers-only response (in the headers).
    let mut status = response.headers().get("grpc-status").cloned();
    let body = response.into_body().collect().await.unwrap();
    if let Some(trailers) = body.trailers() {
        status = status.or_else(|| trailers.get("grpc-status").cloned());
    }
    let code = status
        .expect("a grpc-status")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (code, started.elapsed())
}

#[test]
fn health_is_not_serving_while_a_large_log_replays() {
    use kvs_plugin_api::{Event, TransactionLogger};
    use kvs_plugin_file::{Config, FileLogger};
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("data/kvs.log");
    let cfg = Config::parse(&format!("path = {log_path:?}\nsync = \"never\"")).unwrap();
    let mut logger = FileLogger::open(cfg).unwrap();
    logger.replay(&mut |_| Ok(())).unwrap();
    let keys: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("k{i}").into_bytes())
        .collect();
    for round in 0..100u64 {
        let batch: Vec<Event<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Event::put(round * 10_000 + i as u64 + 1, k, b"v"))
            .collect();
        logger.append(&batch).unwrap();
    }
    logger.close().unwrap();
    let config = write_config(dir.path(), GRPC_TABLE);
    let kvs = Kvs::start_listening_args(&config, &staged_plugins(), &["--frontend", "grpc"]);
    let endpoint = kvs.endpoint("grpc");
    let statuses = runtime().block_on(async {
        let mut health = HealthClient::new(channel(&endpoint).await);
        let req = || HealthCheckRequest {
            service: String::new(),
        };
        let first = health.check(req()).await.unwrap().into_inner().status;
        let started = std::time::Instant::now();
        loop {
            let now = health.check(req()).await.unwrap().into_inner().status;
            if now == ServingStatus::Serving as i32 || started.elapsed().as_secs() > 120 {
                return (first, now);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(
        statuses.0,
        ServingStatus::NotServing as i32,
        "serving before replay finished"
    );
    assert_eq!(
        statuses.1,
        ServingStatus::Serving as i32,
        "never serving:\n{}",
        kvs.log()
    );
    kvs.stop();
}
