//! Template: a minimal native frontend. Answers `GET /v1/key/{key}` over HTTP/1.0 on
//! its own thread, using only std. Its config table has one key, `listen`. See
//! `plugins/rest` for a production frontend (axum, writes, limits, graceful drain).
//!
//! Every store call carries what the client presented (`RequestContext`: here its
//! `Authorization: Bearer` token, `traceparent` and address). Carry, don't judge: the
//! host decides what the caller may do.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvs_plugin_api::{Frontend, PluginError, RequestContext, Store, export_plugin};

struct ReadOnlyHttp {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn serve(listener: TcpListener, store: Store, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10)); // non-blocking: nothing to accept
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let mut reader = BufReader::new(&conn);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let key = line
            .strip_prefix("GET /v1/key/")
            .and_then(|r| r.split(' ').next())
            .unwrap_or("")
            .to_string();
        // The header lines, up to the blank one, for what the client presented.
        let mut headers = Vec::new();
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
            if let Some((name, value)) = header.trim_end().split_once(':') {
                headers.push((name.to_string(), value.trim().to_string()));
            }
            header.clear();
        }
        let mut ctx =
            RequestContext::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
        ctx.peer = conn.peer_addr().ok().map(|a| a.to_string());
        let (status, body) = match store.get_with(&ctx, key.as_bytes()) {
            Ok(Some(v)) => ("200 OK", v),
            Ok(None) => ("404 Not Found", b"no such key\n".to_vec()),
            Err(e) => ("400 Bad Request", format!("{e}\n").into_bytes()),
        };
        let _ = write!(
            conn,
            "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(&body);
    }
}

impl Frontend for ReadOnlyHttp {
    fn endpoints(&self) -> Vec<String> {
        vec![format!("http://{}", self.addr)]
    }

    fn stop(&mut self, _deadline: Duration) -> Result<(), PluginError> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

fn start(store: Store, config: &str) -> Result<ReadOnlyHttp, PluginError> {
    let listen = config
        .lines()
        .find_map(|l| {
            l.strip_prefix("listen = ")
                .map(|p| p.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = TcpListener::bind(&listen)
        .map_err(|e| PluginError::invalid_input(format!("cannot listen on {listen}: {e}")))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || serve(listener, store, flag));
    Ok(ReadOnlyHttp {
        addr,
        stop,
        thread: Some(thread),
    })
}

export_plugin!(frontend: start, name: "template-frontend", description: "template: read-only HTTP on std::net");
