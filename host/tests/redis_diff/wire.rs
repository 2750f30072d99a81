//! The two servers on the wire: a throwaway `redis-server`, connections that send a
//! pipeline and split what comes back into whole replies.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of its own on a free loopback port, killed when dropped. It keeps no
/// snapshots and logs every write (`save ""`, `appendonly yes`): what kvs reports for
/// both settings, so `CONFIG GET` of them compares byte for byte.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed: `cargo xtask test` installs it");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Conn::open(port) {
                c.send(b"PING\r\n");
                if c.replies(1).first().map(Vec::as_slice) == Some(b"+PONG\r\n") {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Empties every database, so a run starts from what a fresh kvs holds.
    pub fn flush(&self) {
        let mut c = Conn::open(self.port).unwrap();
        c.send(b"FLUSHALL\r\n");
        assert_eq!(c.replies(1), vec![b"+OK\r\n".to_vec()]);
    }

    /// The version the server reports, e.g. `7.0.15`.
    pub fn version() -> String {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .unwrap_or("unknown")
            .to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One client connection: bytes out, whole replies in.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            closed: false,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next `n` replies, each as its bytes; fewer if the server closed or went silent
    /// for the read timeout (the comparison then shows what is missing).
    pub fn replies(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match reply_len(&self.buf, 0) {
                Some(len) => out.push(self.buf.drain(..len).collect()),
                None if !self.fill() => break,
                None => {}
            }
        }
        out
    }

    /// Everything until the server closes the connection, and whether it did within the
    /// read timeout.
    pub fn rest_until_close(&mut self) -> (Vec<u8>, bool) {
        while self.fill() {}
        let closed = self.closed;
        (std::mem::take(&mut self.buf), closed)
    }

    /// Reads more; false once the server closed or nothing came within the timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                self.closed = true;
                false
            }
            Err(_) => false,
        }
    }
}

/// The length of the whole RESP2/RESP3 reply at `buf[at..]`, or `None` if it is not
/// complete yet.
pub fn reply_len(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&buf[at + 1..line_end]).ok();
    let count = || head.and_then(|h| h.parse::<i64>().ok()).unwrap_or(-1);
    let after = line_end + 2;
    match *buf.get(at)? {
        b'$' | b'=' | b'!' if count() >= 0 => {
            let end = after + count() as usize + 2;
            (buf.len() >= end).then_some(end - at)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = count().max(0) as usize * if matches!(buf[at], b'%' | b'|') { 2 } else { 1 };
            let mut pos = after;
            for _ in 0..n {
                pos += reply_len(buf, pos)?;
            }
            Some(pos - at)
        }
        _ => Some(after - at),
    }
}
