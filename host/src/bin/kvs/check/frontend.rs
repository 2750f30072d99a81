//! The frontend checks: it starts over a logger that keeps nothing, reports an
//! endpoint that accepts connections, speaks the protocol it promises, and stops.

use std::time::{Duration, Instant};

use kvs_host::plugins::Plugin;
use kvs_host::ports::{HealthCheck, Log};
use kvs_host::store::Limits;
use kvs_plugin_api::{Event, PluginError};

use super::{Outcome, check, fail, pass, skip};

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

pub(super) fn check_frontend(
    plugin: &Plugin,
    table: &str,
    exchange: Option<&super::Exchange>,
    out: &mut Vec<Outcome>,
) {
    let null = Box::new(NullLogger);
    let limits = Limits {
        max_key_bytes: 4096,
        max_value_bytes: 1 << 20,
    };
    let running = match kvs_host::lifecycle::Builder::with_open_logger(null, "null", limits)
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
    // Its own protocol, as the author says it should answer.
    if let (Some(exchange), Some(endpoint)) = (exchange, endpoints.first()) {
        check(
            out,
            &format!(
                "answers {} with {} at {endpoint}",
                super::escape(&exchange.send),
                super::escape(&exchange.expect)
            ),
            exchange_bytes(endpoint, exchange),
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
        if declares(kvs_plugin_api::capability::FRONTEND_STREAM)
            && let Some(endpoint) = endpoints.first()
        {
            // Whatever its protocol, bytes it does not expect must not break it: a guest
            // that traps has its connection closed by the host, unanswered.
            check(
                out,
                &format!("takes unexpected bytes at {endpoint} without failing"),
                takes_junk(endpoint),
            );
        }
        if exchange.is_none() {
            out.push(skip(
                "a round trip through its protocol: it declares none kvs plugins check speaks \
                 (protocol:kvs-rest, protocol:resp); give --send and --expect to try one",
            ));
        }
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

/// What a connection closed before a byte came back most likely means.
const CLOSED_UNANSWERED: &str = "the connection was closed without an answer: the guest \
     probably trapped (kvs logs the trap; a protocol that closes on bad input should say \
     why first)";

/// Sends `exchange.send` and reads until `exchange.expect.len()` bytes came back (or the
/// connection closed, or 5 s passed); they must be exactly `expect`.
fn exchange_bytes(endpoint: &str, exchange: &super::Exchange) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut conn = connect(endpoint)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(&exchange.send)
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < exchange.expect.len() {
        match conn.read(&mut buf) {
            Ok(0) if got.is_empty() => return Err(CLOSED_UNANSWERED.into()),
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if got.is_empty() => return Err(format!("no answer: {e}")),
            Err(_) => break,
        }
    }
    if got == exchange.expect {
        Ok(())
    } else {
        Err(format!(
            "it answered \"{}\", expected \"{}\"",
            super::escape(&got),
            super::escape(&exchange.expect)
        ))
    }
}

/// Sends bytes no protocol expects (a line of text, then binary); fails if the
/// connection is then closed without a byte of answer — what the host does to a guest
/// that trapped on them. Staying silent and open, or answering (an error, say), passes.
fn takes_junk(endpoint: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut conn = connect(endpoint)?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"kvs plugins check \x00\xff\r\n\x01\x02\x03\xfe\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(0) => Err(CLOSED_UNANSWERED.into()),
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!("the connection failed: {e}")),
    }
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
