//! Template: a minimal WASM stream frontend (plugin-api 1.3 and later). The host owns a
//! TCP listener (`listen` in the plug-in's table) and hands each connection's bytes to
//! the guest; this one speaks a small line protocol, one command per line:
//!
//! ```text
//! GET key          -> VALUE value | NONE
//! SET key value    -> OK          (the value is the rest of the line)
//! DEL key          -> OK
//! QUIT             -> BYE, then the host closes the connection
//! anything else    -> ERR what was wrong
//! ```
//!
//! Bytes arrive split anywhere (a line may span calls, one call may carry many lines),
//! so each connection keeps what it has not parsed yet. Writes are deferred: the host
//! sends a call's output only once its writes are durable, so `OK` is never sent for a
//! write that was lost.

use kvs_plugin_api::RequestContext;
use kvs_plugin_api::export_wasm_stream_frontend;
use kvs_plugin_api::guest::{self, Flow, GuestError, StreamConnection};

/// The longest line this frontend buffers; a longer one closes the connection.
const MAX_LINE: usize = 64 << 10;

struct LineConnection {
    /// Bytes of a line whose end has not arrived yet.
    pending: Vec<u8>,
}

impl StreamConnection for LineConnection {
    fn open(_context: &RequestContext) -> Result<Self, GuestError> {
        Ok(LineConnection {
            pending: Vec::new(),
        })
    }

    fn data(&mut self, input: &[u8], output: &mut Vec<u8>) -> Flow {
        self.pending.extend_from_slice(input);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if answer(line, output) == Flow::Close {
                return Flow::Close;
            }
        }
        if self.pending.len() > MAX_LINE {
            output.extend_from_slice(b"ERR line too long\n");
            return Flow::Close;
        }
        Flow::Continue
    }
}

/// Answers one command line into `output`.
fn answer(line: &[u8], output: &mut Vec<u8>) -> Flow {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let command = parts.next().unwrap_or_default();
    let key = parts.next().filter(|k| !k.is_empty());
    let result = match (command, key) {
        (b"QUIT", _) => {
            output.extend_from_slice(b"BYE\n");
            return Flow::Close;
        }
        (b"GET", Some(key)) => guest::get(key).map(|value| match value {
            Some(v) => [b"VALUE ".as_slice(), &v, b"\n"].concat(),
            None => b"NONE\n".to_vec(),
        }),
        (b"SET", Some(key)) => {
            guest::put(key, parts.next().unwrap_or_default()).map(|()| b"OK\n".to_vec())
        }
        (b"DEL", Some(key)) => guest::delete(key).map(|()| b"OK\n".to_vec()),
        (b"GET" | b"SET" | b"DEL", None) => Err(GuestError::invalid_input("no key")),
        _ => Err(GuestError::invalid_input("unknown command")),
    };
    match result {
        Ok(reply) => output.extend_from_slice(&reply),
        Err(e) => output.extend_from_slice(format!("ERR {}\n", e.message).as_bytes()),
    }
    Flow::Continue
}

export_wasm_stream_frontend!(
    LineConnection,
    name: "template-wasm-stream",
    description: "template: a line protocol over TCP",
);
