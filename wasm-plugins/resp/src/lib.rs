//! `wasm-resp`: the Redis protocol from inside the WASM sandbox, as a stream frontend
//! (plugin-api 1.3). The host owns the TCP listener and hands this guest each
//! connection's bytes; the commands run through `kvs_resp::execute`, the same code as
//! the native `resp` frontend, so both answer alike.
//!
//! Writes are deferred by the host (see the guest docs): a pipeline's `SET`s are queued
//! together and the host sends their `+OK`s once all are durable. What this frontend
//! cannot do: `AUTH` (a sandboxed guest cannot present credentials for its caller; use
//! the native `resp` frontend where `[auth]` is on).

use kvs_plugin_api::guest::{self, Flow, GuestError, StreamConnection};
use kvs_plugin_api::update::Entry;
use kvs_plugin_api::{
    Action, ErrorCode, RequestContext, Transaction, Update, export_wasm_stream_frontend,
};
use kvs_resp::{
    Backend, Decoded, Decoder, ErrorKind, Render, Reply, ServerInfo, Session, StoreError,
};

/// One client connection: its unparsed bytes and its RESP session.
struct Connection {
    decoder: Decoder,
    session: Session,
    buf: Vec<u8>,
    /// The argument list commands are decoded into, kept between them (a read that
    /// ends mid-command drops it; the next allocates one).
    args: Vec<&'static [u8]>,
}

/// The store through the host functions.
struct Host;

fn store_error(e: GuestError) -> StoreError {
    let kind = match e.code {
        ErrorCode::UNAUTHENTICATED => ErrorKind::Unauthenticated,
        ErrorCode::PERMISSION_DENIED => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    StoreError {
        kind,
        message: e.message,
    }
}

impl Backend for Host {
    fn get(&mut self, _: &Session, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        guest::get(key).map_err(store_error)
    }

    fn get_reply(
        &mut self,
        session: &Session,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        // The value goes from the host's reply buffer into the answer, with no `Vec`
        // between (plugin-api 1.8's `get_with`).
        guest::get_with(key, |value| {
            Reply::new(out, session.protocol).optional(value);
        })
        .map_err(store_error)
    }

    fn put(&mut self, _: &Session, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        guest::put(key, value).map_err(store_error)
    }

    fn delete(&mut self, _: &Session, key: &[u8]) -> Result<(), StoreError> {
        guest::delete(key).map_err(store_error)
    }

    fn update(
        &mut self,
        session: &Session,
        update: Update,
        render: Render,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        // `kvs_update` returns once the update is durable, with its outcome.
        let outcome = guest::update(&update).map_err(store_error)?;
        render(&outcome, &mut Reply::new(out, session.protocol));
        Ok(())
    }

    fn transact(
        &mut self,
        session: &Session,
        transaction: Transaction,
        render: Render,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        // `kvs_update` takes a transaction too (1.6), returning once it is durable.
        let outcomes = guest::transact(&transaction).map_err(store_error)?;
        let first = outcomes.into_iter().next().unwrap_or_default();
        render(&first, &mut Reply::new(out, session.protocol));
        Ok(())
    }

    fn get_entry(&mut self, _: &Session, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        guest::get_entry(key).map_err(store_error)
    }

    fn check_read(&mut self, _: &Session, key: &[u8]) -> Result<(), StoreError> {
        guest::check(Action::GET, key).map_err(store_error)
    }

    fn check_write(
        &mut self,
        _: &Session,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        // The host answers for the key (limits, credentials, permissions) as it would
        // answer the write, without making it (`kvs_check`, 1.4): asked for every key
        // of a multi-key write before any is made. Values over MAX_BULK never reach
        // here (the decoder skips them).
        kvs_resp::commands::check_sizes(key, value, u64::MAX, u64::MAX)?;
        let action = if value.is_some() {
            Action::PUT
        } else {
            Action::DELETE
        };
        guest::check(action, key).map_err(store_error)
    }

    fn info(&self) -> ServerInfo {
        let stats = guest::stats().ok();
        ServerInfo {
            kvs_version: env!("CARGO_PKG_VERSION").into(),
            frontend: "wasm-resp".into(),
            keys: stats.map(|s| s.0),
            data_bytes: stats.map(|s| s.1),
            ..ServerInfo::default()
        }
    }

    fn check_authenticated(&mut self, _: &Session) -> Result<(), StoreError> {
        // As the native frontend: the host checks only the caller's credentials on a
        // read of the empty key (a client certificate, here), and with `[auth]` on
        // refuses an anonymous caller as UNAUTHENTICATED.
        match guest::get(b"") {
            Err(e) if e.code == ErrorCode::UNAUTHENTICATED => Err(store_error(e)),
            _ => Ok(()),
        }
    }

    fn authenticate(&mut self, _: &mut Session, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError {
            kind: ErrorKind::Other,
            message: "AUTH is not supported by wasm-resp: a sandboxed frontend cannot present \
                      credentials; use the native resp frontend"
                .into(),
        })
    }
}

/// Largest argument accepted: kvs's default value limit. Larger ones are skipped unread
/// and answered with an error (the host's store would refuse them anyway).
const MAX_BULK: usize = 1 << 20;

impl StreamConnection for Connection {
    fn open(_: &RequestContext) -> Result<Self, GuestError> {
        Ok(Connection {
            decoder: Decoder::new(kvs_resp::Limits {
                max_bulk_bytes: MAX_BULK,
                max_command_bytes: 16 << 20,
                ..kvs_resp::Limits::default()
            }),
            session: Session::default(),
            buf: Vec::new(),
            args: Vec::new(),
        })
    }

    fn data(&mut self, input: &[u8], output: &mut Vec<u8>) -> Flow {
        // Replies are usually no longer than their commands: one allocation for them
        // (bounded: the pieces of a large SET answer nothing).
        output.reserve(input.len().min(16 << 10));
        if self.buf.is_empty() {
            // Whole commands straight from the input; only a partial one is kept.
            let (used, flow) = run(self, input, output);
            self.buf.extend_from_slice(&input[used..]);
            return flow;
        }
        self.buf.extend_from_slice(input);
        let buf = std::mem::take(&mut self.buf);
        let (used, flow) = run(self, &buf, output);
        self.buf = buf;
        self.buf.drain(..used);
        flow
    }
}

/// Runs the whole commands at the start of `buf`: how many bytes they took, and
/// whether the connection goes on.
fn run(connection: &mut Connection, buf: &[u8], output: &mut Vec<u8>) -> (usize, Flow) {
    let Connection {
        decoder,
        session,
        args: spare,
        ..
    } = connection;
    let mut pos = 0;
    loop {
        if pos == buf.len() {
            // A read of whole commands ends here, keeping the argument list (decoding
            // nothing would drop it).
            return (pos, Flow::Continue);
        }
        let args = kvs_resp::recycle(std::mem::take(spare));
        match decoder.decode_into(&buf[pos..], args) {
            Ok((n, None)) => return (pos + n, Flow::Continue),
            Ok((n, Some(Decoded::TooLarge(why)))) => {
                pos += n;
                Reply::new(output, session.protocol).error(&format!("ERR {why}"));
            }
            Ok((n, Some(Decoded::Command(args)))) => {
                pos += n;
                let flow = kvs_resp::execute(&args, session, &mut Host, output);
                *spare = kvs_resp::recycle(args);
                if flow == kvs_resp::Flow::Close {
                    return (pos, Flow::Close);
                }
            }
            Err(e) => {
                Reply::new(output, session.protocol).error(&format!("ERR {e}"));
                return (pos, Flow::Close);
            }
        }
    }
}

export_wasm_stream_frontend!(
    Connection,
    name: "wasm-resp",
    description: "the Redis protocol (RESP2/RESP3) in the WASM sandbox",
    capabilities: ["protocol:resp"]
);
