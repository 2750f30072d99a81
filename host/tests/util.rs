//! Shared helpers: where the built plug-ins are, temporary plug-in dirs, running kvs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs_host::config::{Config, Overrides, RawConfig};

/// `<target>/<profile>`: the directory holding this test binary's `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// A built cdylib in the profile dir, e.g. `lib("kvs_fixture_memory_logger")`.
pub fn lib(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("lib{name}.so"));
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo xtask test`, which builds the plug-ins first",
        path.display()
    );
    path
}

/// A `.wasm` module built by `cargo xtask build` (fixtures and templates are not staged),
/// e.g. `wasm_module("kvs_wasm_fixture_hostile")`.
pub fn wasm_module(name: &str) -> PathBuf {
    let path = profile_dir()
        .parent()
        .unwrap()
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// The released plugin-api minors the compat fixtures are built against, as their names
/// end: `["1-0", "1-1", ...]`, from `compat/releases/releases.toml` (the one list of
/// them; `cargo xtask build` builds `kvs_compat_{kind}_1_N` for each).
pub fn released_minors() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compat/releases/releases.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let list: toml::Table = toml::from_str(&text).unwrap();
    list["release"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["minor"].as_str().unwrap().replace('.', "-"))
        .collect()
}

/// `N` of a fixture name's `1-N` suffix.
pub fn minor_of(name: &str) -> u16 {
    name.rsplit('-').next().unwrap().parse().unwrap()
}

/// The HTTP client every test uses: no proxy (the requests go to loopback), and a
/// timeout so that a test fails rather than hangs.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The status a GET of `url` is answered with.
pub fn get_status(
    http: &reqwest::blocking::Client,
    url: impl reqwest::IntoUrl,
) -> reqwest::StatusCode {
    http.get(url).send().unwrap().status()
}

/// The status a PUT of `body` to `url` is answered with.
pub fn put_status(
    http: &reqwest::blocking::Client,
    url: impl reqwest::IntoUrl,
    body: impl Into<reqwest::blocking::Body>,
) -> reqwest::StatusCode {
    http.put(url).body(body).send().unwrap().status()
}

/// Asserts that every `(key, value)` reads back unchanged through `kvs`'s REST API
/// (keys percent-encoded byte by byte).
pub fn assert_reads_back(
    http: &reqwest::blocking::Client,
    kvs: &Kvs,
    cases: &[(Vec<u8>, Vec<u8>)],
) {
    for (k, v) in cases {
        let r = http
            .get(kvs.at(&format!("/v1/key/{}", encode_key(k))))
            .send()
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{k:?}");
        assert_eq!(&r.bytes().unwrap()[..], &v[..], "{k:?}");
    }
}

/// A connection to the compat native frontend's line protocol.
pub struct Line {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Line {
    pub fn connect(endpoint: &str) -> Line {
        let addr = endpoint.trim_start_matches("tcp://");
        let writer = TcpStream::connect(addr).unwrap();
        Line {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    pub fn ask(&mut self, request: &str) -> String {
        writeln!(self.writer, "{request}").unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    }
}

/// A fresh plugins directory holding copies of the named cdylibs.
pub fn plugin_dir(libs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in libs {
        let src = lib(name);
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
    }
    dir
}

/// A config for the host library (no frontends unless named).
pub fn config(plugins_dir: &Path, logger: &str, toml: &str) -> Config {
    let mut raw = RawConfig::parse(toml).unwrap();
    // No frontends unless the test names some (the host's default is `rest`).
    raw.frontends.get_or_insert_with(Vec::new);
    Config::resolve(
        raw,
        Overrides {
            plugins_dir: Some(plugins_dir.to_path_buf()),
            logger: Some(logger.to_string()),
            ..Overrides::default()
        },
    )
    .unwrap()
}

/// A unique namespace for the memory logger, so tests in one process don't share logs.
pub fn namespace(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A running `kvs` process, with its stderr collected.
pub struct Kvs {
    child: Child,
    /// The REST frontend's base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// Every frontend's endpoint, by frontend name.
    endpoints: BTreeMap<String, String>,
    log: Arc<Mutex<String>>,
}

/// The real plug-ins dir, as staged by `cargo xtask build`.
pub fn staged_plugins() -> PathBuf {
    let dir = profile_dir().join("plugins");
    assert!(
        dir.join("libkvs_plugin_file.so").is_file() && dir.join("libkvs_plugin_rest.so").is_file(),
        "{} lacks the staged plug-ins: run the tests with `cargo xtask test`",
        dir.display()
    );
    dir
}

/// `dir/plugins`, holding a copy of every staged plug-in, for tests that add files.
pub fn copy_of_staged_plugins(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for entry in std::fs::read_dir(staged_plugins()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, plugins.join(path.file_name().unwrap())).unwrap();
    }
    plugins
}

/// [`copy_of_staged_plugins`] plus the `memory` test logger (`append_delay_ms`,
/// `fail_keys_with_prefix`), for tests of a slow or failing log.
pub fn staged_plugins_and_memory_logger(dir: &Path) -> PathBuf {
    let plugins = copy_of_staged_plugins(dir);
    let memory = lib("kvs_fixture_memory_logger");
    std::fs::copy(&memory, plugins.join(memory.file_name().unwrap())).unwrap();
    plugins
}

/// Writes a config for the file logger at `data/kvs.log` under `dir` and REST on a free
/// port, plus `extra` TOML appended.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let log = dir.join("data").join("kvs.log");
    std::fs::write(
        &path,
        format!(
            "logger = \"file\"\nfrontends = [\"rest\"]\nshutdown_timeout_ms = 5000\n{extra}\n\
             [plugins.file]\npath = {log:?}\n\n[plugins.rest]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    path
}

impl Kvs {
    /// Starts `kvs --config CONFIG --plugins-dir PLUGINS ARGS` and waits until it is
    /// ready (replay done, REST serving).
    pub fn start(config: &Path, plugins: &Path, args: &[&str]) -> Kvs {
        match Self::try_start(config, plugins, args) {
            Ok(kvs) => kvs,
            Err(log) => panic!("kvs did not start:\n{log}"),
        }
    }

    /// Like `start`, but returns kvs's output if it exits or never gets ready.
    pub fn try_start(config: &Path, plugins: &Path, args: &[&str]) -> Result<Kvs, String> {
        Self::spawn(config, plugins, args, true, &[], &[])
    }

    /// Like `start`, with kvs run by `wrapper` (e.g. `prlimit --nofile=...`), which must
    /// exec it (kvs's process id is then the wrapper's).
    pub fn start_under(wrapper: &[&str], config: &Path, plugins: &Path) -> Kvs {
        Self::spawn(config, plugins, &[], true, &[], wrapper)
            .unwrap_or_else(|log| panic!("kvs did not start:\n{log}"))
    }

    /// Like `try_start`, with extra environment variables for kvs.
    pub fn try_start_env(
        config: &Path,
        plugins: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Kvs, String> {
        Self::spawn(config, plugins, args, true, env, &[])
    }

    /// Starts kvs and returns as soon as a frontend listens, possibly before replay is
    /// done.
    pub fn start_listening(config: &Path, plugins: &Path) -> Kvs {
        Self::start_listening_args(config, plugins, &[])
    }

    /// Like `start_listening`, with extra command-line arguments.
    pub fn start_listening_args(config: &Path, plugins: &Path, args: &[&str]) -> Kvs {
        Self::spawn(config, plugins, args, false, &[], &[])
            .unwrap_or_else(|log| panic!("kvs did not listen:\n{log}"))
    }

    fn spawn(
        config: &Path,
        plugins: &Path,
        args: &[&str],
        wait_ready: bool,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<Kvs, String> {
        let kvs = env!("CARGO_BIN_EXE_kvs");
        let mut command = match wrapper.split_first() {
            None => Command::new(kvs),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(kvs);
                c
            }
        };
        let mut child = command
            .arg("--config")
            .arg(config)
            .arg("--plugins-dir")
            .arg(plugins)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("KVS_LOGGER")
            .env_remove("KVS_FRONTENDS")
            .env_remove("KVS_POSTGRES_PASSWORD")
            .env_remove("PGPASSWORD")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvs");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "frontend NAME serving on URL"
                let message = message_of(&line);
                if let Some((_, rest)) = message.split_once("frontend ")
                    && let Some((name, url)) = rest.split_once(" serving on ")
                {
                    let _ = tx.send(Some((name.to_string(), url.trim().to_string())));
                }
                if message.contains("kvs ready") {
                    let _ = tx.send(None);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut endpoints = BTreeMap::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Some((name, url))) => {
                    endpoints.insert(name, url);
                    if !wait_ready {
                        return Ok(Kvs::new(child, endpoints, log));
                    }
                }
                Ok(None) => return Ok(Kvs::new(child, endpoints, log)),
                Err(_) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader drain
                return Err(format!("exited with {status}:\n{}", log.lock().unwrap()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("not ready in 60 s:\n{}", log.lock().unwrap()));
            }
        }
    }

    fn new(child: Child, endpoints: BTreeMap<String, String>, log: Arc<Mutex<String>>) -> Kvs {
        let url = endpoints
            .get("rest")
            .or_else(|| endpoints.values().next())
            .cloned()
            .unwrap_or_default();
        Kvs {
            child,
            url,
            endpoints,
            log,
        }
    }

    /// The endpoint a frontend reported, e.g. `endpoint("grpc")`.
    pub fn endpoint(&self, frontend: &str) -> String {
        self.endpoints
            .get(frontend)
            .unwrap_or_else(|| panic!("no {frontend} endpoint in {:?}", self.endpoints))
            .clone()
    }

    /// `kvs_writer_batches_total{by}` from the admin listener's `/metrics`: batches
    /// committed by the writer thread (`"writer"`) or a frontend's (`"frontend"`).
    pub fn writer_batches(&self, by: &str) -> u64 {
        let metrics = http_client()
            .get(format!("{}/metrics", self.admin()))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let line = format!("kvs_writer_batches_total{{by=\"{by}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {line}in\n{metrics}"))
    }

    /// The admin listener's URL, from kvs's "admin listener serving on URL" line.
    pub fn admin(&self) -> String {
        self.log()
            .lines()
            .map(message_of)
            .find_map(|l| {
                l.split("admin listener serving on ")
                    .nth(1)
                    .map(|u| u.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no admin listener in the log:\n{}", self.log()))
    }

    /// `base url + path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What kvs has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits; asserts a clean exit 0.
    pub fn stop(mut self) -> String {
        send_signal(&self.child, "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log();
        assert_eq!(status, Some(0), "kvs did not exit 0 on SIGTERM:\n{log}");
        log
    }

    /// SIGTERM, then waits (30 s at most) for kvs to exit: its exit status, how long
    /// that took, and its log.
    pub fn terminate(mut self) -> (Option<i32>, Duration, String) {
        let started = Instant::now();
        send_signal(&self.child, "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        let took = started.elapsed();
        std::thread::sleep(Duration::from_millis(50));
        (status, took, self.log())
    }

    /// SIGKILL: no chance to flush anything. Takes `&self` so it can be sent while
    /// client threads still use this `Kvs`.
    pub fn kill9(&self) {
        send_signal(&self.child, "KILL");
    }
}

impl Drop for Kvs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A log line's message: the line itself, or its `message` field if it is JSON
/// (`--log-format json`).
pub fn message_of(line: &str) -> String {
    if line.starts_with('{')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
        && let Some(m) = v["message"].as_str()
    {
        return m.to_string();
    }
    line.to_string()
}

/// Runs `kvs ARGS` to completion; returns (exit code, stdout, stderr).
pub fn kvs_command(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(args)
        .env_remove("KVS_LOGGER")
        .env_remove("KVS_FRONTENDS")
        .env_remove("KVS_PLUGINS_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Percent-encodes every byte of a key for a URL path.
pub fn encode_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("%{b:02X}")).collect()
}
