//! `kvs plugins check`: the contract's behavioural checks, run against one plug-in file.
//!
//! For a logger: replay of an empty log; a batch with binary keys and empty values; a
//! batch of many events in one append; close, reopen, and replay returns every event in
//! order, unchanged. For a frontend (started through the same `lifecycle::Builder` as
//! kvs itself, over a logger that keeps nothing): it starts, reports an endpoint, accepts
//! connections there (any protocol: the check does not assume the REST plug-in's URLs),
//! and stops within its deadline. Every check reports pass or fail with a reason.

use std::path::Path;
use std::time::{Duration, Instant};

use kvs_plugin_api::{Event, EventKind, PluginError, PluginKind};

use crate::plugins::{self, Plugin};
use crate::ports::{HealthCheck, Log};
use crate::store::Limits;

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was checked.
    pub name: String,
    /// `Ok` or why it failed.
    pub result: Result<(), String>,
    /// Not run (and not failed): nothing here can exercise it, e.g. a non-HTTP endpoint.
    pub skipped: bool,
}

type Owned = (u64, EventKind, Vec<u8>, Vec<u8>);

/// Runs every check that applies to the plug-in at `path`. `table` is its config table
/// (TOML); `{tmp}` in it is replaced by a fresh temporary directory.
pub fn run(path: &Path, table: &str) -> Vec<Outcome> {
    let mut out = Vec::new();
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return vec![fail("temporary directory", e.to_string())],
    };
    let mut table = table.replace("{tmp}", &tmp.path().display().to_string());
    let plugin = match plugins::load(path) {
        Ok(p) => {
            out.push(pass(format!(
                "handshake: {} {} {} (plugin-api {}.{})",
                p.format, p.kind, p.name, p.api.0, p.api.1
            )));
            p
        }
        Err(why) => {
            out.push(fail("handshake", why));
            return out;
        }
    };
    // A WASM logger gets a granted directory unless the table names one.
    if plugin.format == plugins::Format::Wasm
        && plugin.kind == PluginKind::LOGGER
        && !table.contains("data_dir")
    {
        table.push_str(&format!("\ndata_dir = {:?}\n", tmp.path().join("data")));
    }
    let shared = plugin
        .capabilities
        .iter()
        .any(|c| c == kvs_plugin_api::capability::LOG_SHARED);
    if plugin.kind == PluginKind::LOGGER && shared {
        // Its behaviour is that of a cluster (several nodes, a log that delivers): the
        // `cluster` tests check the etcd one against real etcd members.
        out.push(skip(
            "a shared logger (log:shared): append/replay checks do not apply; it is checked \
             by running kvs nodes on it (see the cluster tests)",
        ));
    } else if plugin.kind == PluginKind::LOGGER {
        check_logger(&plugin, &table, &mut out);
    } else {
        check_frontend(&plugin, &table, &mut out);
    }
    out
}

fn pass(name: impl Into<String>) -> Outcome {
    Outcome {
        name: name.into(),
        result: Ok(()),
        skipped: false,
    }
}

fn skip(name: impl Into<String>) -> Outcome {
    Outcome {
        name: name.into(),
        result: Ok(()),
        skipped: true,
    }
}

fn fail(name: impl Into<String>, why: impl Into<String>) -> Outcome {
    Outcome {
        name: name.into(),
        result: Err(why.into()),
        skipped: false,
    }
}

fn check(out: &mut Vec<Outcome>, name: &str, result: Result<(), String>) -> bool {
    let ok = result.is_ok();
    out.push(Outcome {
        name: name.into(),
        result,
        skipped: false,
    });
    ok
}

fn replay(logger: &mut dyn Log) -> Result<Vec<Owned>, String> {
    let mut got = Vec::new();
    logger
        .replay(&mut |events| {
            got.extend(
                events
                    .iter()
                    .map(|e| (e.sequence, e.kind, e.key.to_vec(), e.value.to_vec())),
            );
            Ok(())
        })
        .map_err(|e| format!("replay failed: {e}"))?;
    Ok(got)
}

fn append(logger: &mut dyn Log, batch: &[Owned]) -> Result<(), String> {
    let events: Vec<Event<'_>> = batch
        .iter()
        .map(|(s, k, key, v)| Event {
            sequence: *s,
            kind: *k,
            key: key.as_slice().into(),
            value: v.as_slice().into(),
        })
        .collect();
    logger
        .append(&events)
        .map_err(|e| format!("append failed: {e}"))
}

fn check_logger(plugin: &Plugin, table: &str, out: &mut Vec<Outcome>) {
    // The check writes test events: never let a default config aim them at real data.
    if plugin.format == plugins::Format::Native && table.trim().is_empty() {
        out.push(fail(
            "open",
            "no --config: point the logger at scratch storage, e.g. --config 'path = \"{tmp}/log\"' \
             ({tmp} is a fresh temporary directory); the check writes test events there",
        ));
        return;
    }
    let open = || crate::lifecycle::open_logger(plugin, table).map_err(|e| format!("{e:#}"));
    let mut logger = match open() {
        Ok(l) => {
            out.push(pass("open"));
            l
        }
        Err(why) => {
            out.push(fail(
                "open",
                format!("{why} (pass its config with --config, e.g. 'path = \"{{tmp}}/log\"')"),
            ));
            return;
        }
    };
    let ok = check(
        out,
        "replay of an empty log returns nothing",
        match replay(logger.as_mut()) {
            Ok(events) if events.is_empty() => Ok(()),
            Ok(events) => Err(format!(
                "{} events in a new log: point --config at an empty location",
                events.len()
            )),
            Err(e) => Err(e),
        },
    );
    if !ok {
        return;
    }
    let odd: Vec<Owned> = vec![
        (
            1,
            EventKind::PUT,
            b"\0\xff binary\tkey\n".to_vec(),
            Vec::new(),
        ),
        (
            2,
            EventKind::PUT,
            "ключ/🔑".as_bytes().to_vec(),
            b"v".to_vec(),
        ),
        (
            3,
            EventKind::DELETE,
            b"\0\xff binary\tkey\n".to_vec(),
            Vec::new(),
        ),
        (4, EventKind::PUT, b"empty".to_vec(), Vec::new()),
    ];
    check(
        out,
        "append: binary keys and empty values",
        append(logger.as_mut(), &odd),
    );
    let many: Vec<Owned> = (5..10_005u64)
        .map(|s| {
            (
                s,
                EventKind::PUT,
                format!("k{}", s % 100).into_bytes(),
                s.to_le_bytes().to_vec(),
            )
        })
        .collect();
    check(
        out,
        "append: a batch of 10000 events in one call",
        append(logger.as_mut(), &many),
    );
    let mut all = odd;
    all.extend(many);
    match replay_after_reopen(logger.as_mut(), open) {
        Ok(got) => {
            check(
                out,
                "close, reopen: replay returns every event in order, unchanged",
                compare(&all, &got),
            );
        }
        Err(why) => {
            out.push(fail(
                "close, reopen: replay returns every event in order, unchanged",
                why,
            ));
        }
    }
}

fn replay_after_reopen(
    logger: &mut dyn Log,
    open: impl Fn() -> Result<Box<dyn Log>, String>,
) -> Result<Vec<Owned>, String> {
    logger.close().map_err(|e| format!("close failed: {e}"))?;
    let mut again = open()?;
    let got = replay(again.as_mut())?;
    let _ = again.close();
    Ok(got)
}

fn compare(want: &[Owned], got: &[Owned]) -> Result<(), String> {
    if let Some(i) = want.iter().zip(got).position(|(w, g)| w != g) {
        return Err(format!(
            "event {i} differs: wrote sequence {} {:?} key {:?} ({} value bytes), replayed sequence {} {:?} key {:?} ({} value bytes)",
            want[i].0,
            want[i].1,
            String::from_utf8_lossy(&want[i].2),
            want[i].3.len(),
            got[i].0,
            got[i].1,
            String::from_utf8_lossy(&got[i].2),
            got[i].3.len()
        ));
    }
    if want.len() != got.len() {
        return Err(format!(
            "wrote {} events, replayed {}",
            want.len(),
            got.len()
        ));
    }
    Ok(())
}

/// A logger that keeps nothing, so a frontend can be checked without any storage.
struct NullLogger;

impl Log for NullLogger {
    fn health(&self) -> Option<HealthCheck> {
        None
    }
    fn append(&mut self, _batch: &[Event<'_>]) -> Result<(), PluginError> {
        Ok(())
    }
    fn replay(
        &mut self,
        _sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
}

fn check_frontend(plugin: &Plugin, table: &str, out: &mut Vec<Outcome>) {
    let null = Box::new(NullLogger);
    let limits = Limits {
        max_key_bytes: 4096,
        max_value_bytes: 1 << 20,
    };
    let running = match crate::lifecycle::Builder::with_open_logger(null, "null", limits)
        .frontend(plugin, table)
        .start()
    {
        Ok(running) => {
            out.push(pass("start"));
            running
        }
        Err(e) => {
            out.push(fail(
                "start",
                format!("{e:#} (pass its config with --config, e.g. 'listen = \"127.0.0.1:0\"')"),
            ));
            return;
        }
    };
    let endpoints: Vec<String> = running
        .endpoints()
        .into_iter()
        .flat_map(|(_, endpoints)| endpoints)
        .collect();
    check(
        out,
        "reports an endpoint",
        if endpoints.is_empty() {
            Err("endpoints() is empty".into())
        } else {
            Ok(())
        },
    );
    // Frontends speak any protocol; what every one must do is accept connections where
    // it says it listens.
    for endpoint in &endpoints {
        check(
            out,
            &format!("accepts connections at {endpoint}"),
            accepts_connections(endpoint),
        );
    }
    // Through the protocol it declares: a key round trip, store included.
    let declares = |cap: &str| plugin.capabilities.iter().any(|c| c == cap);
    if declares(kvs_plugin_api::capability::PROTOCOL_RESP) {
        if let Some(endpoint) = endpoints.first() {
            check(
                out,
                &format!("serves SET/GET/DEL at {endpoint} (protocol:resp)"),
                resp_round_trip(endpoint),
            );
        }
    } else if declares(kvs_plugin_api::capability::PROTOCOL_KVS_REST) {
        match endpoints.first() {
            Some(endpoint) if endpoint.starts_with("http://") => check(
                out,
                &format!("serves PUT/GET/DELETE /v1/key/... at {endpoint} (protocol:kvs-rest)"),
                rest_round_trip(endpoint),
            ),
            Some(endpoint) => {
                out.push(skip(format!(
                    "the REST round trip: {endpoint} is not plain http:// (TLS is not tried)"
                )));
                true
            }
            None => true,
        };
    } else {
        out.push(skip(
            "a round trip through its protocol: it declares none kvs plugins check speaks \
             (protocol:kvs-rest, protocol:resp), so only start, endpoints and stop were checked",
        ));
    }
    let started = Instant::now();
    let deadline = Duration::from_secs(5);
    let stopped = running.stop_reporting();
    check(
        out,
        "stops within its deadline (5 s)",
        match stopped {
            Err(e) => Err(format!("stop failed: {e:#}")),
            Ok((_, problems)) if !problems.is_empty() => Err(problems.join("; ")),
            Ok(_) if started.elapsed() > deadline + Duration::from_secs(1) => {
                Err(format!("took {:?}", started.elapsed()))
            }
            Ok(_) => Ok(()),
        },
    );
}

/// The book's REST API, as `protocol:kvs-rest` promises: a binary key with a `/` in it is
/// written (201), read back (200, same bytes), deleted (200) and then missing (404).
fn rest_round_trip(endpoint: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!(
        "{}/v1/key/kvs-check%2F%00%FF",
        endpoint.trim_end_matches('/')
    );
    let value = b"kvs plugins check \x00\xff";
    let status = |what: &str, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        r.map_err(|e| format!("{what}: {e}"))
    };
    let put = status("PUT", agent.put(&url).send(&value[..]))?;
    if put.status() != 201 {
        return Err(format!("PUT answered {}, want 201", put.status()));
    }
    let mut get = status("GET", agent.get(&url).call())?;
    let body = get
        .body_mut()
        .read_to_vec()
        .map_err(|e| format!("GET body: {e}"))?;
    if get.status() != 200 || body != value {
        return Err(format!(
            "GET answered {} with {} bytes, want 200 with the {} bytes written",
            get.status(),
            body.len(),
            value.len()
        ));
    }
    let delete = status("DELETE", agent.delete(&url).call())?;
    if delete.status() != 200 {
        return Err(format!("DELETE answered {}, want 200", delete.status()));
    }
    let gone = status("GET after DELETE", agent.get(&url).call())?;
    if gone.status() != 404 {
        return Err(format!(
            "GET after DELETE answered {}, want 404",
            gone.status()
        ));
    }
    Ok(())
}

/// The Redis protocol, as `protocol:resp` promises: one pipeline that sets a binary key,
/// reads it back, deletes it and reads it again, answered in order.
fn resp_round_trip(endpoint: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut stream = connect(endpoint)?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let key: &[u8] = b"kvs-check/\x00\xff";
    let value: &[u8] = b"kvs plugins check \r\n\x00\xff";
    let bulk = |b: &[u8]| {
        [
            format!("${}\r\n", b.len()).as_bytes(),
            b,
            b"\r\n".as_slice(),
        ]
        .concat()
    };
    let command = |args: &[&[u8]]| {
        let mut c = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            c.extend(bulk(a));
        }
        c
    };
    let request = [
        command(&[b"SET".as_slice(), key, value]),
        command(&[b"GET".as_slice(), key]),
        command(&[b"DEL".as_slice(), key]),
        command(&[b"GET".as_slice(), key]),
    ]
    .concat();
    let value_reply = bulk(value);
    let want: Vec<u8> = [
        b"+OK\r\n".as_slice(),
        value_reply.as_slice(),
        b":1\r\n".as_slice(),
        b"$-1\r\n".as_slice(),
    ]
    .concat();
    stream
        .write_all(&request)
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < want.len() {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the replies: {e}")),
        }
    }
    if got != want {
        return Err(format!(
            "SET, GET, DEL, GET answered {:?}, want {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        ));
    }
    Ok(())
}

/// A TCP connection to an endpoint URL's `host:port`, whatever the scheme.
fn connect(endpoint: &str) -> Result<std::net::TcpStream, String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let addr = rest.split('/').next().unwrap_or(rest);
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| format!("{addr:?} is not host:port: {e}"))?
        .collect();
    let first = addrs
        .first()
        .ok_or_else(|| format!("{addr:?} resolves to nothing"))?;
    std::net::TcpStream::connect_timeout(first, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Whether a TCP connection to an endpoint URL's `host:port` succeeds, whatever the scheme.
fn accepts_connections(endpoint: &str) -> Result<(), String> {
    connect(endpoint).map(drop)
}
