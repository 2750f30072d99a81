//! Request contexts reach the host: what a client presents to rest, grpc, wasm-rest and
//! a third party's 1.1 or 1.3 frontend arrives at the host's request hook, and the
//! hook's refusal is the request's outcome. A 1.0 frontend's calls arrive anonymous.

use std::sync::{Arc, Mutex};

use kvs_host::caller::{Action, Caller, RequestHook};
use kvs_host::lifecycle::{self, StartOptions};
use kvs_host::plugins::Catalog;
use kvs_plugin_api::PluginError;
use kvs_proto::v1;

use crate::util::{Line, config, copy_of_staged_plugins, http_client, lib};

/// One call as the hook saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    frontend: String,
    op: Action,
    key: Vec<u8>,
    bearer: Option<String>,
    traceparent: Option<String>,
    has_peer: bool,
    has_deadline: bool,
}

/// Records every call; refuses keys starting with `deny`.
#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl RequestHook for Recorder {
    fn check(&self, op: Action, key: &[u8], caller: &Caller<'_>) -> Result<(), PluginError> {
        self.0.lock().unwrap().push(Seen {
            frontend: caller.frontend.to_string(),
            op,
            key: key.to_vec(),
            bearer: caller.bearer_token.map(str::to_string),
            traceparent: caller.traceparent.map(str::to_string),
            has_peer: caller.peer.is_some(),
            has_deadline: caller.deadline.is_some(),
        });
        if key.starts_with(b"deny") {
            return Err(PluginError::invalid_input("refused by the request hook"));
        }
        Ok(())
    }
}

impl Recorder {
    fn find(&self, frontend: &str, op: Action, key: &[u8]) -> Seen {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.frontend == frontend && s.op == op && s.key == key)
            .cloned()
            .unwrap_or_else(|| panic!("no {op:?} {key:?} from {frontend}: {:?}", self.0))
    }
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn credentials_and_trace_context_from_every_frontend_reach_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = copy_of_staged_plugins(dir.path());
    for name in [
        "kvs_compat_native_frontend_1_0",
        "kvs_compat_native_frontend_1_1",
        "kvs_compat_native_frontend_1_3",
        "kvs_template_native_frontend",
    ] {
        let f = lib(name);
        std::fs::copy(&f, plugins.join(f.file_name().unwrap())).unwrap();
    }
    let catalog = Catalog::scan(&plugins).unwrap();
    let cfg = config(
        &plugins,
        "file",
        &format!(
            "frontends = [\"rest\", \"grpc\", \"wasm-rest\", \"compat-frontend-1-0\", \"compat-frontend-1-1\", \"compat-frontend-1-3\", \"template-frontend\"]\n\
             [plugins.file]\npath = {:?}\n\
             [plugins.rest]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.grpc]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.wasm-rest]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.compat-frontend-1-0]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.compat-frontend-1-1]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.compat-frontend-1-3]\nlisten = \"127.0.0.1:0\"\n\
             [plugins.template-frontend]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("kvs.log")
        ),
    );
    let hook = Arc::new(Recorder::default());
    let running = lifecycle::start_with(
        &cfg,
        &catalog,
        StartOptions {
            request_hook: Some(hook.clone()),
        },
    )
    .unwrap();
    let endpoint = |name: &str| {
        running
            .endpoints()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1[0]
            .clone()
    };

    // REST and wasm-rest: Authorization: Bearer and traceparent headers.
    let http = http_client();
    for (frontend, path) in [("rest", "/v1/key/"), ("wasm-rest", "/v1/key/")] {
        let base = endpoint(frontend);
        let token = format!("token-{frontend}");
        let put = http
            .put(format!("{base}{path}k-{frontend}"))
            .bearer_auth(&token)
            .header("traceparent", TRACEPARENT)
            .body("v")
            .send()
            .unwrap();
        assert_eq!(put.status(), 201, "{frontend}");
        let seen = hook.find(frontend, Action::Put, format!("k-{frontend}").as_bytes());
        assert_eq!(seen.bearer.as_deref(), Some(token.as_str()), "{frontend}");
        assert_eq!(seen.traceparent.as_deref(), Some(TRACEPARENT), "{frontend}");
        assert!(seen.has_peer, "{frontend}");
        let get = http
            .get(format!("{base}{path}k-{frontend}"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(get.status(), 200);
        let seen = hook.find(frontend, Action::Get, format!("k-{frontend}").as_bytes());
        assert_eq!(seen.bearer.as_deref(), Some(token.as_str()));

        // The hook's refusal is the answer, and the write is never applied.
        let denied = http
            .put(format!("{base}{path}deny-{frontend}"))
            .body("v")
            .send()
            .unwrap();
        assert_eq!(denied.status(), 400, "{frontend}");
        assert!(
            denied
                .text()
                .unwrap()
                .contains("refused by the request hook")
        );
        assert_eq!(
            running
                .store
                .get(format!("deny-{frontend}").as_bytes())
                .unwrap(),
            None
        );
    }

    // The template third parties copy carries the same, with std alone.
    let template = endpoint("template-frontend");
    let got = http
        .get(format!("{template}/v1/key/k-rest"))
        .bearer_auth("token-template")
        .header("traceparent", TRACEPARENT)
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().unwrap(), "v");
    let seen = hook.find("template-frontend", Action::Get, b"k-rest");
    assert_eq!(seen.bearer.as_deref(), Some("token-template"));
    assert_eq!(seen.traceparent.as_deref(), Some(TRACEPARENT));
    assert!(seen.has_peer);

    // gRPC: authorization and traceparent metadata, and the client's deadline.
    let grpc = endpoint("grpc").replace("grpc://", "http://");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut client = v1::key_value_client::KeyValueClient::connect(grpc)
                .await
                .unwrap();
            let mut request = tonic::Request::new(v1::PutRequest {
                key: b"k-grpc".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            });
            request.set_timeout(std::time::Duration::from_secs(5));
            let md = request.metadata_mut();
            md.insert("authorization", "Bearer token-grpc".parse().unwrap());
            md.insert("traceparent", TRACEPARENT.parse().unwrap());
            client.put(request).await.unwrap();
            let denied = client
                .put(v1::PutRequest {
                    key: b"deny-grpc".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(denied.code(), tonic::Code::InvalidArgument);
        });
    let seen = hook.find("grpc", Action::Put, b"k-grpc");
    assert_eq!(seen.bearer.as_deref(), Some("token-grpc"));
    assert_eq!(seen.traceparent.as_deref(), Some(TRACEPARENT));
    assert!(seen.has_peer && seen.has_deadline, "{seen:?}");

    // A third party's native frontend: 1.1 and later carry what its protocol presented;
    // 1.0 cannot, so its calls arrive anonymous.
    for (frontend, carries) in [
        ("compat-frontend-1-1", true),
        ("compat-frontend-1-3", true),
        ("compat-frontend-1-0", false),
    ] {
        let mut line = Line::connect(&endpoint(frontend));
        let mut ask = |request: &str| line.ask(request);
        if carries {
            assert_eq!(ask("AUTH token-line"), "OK");
            assert_eq!(ask(&format!("TRACE {TRACEPARENT}")), "OK");
        }
        assert_eq!(ask("PUT k-line v"), "OK");
        let seen = hook.find(frontend, Action::Put, b"k-line");
        assert_eq!(seen.bearer.as_deref(), carries.then_some("token-line"));
        assert_eq!(seen.traceparent.as_deref(), carries.then_some(TRACEPARENT));
        assert_eq!(seen.has_peer, carries);
        assert!(ask("PUT deny-line v").contains("refused by the request hook"));
    }

    running.stop().unwrap();
}
