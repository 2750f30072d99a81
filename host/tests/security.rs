//! Security end to end, with real clients: TLS on rest, grpc and wasm-rest (curl,
//! Python's grpcio, reqwest/rustls), JWT bearer tokens, roles on key prefixes, mTLS
//! identities, certificate rotation by SIGHUP, connection and header caps.
//!
//! Certificates are made with the openssl command line, as the README's "Securing kvs"
//! does; tokens with jsonwebtoken (and by hand, for the ones no library will make).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kvs_proto::book;
use reqwest::StatusCode;
use serde_json::json;

use crate::util::{Kvs, http_client, staged_plugins, write_config};

/// A test CA and the certificates it issues, made with `openssl`.
pub(crate) struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub(crate) fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=kvs test CA",
            ],
        );
        Pki { dir }
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `name.pem` / `name.key` (mode 600) / `name.der` with common name `cn`,
    /// for a server on 127.0.0.1 or for a client.
    pub(crate) fn issue(&self, name: &str, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let ext = if server {
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-in",
                &format!("{name}.pem"),
                "-outform",
                "der",
                "-out",
                &format!("{name}.der"),
            ],
        );
        let key = self.dir.join(format!("{name}.key"));
        chmod(&key, 0o600);
        (self.dir.join(format!("{name}.pem")), key)
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signing material for tokens, and the `[auth]` config that trusts it.
struct Issuer {
    secret: Vec<u8>,
    es_private: Vec<u8>,
    es_public: Vec<u8>,
    auth: String,
}

const AUDIENCE: &str = "kvs";
const ISSUER: &str = "kvs-tests";

impl Issuer {
    fn new(dir: &Path) -> Issuer {
        let secret: Vec<u8> = (0..48).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        let secret_file = dir.join("jwt.secret");
        std::fs::write(&secret_file, &secret).unwrap();
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "jwt-es.key",
            ],
        );
        openssl(
            dir,
            &["pkey", "-in", "jwt-es.key", "-pubout", "-out", "jwt-es.pub"],
        );
        let auth = format!(
            r#"
[auth]
enabled = true
[auth.jwt]
hs256_secret_file = {secret_file:?}
public_keys = [{public:?}]
audience = "{AUDIENCE}"
issuer = "{ISSUER}"
[auth.roles.reader]
read = ["app/"]
[auth.roles.writer]
read = ["app/"]
write = ["app/"]
[auth.roles.dropbox]
write = ["drop/"]
[auth.principals]
alice = ["reader"]
bob = ["writer"]
dave = ["dropbox"]
client1 = ["writer"]
"#,
            public = dir.join("jwt-es.pub"),
        );
        Issuer {
            secret,
            es_private: std::fs::read(dir.join("jwt-es.key")).unwrap(),
            es_public: std::fs::read(dir.join("jwt-es.pub")).unwrap(),
            auth,
        }
    }

    fn claims(sub: &str) -> serde_json::Value {
        json!({"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "exp": now() + 600})
    }

    /// HS256 with the configured secret.
    fn hs256(&self, claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(&self.secret).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    /// ES256 with the configured key pair.
    fn es256(&self, claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_ec_pem(&self.es_private).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
    }

    /// Every token that must be refused, with what the refusal must say.
    fn bad_tokens(&self) -> Vec<(&'static str, String, &'static str)> {
        let c = Self::claims("bob");
        let with = |k: &str, v: serde_json::Value| {
            let mut c = c.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        let other_secret = EncodingKey::from_secret(&[b'z'; 48]).unwrap();
        let hs_with_public_key = EncodingKey::from_secret(&self.es_public).unwrap();
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(c.to_string())
        );
        vec![
            (
                "expired",
                self.hs256(&with("exp", json!(now() - 3600))),
                "expired",
            ),
            (
                "not yet valid",
                self.hs256(&with("nbf", json!(now() + 3600))),
                "not valid yet",
            ),
            (
                "wrong audience",
                self.hs256(&with("aud", json!("someone-else"))),
                "audience",
            ),
            (
                "wrong issuer",
                self.es256(&with("iss", json!("mallory"))),
                "issuer",
            ),
            // `audience` and `issuer` are configured: a token must carry them.
            (
                "no audience",
                self.hs256(&without("aud")),
                "no \"aud\" claim",
            ),
            ("no issuer", self.es256(&without("iss")), "no \"iss\" claim"),
            (
                "wrong signature",
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &other_secret).unwrap(),
                "signature",
            ),
            ("alg=none", unsigned, "token"),
            (
                "HS256 signed with the public key",
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &hs_with_public_key)
                    .unwrap(),
                "signature",
            ),
            ("garbage", "not.a.jwt".to_string(), "malformed"),
        ]
    }
}

const GRPC_TABLE: &str = "\n[plugins.grpc]\nlisten = \"127.0.0.1:0\"\n";
const WASM_TABLE: &str = "\n[plugins.wasm-rest]\nlisten = \"127.0.0.1:0\"\n";

/// `config.toml` with rest, grpc and wasm-rest on free ports, `auth` before the
/// plug-in tables and `tls` (an inline table, or "") in each frontend's table.
fn secured_config(dir: &Path, auth: &str, tls: &str) -> PathBuf {
    let path = write_config(dir, auth);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(
        "frontends = [\"rest\"]",
        "frontends = [\"rest\", \"grpc\", \"wasm-rest\"]",
    );
    text.push_str(tls);
    text.push_str(GRPC_TABLE);
    text.push_str(tls);
    text.push_str(WASM_TABLE);
    text.push_str(tls);
    std::fs::write(&path, text).unwrap();
    path
}

fn tls_line(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    match client_ca {
        None => format!("tls = {{ cert = {cert:?}, key = {key:?} }}\n"),
        Some(ca) => format!("tls = {{ cert = {cert:?}, key = {key:?}, client_ca = {ca:?} }}\n"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A book-service call with an optional bearer token; the gRPC status code on error.
fn grpc_put(endpoint: &str, token: Option<&str>, key: &str) -> Result<(), tonic::Code> {
    rt().block_on(async {
        let url = endpoint.replace("grpc://", "http://");
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = book::key_value_client::KeyValueClient::new(channel);
        let mut request = tonic::Request::new(book::PutRequest {
            key: key.into(),
            value: "v".into(),
        });
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        client.put(request).await.map(|_| ()).map_err(|s| s.code())
    })
}

fn grpc_get(endpoint: &str, token: &str, key: &str) -> Result<String, tonic::Code> {
    rt().block_on(async {
        let url = endpoint.replace("grpc://", "http://");
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = book::key_value_client::KeyValueClient::new(channel);
        let mut request = tonic::Request::new(book::GetRequest { key: key.into() });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client
            .get(request)
            .await
            .map(|r| r.into_inner().value)
            .map_err(|s| s.code())
    })
}

#[test]
fn tokens_and_roles_decide_alike_for_rest_grpc_and_wasm_rest() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let config = secured_config(dir.path(), &issuer.auth, "");
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let http = http_client();
    let bob = issuer.es256(&Issuer::claims("bob"));
    let alice = issuer.hs256(&Issuer::claims("alice"));
    for frontend in ["rest", "wasm-rest"] {
        let url = |key: &str| format!("{}/v1/key/{key}", kvs.endpoint(frontend));
        // Nothing presented: 401 saying how to authenticate, without error="...".
        let r = http.put(url("app/x")).body("v").send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{frontend}");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="kvs""#,
            "{frontend}"
        );
        for (what, token, reason) in issuer.bad_tokens() {
            let r = http.get(url("app/x")).bearer_auth(&token).send().unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{frontend}: {what}");
            assert_eq!(
                r.headers()["www-authenticate"],
                r#"Bearer realm="kvs", error="invalid_token""#,
                "{frontend}: {what}"
            );
            let body = r.text().unwrap();
            assert!(body.contains(reason), "{frontend}: {what}: {body}");
            assert!(
                !body.contains(&token),
                "{frontend}: {what}: the body repeats the token"
            );
        }
        // bob (writer, ES256) writes app/; alice (reader, HS256) reads it and no more.
        let r = http
            .put(url("app/x"))
            .bearer_auth(&bob)
            .body(frontend)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{frontend}");
        let r = http.get(url("app/x")).bearer_auth(&alice).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{frontend}");
        assert_eq!(r.text().unwrap(), frontend);
        let r = http
            .put(url("app/x"))
            .bearer_auth(&alice)
            .body("no")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{frontend}");
        let r = http
            .delete(url("app/x"))
            .bearer_auth(&alice)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{frontend}");
        let r = http.get(url("other/x")).bearer_auth(&alice).send().unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{frontend}");
        let r = http
            .put(url("other/x"))
            .bearer_auth(&bob)
            .body("no")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{frontend}");
        // Someone with a valid token but no role.
        let carol = issuer.hs256(&Issuer::claims("carol"));
        let r = http.get(url("app/x")).bearer_auth(&carol).send().unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{frontend}");
    }
    let grpc = kvs.endpoint("grpc");
    assert_eq!(
        grpc_put(&grpc, None, "app/g"),
        Err(tonic::Code::Unauthenticated)
    );
    for (what, token, _) in issuer.bad_tokens() {
        assert_eq!(
            grpc_put(&grpc, Some(&token), "app/g"),
            Err(tonic::Code::Unauthenticated),
            "grpc: {what}"
        );
    }
    assert_eq!(
        grpc_put(&grpc, Some(&alice), "app/g"),
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        grpc_put(&grpc, Some(&bob), "other/g"),
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(grpc_put(&grpc, Some(&bob), "app/g"), Ok(()));
    assert_eq!(grpc_get(&grpc, &alice, "app/g"), Ok("v".to_string()));
    assert_eq!(
        grpc_get(&grpc, &alice, "other/g"),
        Err(tonic::Code::PermissionDenied)
    );

    // One audit line per refusal, naming who, what and why, never the token.
    let log = kvs.stop();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("kvs::audit")).collect();
    assert!(
        audit.iter().any(|l| l.contains("principal=\"alice\"")
            && l.contains("op=Put")
            && l.contains("key_prefix=app/x")
            && l.contains("may not write")),
        "{log}"
    );
    assert!(audit.iter().any(|l| l.contains("expired")), "{log}");
    assert!(
        !log.contains(&alice) && !log.contains(&bob),
        "a token was logged:\n{log}"
    );
}

/// Runs curl; returns (exit code, HTTP status or 0, body).
/// Atomic operations under roles: a write-only principal learns whether its
/// conditional write applied, not the key's revision; a reader may not write
/// conditionally; an update that reveals the value needs read too (RESP `INCR`).
#[test]
fn atomic_operations_reveal_nothing_a_role_does_not_grant() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let config = secured_config(dir.path(), &issuer.auth, "");
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let http = http_client();
    let dave = issuer.hs256(&Issuer::claims("dave")); // write drop/, read nothing
    let bob = issuer.hs256(&Issuer::claims("bob")); // read and write app/
    let alice = issuer.hs256(&Issuer::claims("alice")); // read app/
    let url = |key: &str| format!("{}/v1/key/{key}", kvs.endpoint("rest"));
    let put = |key: &str, token: &str, header: (&str, &str)| {
        http.put(url(key))
            .bearer_auth(token)
            .header(header.0, header.1)
            .body("v")
            .send()
            .unwrap()
    };
    let first = put("drop/x", &dave, ("if-none-match", "*"));
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(
        !first.headers().contains_key("etag"),
        "dave cannot read drop/x"
    );
    let again = put("drop/x", &dave, ("if-none-match", "*"));
    assert_eq!(again.status(), StatusCode::PRECONDITION_FAILED);
    assert!(
        !again.headers().contains_key("etag"),
        "nor learn its revision"
    );
    // bob may read app/: his conditional writes carry the ETag.
    let created = put("app/c", &bob, ("if-none-match", "*"));
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(created.headers().contains_key("etag"));
    let refused = put("app/c", &alice, ("if-match", "*"));
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "alice only reads");
    assert!(!refused.headers().contains_key("etag"));
    // A TTL is a write like any other: dave may set one, and not see it.
    let ttl = put("drop/t", &dave, ("kvs-ttl-ms", "60000"));
    assert_eq!(ttl.status(), StatusCode::CREATED);
    kvs.stop();
}

fn curl(args: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl (`.ci/run` installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

/// A Python grpcio client over TLS (Debian's python3-grpcio) calling the book's
/// service; prints one line per call: `ok <value>` or the status code's name.
const GRPCIO_CLIENT: &str = r#"
import sys, grpc
ca, target, token = sys.argv[1], sys.argv[2], sys.argv[3]
def field(n, s):
    b = s.encode()
    return bytes([n << 3 | 2, len(b)]) + b
def text_of(resp):
    return resp[2:2 + resp[1]].decode() if resp else ""
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
with grpc.secure_channel(target, creds) as ch:
    ident = lambda b: b
    calls = {m: ch.unary_unary("/KeyValue/" + m, request_serializer=ident, response_deserializer=ident)
             for m in ("Put", "Get")}
    meta = [("authorization", "Bearer " + token)] if token != "-" else []
    for line in sys.argv[4:]:
        method, key, *value = line.split(" ")
        req = field(1, key) + (field(2, value[0]) if value else b"")
        try:
            print("ok", text_of(calls[method](req, metadata=meta, timeout=20)))
        except grpc.RpcError as e:
            print(e.code().name)
"#;

fn grpcio(ca: &Path, endpoint: &str, token: &str, calls: &[&str]) -> Vec<String> {
    let target = endpoint.trim_start_matches("grpcs://");
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(GRPCIO_CLIENT)
        .arg(ca)
        .arg(target)
        .arg(token)
        .args(calls)
        .output()
        .expect("python3 (`.ci/run` installs python3-grpcio)");
    assert!(
        out.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn curl_and_grpcio_over_tls_with_bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "pki");
    let (cert, key) = pki.issue("server", "localhost", true);
    let issuer = Issuer::new(dir.path());
    // A key others can read is served, with a warning.
    chmod(&key, 0o644);
    let config = secured_config(dir.path(), &issuer.auth, &tls_line(&cert, &key, None));
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    assert!(kvs.log().contains("chmod 600"), "{}", kvs.log());
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let bob = issuer.hs256(&Issuer::claims("bob"));
    let alice = issuer.es256(&Issuer::claims("alice"));
    for frontend in ["rest", "wasm-rest"] {
        let base = kvs.endpoint(frontend);
        assert!(base.starts_with("https://"), "{base}");
        let url = format!("{base}/v1/key/app/curl");
        let auth = format!("Authorization: Bearer {bob}");
        let (code, status, body) = curl(&[
            "--cacert", ca, "-X", "PUT", "-H", &auth, "-d", frontend, &url,
        ]);
        assert_eq!((code, status), (0, 201), "{frontend}: {body}");
        let auth = format!("Authorization: Bearer {alice}");
        let (code, status, body) = curl(&["--cacert", ca, "-H", &auth, &url]);
        assert_eq!((code, status, body.as_str()), (0, 200, frontend));
        let (_, status, _) = curl(&["--cacert", ca, "-X", "PUT", "-H", &auth, "-d", "x", &url]);
        assert_eq!(status, 403, "{frontend}");
        let (_, status, _) = curl(&["--cacert", ca, &url]);
        assert_eq!(status, 401, "{frontend}");
        // Without the CA the certificate is not trusted; plain HTTP gets no answer.
        let (code, _, _) = curl(&[&url]);
        assert_ne!(
            code, 0,
            "{frontend}: curl trusted a certificate it has no CA for"
        );
        let (code, status, _) = curl(&[&url.replace("https://", "http://")]);
        assert!(
            code != 0 || status == 0,
            "{frontend}: plain HTTP was answered"
        );
    }
    let grpc = kvs.endpoint("grpc");
    assert!(grpc.starts_with("grpcs://"), "{grpc}");
    let ca = pki.ca();
    assert_eq!(
        grpcio(
            &ca,
            &grpc,
            &bob,
            &["Put app/py hello", "Get app/py", "Put other/py no"]
        ),
        ["ok ", "ok hello", "PERMISSION_DENIED"]
    );
    assert_eq!(
        grpcio(&ca, &grpc, &alice, &["Get app/py", "Put app/py no"]),
        ["ok hello", "PERMISSION_DENIED"]
    );
    assert_eq!(
        grpcio(&ca, &grpc, "-", &["Get app/py"]),
        ["UNAUTHENTICATED"]
    );
    let expired =
        issuer.hs256(&json!({"sub": "bob", "aud": AUDIENCE, "iss": ISSUER, "exp": now() - 600}));
    assert_eq!(
        grpcio(&ca, &grpc, &expired, &["Get app/py"]),
        ["UNAUTHENTICATED"]
    );
    kvs.stop();
}

#[test]
fn mtls_refuses_clients_without_a_certificate_and_names_those_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "pki");
    let (cert, key) = pki.issue("server", "localhost", true);
    let (client1, client1_key) = pki.issue("client1", "client1", false);
    let (stranger, stranger_key) = pki.issue("stranger", "stranger", false);
    let other_ca = Pki::new(dir.path(), "other-pki");
    let (forged, forged_key) = other_ca.issue("forged", "client1", false);
    let issuer = Issuer::new(dir.path());
    let config = secured_config(
        dir.path(),
        &issuer.auth,
        &tls_line(&cert, &key, Some(&pki.ca())),
    );
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    for frontend in ["rest", "wasm-rest"] {
        let url = format!("{}/v1/key/app/m", kvs.endpoint(frontend));
        // No client certificate, or one from another CA: refused in the handshake.
        let (code, status, _) = curl(&["--cacert", ca, &url]);
        assert!(
            code != 0 && status == 0,
            "{frontend}: served without a client certificate"
        );
        let (code, status, _) = curl(&[
            "--cacert",
            ca,
            "--cert",
            &s(&forged),
            "--key",
            &s(&forged_key),
            &url,
        ]);
        assert!(
            code != 0 && status == 0,
            "{frontend}: served a certificate of another CA"
        );
        // client1 is a writer by its certificate's common name; stranger has no role.
        let mine = [
            "--cacert",
            ca,
            "--cert",
            &s(&client1),
            "--key",
            &s(&client1_key),
        ];
        let (code, status, body) =
            curl(&[&mine[..], &["-X", "PUT", "-d", frontend, &url]].concat());
        assert_eq!((code, status), (0, 201), "{frontend}: {body}");
        let (_, status, body) = curl(&[&mine[..], &[url.as_str()]].concat());
        assert_eq!((status, body.as_str()), (200, frontend));
        let theirs = [
            "--cacert",
            ca,
            "--cert",
            &s(&stranger),
            "--key",
            &s(&stranger_key),
        ];
        let (_, status, body) = curl(&[&theirs[..], &[url.as_str()]].concat());
        assert_eq!(status, 403, "{frontend}: {body}");
        assert!(body.contains("stranger"), "{body}");
        // A token outranks the certificate: alice (reader) may not write.
        let auth = format!(
            "Authorization: Bearer {}",
            issuer.hs256(&Issuer::claims("alice"))
        );
        let (_, status, _) =
            curl(&[&mine[..], &["-H", &auth, "-X", "PUT", "-d", "x", &url]].concat());
        assert_eq!(status, 403, "{frontend}");
    }
    kvs.stop();
}

/// The certificate (DER) a response's connection was served with.
fn served_certificate(client: &reqwest::blocking::Client, url: &str) -> Vec<u8> {
    let response = client.get(url).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("tls info")
        .to_vec()
}

fn tls_client(ca: &Path) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .tls_info(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[test]
fn sighup_rotates_certificates_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "pki");
    let (first, first_key) = pki.issue("first", "localhost", true);
    pki.issue("second", "localhost", true);
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&first, &live_cert).unwrap();
    std::fs::copy(&first_key, &live_key).unwrap();
    let config = write_config(dir.path(), "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&tls_line(&live_cert, &live_key, None));
    std::fs::write(&config, text).unwrap();
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let url = format!("{}/healthz", kvs.endpoint("rest"));
    let first_der = std::fs::read(pki.dir.join("first.der")).unwrap();
    let second_der = std::fs::read(pki.dir.join("second.der")).unwrap();
    let old_connection = tls_client(&pki.ca());
    assert_eq!(served_certificate(&old_connection, &url), first_der);

    std::fs::copy(pki.dir.join("second.pem"), &live_cert).unwrap();
    std::fs::copy(pki.dir.join("second.key"), &live_key).unwrap();
    hangup(&kvs);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(&tls_client(&pki.ca()), &url) != second_der {
        assert!(
            Instant::now() < deadline,
            "no new certificate after SIGHUP:\n{}",
            kvs.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection opened before the reload still works, on its old handshake.
    assert_eq!(served_certificate(&old_connection, &url), first_der);

    // A broken file: refused, reported, and the second certificate keeps serving.
    std::fs::write(&live_cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    hangup(&kvs);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kvs.log().contains("still serving the previous certificate") {
        assert!(
            Instant::now() < deadline,
            "broken certificate not reported:\n{}",
            kvs.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(served_certificate(&tls_client(&pki.ca()), &url), second_der);
    kvs.stop();
}

fn hangup(kvs: &Kvs) {
    let ok = Command::new("kill")
        .args(["-HUP", &kvs.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn listeners_cap_connections_and_header_size() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("max_connections = 2\nmax_header_bytes = 8192\n");
    std::fs::write(&config, text).unwrap();
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let addr = kvs
        .endpoint("rest")
        .trim_start_matches("http://")
        .to_string();
    let http = http_client();
    // A header block over the cap: 431, and the server carries on.
    let r = http
        .get(kvs.at("/healthz"))
        .header("x-padding", "p".repeat(10_000))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Two connections held open; a third is closed at once, unanswered.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            s
        })
        .collect();
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = third.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a connection over max_connections was served");
    drop(held);
    // Once they close, new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(kvs.at("/healthz")).send().map(|r| r.status()).ok() != Some(StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "not served after connections closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(kvs.log().contains("max_connections"), "{}", kvs.log());
    kvs.stop();
}

#[test]
fn a_bad_tls_or_auth_config_stops_kvs_at_start_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let config = write_config(dir.path(), "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&tls_line(&missing, &missing, None));
    std::fs::write(&config, &text).unwrap();
    let err = Kvs::try_start(&config, &staged_plugins(), &[])
        .err()
        .expect("started");
    assert!(err.contains("missing.pem"), "{err}");

    let short = dir.path().join("short.secret");
    std::fs::write(&short, "tooshort").unwrap();
    let config = write_config(
        dir.path(),
        &format!("[auth]\nenabled = true\n[auth.jwt]\nhs256_secret_file = {short:?}\n"),
    );
    let err = Kvs::try_start(&config, &staged_plugins(), &[])
        .err()
        .expect("started");
    assert!(err.contains("at least 32"), "{err}");

    let config = write_config(
        dir.path(),
        "[auth]\nenabled = true\n[auth.principals]\nalice = [\"raeder\"]\n",
    );
    let err = Kvs::try_start(&config, &staged_plugins(), &[])
        .err()
        .expect("started");
    assert!(err.contains("raeder"), "{err}");
}

/// Every kind of key `[auth.jwt]` takes, checked through the host's hook directly:
/// RS256 and EdDSA public keys from PEM, an RSA key from a JWKS picked by `kid`, and a
/// token naming a `kid` the JWKS lacks.
#[test]
fn rsa_eddsa_and_jwks_keys_verify_tokens_of_their_own_algorithm_only() {
    use kvs_host::access::{AccessControl, AuthConfig};
    use kvs_host::caller::{Action, Caller, RequestHook};
    use kvs_plugin_api::ErrorCode;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
    );
    openssl(d, &["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"]);
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    openssl(d, &["pkey", "-in", "ed.key", "-pubout", "-out", "ed.pub"]);
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "jwk.key",
        ],
    );
    let modulus = Command::new("openssl")
        .current_dir(d)
        .args(["rsa", "-in", "jwk.key", "-noout", "-modulus"])
        .output()
        .unwrap();
    let hex = String::from_utf8(modulus.stdout).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"}]});
    std::fs::write(d.join("jwks.json"), jwks.to_string()).unwrap();
    let config: AuthConfig = toml::from_str(&format!(
        "enabled = true\n[jwt]\npublic_keys = [{:?}, {:?}]\njwks_file = {:?}\n\
         [roles.all]\nread = [\"*\"]\n[principals]\nrsa = [\"all\"]\ned = [\"all\"]\njwk = [\"all\"]\n",
        d.join("rsa.pub"),
        d.join("ed.pub"),
        d.join("jwks.json"),
    ))
    .unwrap();
    let access = AccessControl::from_config(&config).unwrap().unwrap();
    let check = |token: &str| {
        let caller = Caller {
            frontend: "test",
            bearer_token: Some(token),
            ..Caller::default()
        };
        access
            .check(Action::Get, b"k", &caller)
            .map_err(|e| (e.code(), e.message().to_string()))
    };
    let claims = |sub: &str| json!({"sub": sub, "exp": now() + 600});
    let key = |file: &str| std::fs::read(d.join(file)).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap();
    let ed = EncodingKey::from_ed_pem(&key("ed.key")).unwrap();
    let jwk = EncodingKey::from_rsa_pem(&key("jwk.key")).unwrap();
    let sign = |alg, kid: Option<&str>, sub: &str, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        jsonwebtoken::encode(&header, &claims(sub), key).unwrap()
    };
    assert_eq!(check(&sign(Algorithm::RS256, None, "rsa", &rsa)), Ok(()));
    assert_eq!(check(&sign(Algorithm::PS256, None, "rsa", &rsa)), Ok(()));
    assert_eq!(check(&sign(Algorithm::EdDSA, None, "ed", &ed)), Ok(()));
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k1"), "jwk", &jwk)),
        Ok(())
    );
    // A kid the JWKS does not have falls back to no key that verifies it.
    let unknown_kid = check(&sign(Algorithm::RS256, Some("k2"), "jwk", &jwk)).unwrap_err();
    assert_eq!(unknown_kid.0, ErrorCode::UNAUTHENTICATED, "{unknown_kid:?}");
    // No HMAC key is configured: an HS256 token made with the RSA public key is refused.
    let confused = EncodingKey::from_secret(&key("rsa.pub")).unwrap();
    let err = check(&sign(Algorithm::HS256, None, "rsa", &confused)).unwrap_err();
    assert_eq!(err.0, ErrorCode::UNAUTHENTICATED);
    assert!(err.1.contains("HS256"), "{err:?}");
    // A token signed by the Ed25519 key but claiming RS256 is refused too.
    let relabelled = {
        let t = sign(Algorithm::EdDSA, None, "ed", &ed);
        let (_, rest) = t.split_once('.').unwrap();
        format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#)
        )
    };
    assert_eq!(
        check(&relabelled).unwrap_err().0,
        ErrorCode::UNAUTHENTICATED
    );
}

/// The Redis frontend: `AUTH` presents a bearer token and the host decides, as for
/// every other frontend; refusals come back as `NOAUTH` / `NOPERM`.
#[test]
fn resp_auth_presents_a_token_and_the_host_decides() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let path = write_config(dir.path(), &issuer.auth);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("frontends = [\"rest\"]", "frontends = [\"resp\"]")
        + "\n[plugins.resp]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&path, text).unwrap();
    let kvs = Kvs::start(&path, &staged_plugins(), &[]);
    let endpoint = kvs.endpoint("resp");
    let port = endpoint.rsplit(':').next().unwrap();
    let cli = crate::resp::cli;
    let as_user = |token: &str, args: &[&str]| {
        let mut all = vec!["--no-auth-warning", "-a", token];
        all.extend_from_slice(args);
        cli(port, &all)
    };
    let (alice, bob) = (
        issuer.hs256(&Issuer::claims("alice")),
        issuer.hs256(&Issuer::claims("bob")),
    );
    assert!(cli(port, &["SET", "app/x", "1"]).starts_with("NOAUTH"));
    assert!(as_user(&alice, &["SET", "app/x", "1"]).starts_with("NOPERM"));
    assert_eq!(as_user(&bob, &["SET", "app/x", "1"]), "OK");
    assert_eq!(as_user(&alice, &["GET", "app/x"]), "1");
    assert!(as_user(&alice, &["GET", "other/y"]).starts_with("NOPERM"));
    // A multi-key write with one key the caller may not write writes none of them: the
    // frontend asks the host about every key first (plugin-api 1.4's `check`).
    let refused = as_user(
        &bob,
        &["MSET", "app/m1", "v1", "secret/m2", "v2", "app/m3", "v3"],
    );
    assert!(refused.starts_with("NOPERM"), "{refused}");
    for key in ["app/m1", "app/m3"] {
        assert_eq!(
            as_user(&bob, &["EXISTS", key]),
            "0",
            "{key} written by a refused MSET"
        );
    }
    let refused = as_user(&bob, &["DEL", "app/x", "secret/y"]);
    assert!(refused.starts_with("NOPERM"), "{refused}");
    assert_eq!(
        as_user(&bob, &["GET", "app/x"]),
        "1",
        "deleted by a refused DEL"
    );
    assert_eq!(
        as_user(&bob, &["MSET", "app/m1", "v1", "app/m3", "v3"]),
        "OK"
    );
    for (what, token, _) in issuer.bad_tokens() {
        let answer = as_user(&token, &["GET", "app/x"]);
        assert!(answer.starts_with("NOAUTH"), "{what}: {answer}");
    }
    // HELLO 3 AUTH carries the token too.
    let answer = cli(port, &["-3", "HELLO", "3", "AUTH", "default", &bob]);
    assert!(answer.contains("proto"), "{answer}");

    // AUTH verifies the token as it is presented: a bad one is WRONGPASS, as in Redis,
    // and leaves the connection's credentials as they were.
    use std::io::{Read, Write};
    let command = |args: &[&str]| {
        let mut text = format!("*{}\r\n", args.len());
        for a in args {
            text.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        text
    };
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ask = |args: &[&str]| {
        s.write_all(command(args).as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(ask(&["AUTH", "garbage"]), WRONGPASS);
    assert_eq!(ask(&["AUTH", "default", "garbage"]), WRONGPASS);
    assert_eq!(ask(&["HELLO", "3", "AUTH", "x", "garbage"]), WRONGPASS);
    for (what, token, _) in issuer.bad_tokens() {
        assert_eq!(ask(&["AUTH", &token]), WRONGPASS, "{what}");
    }
    assert!(ask(&["GET", "app/x"]).starts_with("-NOAUTH"));
    // A valid token is OK, even one with no role (a login, not a grant).
    let carol = issuer.hs256(&Issuer::claims("carol"));
    assert_eq!(ask(&["AUTH", &carol]), "+OK\r\n");
    assert_eq!(ask(&["AUTH", &bob]), "+OK\r\n");
    assert_eq!(ask(&["GET", "app/x"]), "$1\r\n1\r\n");
    // A failed AUTH keeps bob logged in.
    assert_eq!(ask(&["AUTH", "garbage"]), WRONGPASS);
    assert_eq!(ask(&["SET", "app/y", "2"]), "+OK\r\n");
    let log = kvs.stop();
    // Checking a good token refuses nothing: no audit line for carol or bob's logins.
    assert!(
        !log.lines()
            .any(|l| l.contains("kvs::audit") && l.contains("principal=\"carol\"")),
        "{log}"
    );
}

/// Two `Authorization` headers (or gRPC `authorization` entries): which one names the
/// caller would be a guess, so the request is refused before any is read — 400 on rest
/// and wasm-rest, INVALID_ARGUMENT on gRPC — even when both tokens are valid.
#[test]
fn duplicate_authorization_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let config = secured_config(dir.path(), &issuer.auth, "");
    let kvs = Kvs::start(&config, &staged_plugins(), &[]);
    let http = http_client();
    let bob = format!("Bearer {}", issuer.hs256(&Issuer::claims("bob")));
    let alice = format!("Bearer {}", issuer.hs256(&Issuer::claims("alice")));
    for frontend in ["rest", "wasm-rest"] {
        let url = format!("{}/v1/key/app/dup", kvs.endpoint(frontend));
        for (first, second) in [(&bob, &alice), (&alice, &bob), (&bob, &bob)] {
            // reqwest appends: both headers are sent.
            let r = http
                .put(&url)
                .header("authorization", first)
                .header("authorization", second)
                .body("v")
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{frontend}");
            assert!(r.text().unwrap().contains("more than one Authorization"));
        }
        let r = http
            .put(&url)
            .header("authorization", &bob)
            .body("v")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{frontend}");
    }
    let code = rt().block_on(async {
        let url = kvs.endpoint("grpc").replace("grpc://", "http://");
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = book::key_value_client::KeyValueClient::new(channel);
        let mut request = tonic::Request::new(book::PutRequest {
            key: "app/dup".into(),
            value: "g".into(),
        });
        for token in [&bob, &alice] {
            request
                .metadata_mut()
                .append("authorization", token.parse().unwrap());
        }
        client.put(request).await.map(|_| ()).map_err(|s| s.code())
    });
    assert_eq!(code, Err(tonic::Code::InvalidArgument));
    let bob_token = bob.trim_start_matches("Bearer ");
    assert_eq!(
        grpc_get(&kvs.endpoint("grpc"), bob_token, "app/dup"),
        Ok("v".into())
    );
    kvs.stop();
}

/// Waits for a child to exit on its own; kills it and returns `None` past `limit`.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Connections that do not talk are closed: a TLS handshake not finished within
/// `handshake_timeout_ms`; a connection whose handshake is done but that sends nothing
/// (10 s, or `idle_timeout_ms` if shorter); one that went quiet after a request. And kvs
/// raises its open-file soft limit to the hard limit at start.
#[test]
fn silent_connections_and_stalled_handshakes_are_closed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "pki");
    let (cert, key) = pki.issue("server", "localhost", true);
    let config = write_config(dir.path(), "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&tls_line(&cert, &key, None));
    text.push_str("handshake_timeout_ms = 1000\nidle_timeout_ms = 3000\n");
    std::fs::write(&config, text).unwrap();
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap();
    let nofile = format!("--nofile=256:{hard}");
    let kvs = Kvs::start_under(&["prlimit", &nofile], &config, &staged_plugins());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", kvs.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3], hard, "soft limit not raised: {limits}");
    assert!(
        kvs.log().contains("open-file limit raised"),
        "{}",
        kvs.log()
    );

    let addr = kvs
        .endpoint("rest")
        .trim_start_matches("https://")
        .to_string();
    // No ClientHello: closed at the handshake deadline.
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(tcp.read(&mut [0u8; 16]).unwrap_or(0), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "a stalled handshake was closed after {waited:?}"
    );

    // A finished handshake, then nothing: closed at the first-bytes deadline (3 s here).
    let ca = pki.ca();
    let s_client = |ca: &Path| {
        Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &addr, "-CAfile"])
            .arg(ca)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut silent = s_client(&ca);
    let waited = exits_within(&mut silent, Duration::from_secs(15));
    assert!(
        waited.is_some_and(|w| w >= Duration::from_secs(2) && w < Duration::from_secs(8)),
        "a connection that sent nothing was closed after {waited:?}"
    );

    // A request, then quiet: served, then closed once idle for 3 s.
    let mut quiet = s_client(&ca);
    quiet
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let waited = exits_within(&mut quiet, Duration::from_secs(15));
    let mut answer = String::new();
    quiet
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited.is_some_and(|w| w >= Duration::from_secs(2) && w < Duration::from_secs(8)),
        "an idle connection was closed after {waited:?} ({:?} since its request)",
        started.elapsed()
    );
    // Meanwhile, others are served as usual.
    assert_eq!(
        served_certificate(
            &tls_client(&ca),
            &format!("{}/healthz", kvs.endpoint("rest"))
        ),
        std::fs::read(pki.dir.join("server.der")).unwrap()
    );
    kvs.stop();
}

/// When clients hold every descriptor a frontend may have, the last ones are still kept
/// for the host: the admin listener answers `/readyz` at once while the frontend closes
/// new connections, and says why.
#[test]
fn the_admin_listener_answers_when_clients_hold_every_other_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let text = std::fs::read_to_string(&config).unwrap() + "max_connections_per_peer = 0\n";
    std::fs::write(&config, text).unwrap();
    // 400 descriptors: a quarter (100) is kept back from the frontends.
    let kvs = Kvs::start_under(&["prlimit", "--nofile=400:400"], &config, &staged_plugins());
    let rest = kvs
        .endpoint("rest")
        .trim_start_matches("http://")
        .to_string();
    let admin = kvs.admin();
    let mut held = Vec::new();
    for _ in 0..450 {
        match std::net::TcpStream::connect(&rest) {
            Ok(c) => held.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let http = http_client();
    let started = Instant::now();
    let ready = http.get(format!("{admin}/readyz")).send().unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "/readyz took {:?} with 450 idle clients",
        started.elapsed()
    );
    let mut log = String::new();
    for _ in 0..50 {
        log = kvs.log();
        if log.contains("last open-file descriptors") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log.contains("last open-file descriptors"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
    drop(held);
    kvs.stop();
}

/// Lists the services by gRPC reflection (as grpcurl does), with an optional token.
fn grpc_reflection(endpoint: &str, token: Option<&str>) -> Result<Vec<String>, tonic::Code> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    rt().block_on(async {
        let url = endpoint.replace("grpc://", "http://");
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let mut request = tonic::Request::new(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let mut replies = client
            .server_reflection_info(request)
            .await
            .map_err(|s| s.code())?
            .into_inner();
        let reply = replies.message().await.map_err(|s| s.code())?.unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}")
        };
        Ok(list.service.into_iter().map(|s| s.name).collect())
    })
}

/// With `[auth]` on, a caller without credentials gets health and nothing else: the
/// admin listener's `/metrics` and `/plugins` need a caller with a role (401 without
/// credentials, 403 for a valid token without a role), Redis `INFO`, `DBSIZE` and
/// `CLIENT` need an authenticated connection, gRPC reflection a valid token; `/healthz`,
/// `/readyz`, gRPC health and Redis `PING`/`HELLO`/`COMMAND` stay open.
#[test]
fn unauthenticated_callers_get_only_health() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let path = write_config(dir.path(), &issuer.auth);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "frontends = [\"rest\"]",
        "frontends = [\"rest\", \"grpc\", \"resp\"]",
    ) + GRPC_TABLE
        + "\n[plugins.resp]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&path, text).unwrap();
    let kvs = Kvs::start(&path, &staged_plugins(), &[]);
    let http = http_client();
    let admin = kvs.admin();
    let alice = issuer.hs256(&Issuer::claims("alice"));
    // A valid token whose principal has no role: a login, not an admin.
    let carol = issuer.hs256(&Issuer::claims("carol"));

    for open in ["/healthz", "/readyz"] {
        let r = http.get(format!("{admin}{open}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{open}");
    }
    for guarded in ["/metrics", "/plugins"] {
        let url = format!("{admin}{guarded}");
        let r = http.get(&url).send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{guarded}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body = r.text().unwrap();
        assert!(!body.contains("kvs_") && !body.contains(".so"), "{body}");
        let r = http.get(&url).bearer_auth("not.a.jwt").send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{guarded}");
        let r = http.get(&url).bearer_auth(&carol).send().unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{guarded}");
        let r = http.get(&url).bearer_auth(&alice).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{guarded}");
    }
    let r = http
        .get(format!("{admin}/metrics"))
        .bearer_auth(&alice)
        .send()
        .unwrap();
    assert!(r.text().unwrap().contains("kvs_"));

    // Redis: the handshake commands answer anyone; the server's state does not.
    let port = kvs.endpoint("resp").rsplit(':').next().unwrap().to_string();
    let cli = crate::resp::cli;
    assert_eq!(cli(&port, &["PING"]), "PONG");
    assert!(cli(&port, &["-3", "HELLO", "3"]).contains("proto"));
    assert!(!cli(&port, &["COMMAND", "COUNT"]).starts_with("NOAUTH"));
    for args in [
        &["INFO"][..],
        &["INFO", "keyspace"],
        &["DBSIZE"],
        &["CLIENT", "ID"],
        &["CLIENT", "INFO"],
    ] {
        let answer = cli(&port, args);
        assert!(answer.starts_with("NOAUTH"), "{args:?}: {answer}");
        // A token the host refuses does not count either.
        let answer = cli(
            &port,
            &[&["--no-auth-warning", "-a", "garbage"][..], args].concat(),
        );
        assert!(
            answer.starts_with("WRONGPASS") || answer.contains("NOAUTH"),
            "{args:?}: {answer}"
        );
    }
    let as_alice = |args: &[&str]| {
        cli(
            &port,
            &[&["--no-auth-warning", "-a", &alice][..], args].concat(),
        )
    };
    assert!(as_alice(&["INFO"]).contains("redis_version"));
    assert!(as_alice(&["DBSIZE"]).parse::<u64>().is_ok());
    assert!(as_alice(&["CLIENT", "ID"]).parse::<u64>().is_ok());

    // gRPC: health for anyone, reflection for authenticated callers.
    let grpc = kvs.endpoint("grpc");
    assert_eq!(
        grpc_reflection(&grpc, None),
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        grpc_reflection(&grpc, Some("not.a.jwt")),
        Err(tonic::Code::Unauthenticated)
    );
    let names = grpc_reflection(&grpc, Some(&alice)).unwrap();
    assert!(names.iter().any(|n| n == "kvs.v1.KeyValue"), "{names:?}");
    let serving = rt().block_on(async {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let url = grpc.replace("grpc://", "http://");
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
    });
    assert_eq!(
        serving.map_err(|s| s.code()),
        Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    );
    kvs.stop();
}

/// A flood of requests with a bad token writes at most `AUDIT_LINES_PER_SEC` (20)
/// `kvs::audit` lines a second, and the refusals left out are counted in a line of
/// their own: every refusal is either written or counted.
#[test]
fn audit_lines_are_rate_limited_and_count_what_they_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let kvs = Kvs::start(
        &write_config(dir.path(), &issuer.auth),
        &staged_plugins(),
        &[],
    );
    let http = http_client();
    const FLOOD: u64 = 400;
    let started = Instant::now();
    for i in 0..FLOOD {
        let r = http
            .get(kvs.at(&format!("/v1/key/app/k{i}")))
            .bearer_auth("not.a.jwt")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let seconds = started.elapsed().as_secs() + 1;
    // The count is written when the second it belongs to is over, flood or not.
    std::thread::sleep(Duration::from_millis(1500));
    let log = kvs.stop();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("kvs::audit")).collect();
    let written = audit
        .iter()
        .filter(|l| l.contains("request refused"))
        .count() as u64;
    let suppressed: u64 = audit
        .iter()
        .filter_map(|l| l.split("suppressed=").nth(1))
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    println!(
        "{FLOOD} refusals in {seconds} s: {written} lines, {suppressed} counted as suppressed"
    );
    assert!(
        written <= 20 * (seconds + 1),
        "{written} lines in {seconds} s"
    );
    assert!(suppressed > 0, "{log}");
    assert_eq!(written + suppressed, FLOOD, "{log}");
}

/// A request whose body trickles in is answered 504 at the frontend's
/// `request_timeout_ms` on wasm-rest as on rest, instead of holding the connection (and
/// the request's memory) for as long as the client likes.
#[test]
fn a_slow_request_body_is_answered_504_at_the_request_timeout_on_rest_and_wasm_rest() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "frontends = [\"rest\"]",
        "frontends = [\"rest\", \"wasm-rest\"]",
    ) + "request_timeout_ms = 1500\n"
        + WASM_TABLE
        + "request_timeout_ms = 1500\n";
    std::fs::write(&path, text).unwrap();
    let kvs = Kvs::start(&path, &staged_plugins(), &[]);
    for frontend in ["rest", "wasm-rest"] {
        let addr = kvs
            .endpoint(frontend)
            .trim_start_matches("http://")
            .to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        s.write_all(
            b"PUT /v1/key/slow HTTP/1.1\r\nHost: kvs\r\nContent-Length: 100\r\n\r\nsome of it",
        )
        .unwrap();
        // A byte now and then: never idle, never done.
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        s.set_nonblocking(true).unwrap();
        while started.elapsed() < Duration::from_secs(8) && answer.is_empty() {
            let _ = s.write_all(b"x");
            match s.read(&mut buf) {
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{frontend}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let took = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 504"),
            "{frontend} after {took:?}: {answer:?}"
        );
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
            "{frontend}: {took:?}"
        );
    }
    kvs.stop();
}

/// Sends `request` from source address `from` (bound by Python, which std cannot do)
/// to `port` on 127.0.0.1; what came back before the server closed or 3 s passed.
fn from_address(from: &str, port: &str, request: &str) -> String {
    let script = r#"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.settimeout(3)
s.connect(("127.0.0.1", int(sys.argv[2])))
s.sendall(sys.argv[3].encode())
try:
    got = s.recv(4096)
except OSError:
    got = b""
sys.stdout.write(got.decode(errors="replace"))
"#;
    let out = Command::new("python3")
        .args(["-c", script, from, port, request])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One address cannot take every slot: past `max_connections_per_peer` its new
/// connections are closed on accept (and logged) on HTTP (rest, kvs-serve's HTTP
/// listener) and stream (resp) listeners alike, while another address is still served
/// and a closed connection gives its slot back.
#[test]
fn one_address_cannot_take_every_connection_slot() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("frontends = [\"rest\"]", "frontends = [\"rest\", \"resp\"]")
        + "max_connections_per_peer = 3\n"
        + "\n[plugins.resp]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_peer = 3\n";
    std::fs::write(&path, text).unwrap();
    let kvs = Kvs::start(&path, &staged_plugins(), &[]);
    let rest_port = kvs.url.rsplit(':').next().unwrap().to_string();
    let resp_port = kvs.endpoint("resp").rsplit(':').next().unwrap().to_string();
    const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: kvs\r\n\r\n";
    const PING: &str = "PING\r\n";
    for (port, request, answer) in [
        (&rest_port, HEALTH, "HTTP/1.1 200"),
        (&resp_port, PING, "+PONG"),
    ] {
        let ask = |s: &mut std::net::TcpStream| -> String {
            if s.write_all(request.as_bytes()).is_err() {
                return String::new();
            }
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(_) => String::new(),
            }
        };
        let connect = || {
            let s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        let mut held: Vec<_> = (0..3).map(|_| connect()).collect();
        for s in &mut held {
            assert!(ask(s).starts_with(answer), "{port}");
        }
        let mut fourth = connect();
        assert_eq!(
            ask(&mut fourth),
            "",
            "{port}: a fourth connection was served"
        );
        // Another address is served meanwhile.
        let other = from_address("127.0.0.2", port, request);
        assert!(other.starts_with(answer), "{port}: {other:?}");
        // A closed connection gives its slot back.
        held.pop();
        let mut served = false;
        for _ in 0..100 {
            if ask(&mut connect()).starts_with(answer) {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(served, "{port}: a freed slot was never reusable");
    }
    let log = kvs.stop();
    assert!(log.contains("max_connections_per_peer = 3"), "{log}");
}
