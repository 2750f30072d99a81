//! The `resp` frontend: the Redis protocol over TCP, on the plug-in's own tokio runtime.
//!
//! Every command runs through [`kvs_resp::execute`] (shared with the `wasm-resp`
//! guest), against this connection's [`Connection`] backend. What this file adds is the
//! connection loop and durability:
//!
//! * **Pipelining with group commit.** A connection reads whatever the client sent,
//!   runs every complete command in it, and sends all the replies in one write. Writes
//!   (`SET`, `MSET`, `DEL`, and atomic updates such as `INCR`) are queued at the store
//!   as they are met, so the 16 `SET`s or `INCR`s of a `-P 16` pipeline share one
//!   fsync; their replies are sent only once every one of them is durable. An update's
//!   reply is made from its outcome then; a write that fails after it was queued (the
//!   logger failed, the value was not a number) has its reply replaced by the error
//!   before anything is sent.
//! * **Order.** A command that reads the store (`GET`, `DEL`, `EXISTS`, ...) first waits
//!   for the connection's queued writes, so a pipeline sees its own writes, as in Redis.
//! * **Bad input.** Limits come from the store's key and value limits and
//!   `max_command_bytes`: an oversized argument is skipped unread and answered
//!   `-ERR ...`, and the connection carries on; bytes that are not RESP get
//!   `-ERR Protocol error: ...` and a close (the stream cannot be resynchronised).
//! * **Credentials.** `AUTH token` (or `HELLO 3 AUTH user token`) has the host verify
//!   the token (`-WRONGPASS` if it refuses it) and sets the bearer token every later
//!   store call carries; the host decides each call, and a refused one answers
//!   `-NOAUTH` or `-NOPERM`.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvs_plugin_api::update::Entry;
use kvs_plugin_api::{
    Action, Consistency, ErrorCode, Frontend, Outcome, PluginError, RequestContext, Store, Update,
    export_plugin,
};
use kvs_resp::{
    Backend, Decoded, Decoder, ErrorKind, Flow, Render, Reply, ServerInfo, Session, StoreError,
};
use kvs_serve::tcp::{Accepted, OpenConnections};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod config;

pub use config::Config;

/// What every connection shares: the store, limits, counters for `INFO`.
struct Shared {
    store: Store,
    limits: kvs_resp::Limits,
    max_reply_bytes: usize,
    port: u16,
    started: Instant,
    connected: OpenConnections,
    total_connections: AtomicU64,
    total_commands: AtomicU64,
}

/// A write queued at the store, and where its reply sits in the output.
struct Pending {
    outcome: Pin<Box<dyn Future<Output = Result<Outcome, PluginError>> + Send>>,
    reply: Range<usize>,
    /// Which of the connection's commands queued it (an update's reply range is empty,
    /// so two in a row share one: the command tells them apart).
    command: u64,
    /// For an atomic update: how its reply is made from its outcome, once known (its
    /// range is empty until then).
    render: Option<Render>,
}

/// A plain write's outcome as an update's.
async fn acknowledged(
    write: impl Future<Output = Result<(), PluginError>>,
) -> Result<Outcome, PluginError> {
    write.await.map(|()| Outcome::default())
}

/// One connection's view of the store: its context, its queued writes.
struct Connection {
    shared: Arc<Shared>,
    context: RequestContext,
    pending: Vec<Pending>,
    /// Commands run so far (what tells [`Pending`]s of different commands apart).
    commands: u64,
}

fn store_error(e: PluginError) -> StoreError {
    let kind = match e.code() {
        ErrorCode::UNAUTHENTICATED => ErrorKind::Unauthenticated,
        ErrorCode::PERMISSION_DENIED => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    StoreError {
        kind,
        message: e.message().to_string(),
    }
}

impl Backend for Connection {
    fn get(&mut self, _: &Session, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        debug_assert!(
            self.pending.is_empty(),
            "reads run after queued writes settle"
        );
        self.shared
            .store
            .get_with(&self.context, key)
            .map_err(store_error)
    }

    fn put(&mut self, _: &Session, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let outcome = self
            .shared
            .store
            .put_with(&self.context, key.to_vec(), value.to_vec());
        self.pending.push(Pending {
            outcome: Box::pin(acknowledged(outcome)),
            reply: 0..0,
            command: 0,
            render: None,
        });
        Ok(())
    }

    fn update(
        &mut self,
        _: &Session,
        update: Update,
        render: Render,
        _out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        // Queued now, evaluated by the host's writer after this connection's earlier
        // writes; the reply is made when the outcome is durable (`settle`).
        let outcome = self.shared.store.update_with(&self.context, &update);
        self.pending.push(Pending {
            outcome: Box::pin(outcome),
            reply: 0..0,
            command: 0,
            render: Some(render),
        });
        Ok(())
    }

    fn get_entry(&mut self, _: &Session, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        debug_assert!(
            self.pending.is_empty(),
            "reads run after queued writes settle"
        );
        self.shared
            .store
            .get_entry_with(&self.context, key, Consistency::DEFAULT)
            .map_err(store_error)
    }

    fn delete(&mut self, _: &Session, key: &[u8]) -> Result<(), StoreError> {
        let outcome = self.shared.store.delete_with(&self.context, key.to_vec());
        self.pending.push(Pending {
            outcome: Box::pin(acknowledged(outcome)),
            reply: 0..0,
            command: 0,
            render: None,
        });
        Ok(())
    }

    fn check_write(
        &mut self,
        _: &Session,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        // The host answers for the key (limits, credentials, permissions) as it would
        // answer the write, without making it (plugin-api 1.4's `check`); the value's
        // size is known here. Asked for every key of a multi-key write before any is
        // queued, so a refusal leaves nothing half-written.
        let action = if value.is_some() {
            Action::PUT
        } else {
            Action::DELETE
        };
        self.shared
            .store
            .check_with(&self.context, action, key)
            .map_err(store_error)?;
        let limits = self.shared.store.limits();
        kvs_resp::commands::check_sizes(key, value, limits.max_key_bytes, limits.max_value_bytes)
    }

    fn info(&self) -> ServerInfo {
        let stats = self.shared.store.stats();
        ServerInfo {
            kvs_version: env!("CARGO_PKG_VERSION").into(),
            frontend: "resp".into(),
            tcp_port: self.shared.port,
            uptime_secs: self.shared.started.elapsed().as_secs(),
            connected_clients: self.shared.connected.count() as u64,
            total_connections: self.shared.total_connections.load(Ordering::Relaxed),
            total_commands: self.shared.total_commands.load(Ordering::Relaxed),
            keys: stats.map(|s| s.keys),
            data_bytes: stats.map(|s| s.data_bytes),
        }
    }

    fn authenticate(&mut self, session: &mut Session, token: &[u8]) -> Result<(), StoreError> {
        let token = String::from_utf8(token.to_vec()).map_err(|_| StoreError {
            kind: ErrorKind::Unauthenticated,
            message: "the token is not UTF-8".into(),
        })?;
        // The host verifies the token now: a call for the empty key under it has only
        // its credentials checked (and is then refused as no key, reading nothing).
        // UNAUTHENTICATED means a bad token, answered -WRONGPASS; the session keeps
        // whatever it presented before. The host still checks the token on every later
        // call (it may expire mid-connection: -NOAUTH then).
        let mut presented = self.context.clone();
        presented.bearer_token = Some(token);
        if let Err(e) = self.shared.store.get_with(&presented, b"")
            && e.code() == ErrorCode::UNAUTHENTICATED
        {
            return Err(store_error(e));
        }
        session.token = presented.bearer_token.clone();
        self.context = presented;
        Ok(())
    }

    fn check_authenticated(&mut self, _session: &Session) -> Result<(), StoreError> {
        // The host decides, as for AUTH: a call for the empty key has only the caller's
        // credentials checked, and with `[auth]` on an anonymous caller (no accepted
        // token, no client certificate) is UNAUTHENTICATED. Anything else (the store's
        // refusal of the empty key) means the caller may go on.
        match self.shared.store.get_with(&self.context, b"") {
            Err(e) if e.code() == ErrorCode::UNAUTHENTICATED => Err(store_error(e)),
            _ => Ok(()),
        }
    }
}

impl Connection {
    /// Waits for every queued write; replaces the reply of any that failed with its
    /// error, and puts each update's reply, made from its outcome, in its place.
    /// Afterwards `out` holds only acknowledgements of durable writes.
    async fn settle(&mut self, out: &mut Vec<u8>, protocol: kvs_resp::Protocol) {
        // Replies to put in place of a range of `out`: in order, one per command.
        let mut replaced: Vec<(u64, Range<usize>, Vec<u8>)> = Vec::new();
        for p in self.pending.drain(..) {
            let outcome = p.outcome.await;
            if replaced.last().is_some_and(|(c, ..)| *c == p.command) {
                continue; // this command's reply is already replaced (MSET's first error)
            }
            let mut reply = Vec::new();
            match (outcome, p.render) {
                (Err(e), _) => {
                    Reply::new(&mut reply, protocol).error(&store_error(e).reply());
                }
                (Ok(outcome), Some(render)) => {
                    render(&outcome, &mut Reply::new(&mut reply, protocol));
                }
                (Ok(_), None) => continue,
            }
            replaced.push((p.command, p.reply, reply));
        }
        if replaced.is_empty() {
            return;
        }
        let mut rebuilt = Vec::with_capacity(out.len() + 16 * replaced.len());
        let mut at = 0;
        for (_, range, reply) in replaced {
            rebuilt.extend_from_slice(&out[at..range.start]);
            rebuilt.extend_from_slice(&reply);
            at = range.end;
        }
        rebuilt.extend_from_slice(&out[at..]);
        *out = rebuilt;
    }
}

/// A connection's read and reply buffers start at this size.
const BUFFER_BYTES: usize = 16 << 10;
/// Buffers grown past this for a large command are given back once it is done.
const SHRINK_ABOVE: usize = 64 << 10;
/// Unsent replies past this are sent before more commands run (a client that does not
/// read then stops the connection's reading: its pipeline waits in the socket).
const MAX_UNSENT_BYTES: usize = 1 << 20;

/// Returns a buffer's memory once a large command is done with it: an idle connection
/// keeps only what it needs, not the largest command it ever sent.
///
/// The small buffer is a new allocation (not the large one shrunk in place, which would
/// pin the start of the freed region and keep the next large buffer from reusing it),
/// and the allocator is then asked to hand freed pages back to the OS ([`trim`]).
fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > SHRINK_ABOVE && buf.len() <= BUFFER_BYTES {
        let mut small = Vec::with_capacity(BUFFER_BYTES);
        small.extend_from_slice(buf);
        *buf = small;
        trim();
    }
}

/// Gives free memory back to the OS after large buffers were released: glibc keeps
/// freed chunks in its arenas (resident) until asked, so a burst of large commands
/// would leave the process at its peak size. One trim a second after the first release
/// of a burst, covering everything released until then; called on the runtime.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::AtomicBool;
        static PENDING: AtomicBool = AtomicBool::new(false);
        if !PENDING.swap(true, Ordering::AcqRel) {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                PENDING.store(false, Ordering::Release);
                // SAFETY: malloc_trim has no preconditions; it only releases free
                // memory.
                unsafe { libc::malloc_trim(0) };
            });
        }
    }
}

/// What the commands of one read came to.
struct Ran {
    /// Input consumed: every complete command (a partial one waits for more bytes).
    consumed: usize,
    /// Commands run.
    commands: u64,
    /// Whether to close the connection once the replies are sent.
    flow: Flow,
}

impl Connection {
    /// Runs every complete command in `input`, appending the replies to `out`.
    async fn run_commands(
        &mut self,
        decoder: &mut Decoder,
        session: &mut Session,
        input: &[u8],
        out: &mut Vec<u8>,
        stream: &mut (impl AsyncWrite + Unpin),
    ) -> Ran {
        let mut ran = Ran {
            consumed: 0,
            commands: 0,
            flow: Flow::Continue,
        };
        while ran.flow == Flow::Continue {
            match decoder.decode(&input[ran.consumed..]) {
                Ok((n, None)) => {
                    ran.consumed += n;
                    break;
                }
                Ok((n, Some(Decoded::TooLarge(why)))) => {
                    ran.consumed += n;
                    Reply::new(out, session.protocol).error(&format!("ERR {why}"));
                }
                Ok((n, Some(Decoded::Command(args)))) => {
                    if !args.is_empty() {
                        ran.commands += 1;
                        ran.flow = self.run_command(&args, session, out, stream).await;
                    }
                    ran.consumed += n;
                }
                Err(e) => {
                    self.settle(out, session.protocol).await;
                    Reply::new(out, session.protocol).error(&format!("ERR {e}"));
                    ran.flow = Flow::Close;
                }
            }
        }
        ran
    }

    /// Runs one command, first waiting for the queued writes if it reads the store, and
    /// sending the replies so far if too many are unsent. Its writes are queued with
    /// the range of its reply, to be replaced if one fails.
    async fn run_command(
        &mut self,
        args: &[&[u8]],
        session: &mut Session,
        out: &mut Vec<u8>,
        stream: &mut (impl AsyncWrite + Unpin),
    ) -> Flow {
        if !self.pending.is_empty() && !kvs_resp::commands::runs_ahead_of_writes(args[0]) {
            self.settle(out, session.protocol).await;
        }
        // Replies the client has not taken yet are bounded: past the bound, send them
        // (waiting while the client does not read) before running more of its commands.
        if out.len() >= MAX_UNSENT_BYTES {
            self.settle(out, session.protocol).await;
            if stream.write_all(out).await.is_err() {
                return Flow::Close;
            }
            out.clear();
        }
        let start = out.len();
        let queued = self.pending.len();
        let flow = kvs_resp::execute(args, session, self, out);
        let end = out.len();
        self.commands += 1;
        for p in &mut self.pending[queued..] {
            p.reply = start..end;
            p.command = self.commands;
        }
        flow
    }
}

/// Serves one connection until it closes or the frontend stops.
async fn serve(accepted: Accepted, shared: Arc<Shared>) {
    let context = accepted.request_context();
    let Accepted {
        mut stream,
        stopping: mut stop,
        ..
    } = accepted;
    // Connection ids count from 1, as Redis's `CLIENT ID` does.
    let id = shared.total_connections.fetch_add(1, Ordering::Relaxed) + 1;
    let mut session = Session {
        id,
        max_reply_bytes: Some(shared.max_reply_bytes),
        ..Session::default()
    };
    let mut conn = Connection {
        shared: shared.clone(),
        context,
        pending: Vec::new(),
        commands: 0,
    };
    let mut decoder = Decoder::new(shared.limits);
    let mut buf: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(BUFFER_BYTES);
        }
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            _ = stop.changed() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let ran = conn
            .run_commands(&mut decoder, &mut session, &buf, &mut out, &mut stream)
            .await;
        buf.drain(..ran.consumed);
        shared
            .total_commands
            .fetch_add(ran.commands, Ordering::Relaxed);
        conn.settle(&mut out, session.protocol).await;
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if ran.flow == Flow::Close {
            break;
        }
        shrink(&mut buf);
        shrink(&mut out);
    }
    // Writes still queued complete in the store whatever happens to the connection.
    let _ = stream.shutdown().await;
}

/// The running frontend.
pub struct RespFrontend {
    server: kvs_serve::tcp::TcpServer,
    tls: bool,
}

fn start(store: Store, config: &str) -> Result<RespFrontend, PluginError> {
    let config = Config::parse(config)?;
    let limits = store.limits();
    let limits = kvs_resp::Limits {
        max_bulk_bytes: usize::try_from(limits.max_key_bytes.max(limits.max_value_bytes))
            .unwrap_or(usize::MAX),
        max_command_bytes: config.max_command_bytes,
        ..kvs_resp::Limits::default()
    };
    let settings = kvs_serve::tcp::TcpSettings {
        listen: &config.listen,
        table: "[plugins.resp]",
        worker_threads: config.worker_threads,
        thread_name: "kvs-resp",
        max_connections: config.max_connections,
        max_connections_per_peer: config.max_connections_per_peer,
        descriptor_reserve: true,
        tls: config.tls.as_ref(),
        deadlines: kvs_serve::Deadlines::from_ms(
            config.handshake_timeout_ms,
            config.idle_timeout_ms,
            "[plugins.resp]",
        )?,
        log: kvs_serve::plugin_log,
    };
    let server = kvs_serve::tcp::TcpServer::start(&settings, |addr, connected| {
        let shared = Arc::new(Shared {
            limits,
            max_reply_bytes: config.max_reply_bytes,
            store,
            port: addr.port(),
            started: Instant::now(),
            connected,
            total_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
        });
        move |accepted| serve(accepted, shared.clone())
    })?;
    Ok(RespFrontend {
        server,
        tls: config.tls.is_some(),
    })
}

impl Frontend for RespFrontend {
    fn endpoints(&self) -> Vec<String> {
        // `rediss://` is the scheme Redis clients use for TLS.
        let scheme = if self.tls { "rediss" } else { "redis" };
        vec![format!("{scheme}://{}", self.server.local_addr())]
    }

    fn stop(&mut self, deadline: Duration) -> Result<(), PluginError> {
        // Stop accepting; each connection finishes the commands it has read (their
        // replies are sent) and closes.
        self.server.stop(deadline)
    }
}

export_plugin!(
    frontend: start,
    name: "resp",
    description: "the Redis protocol (RESP2/RESP3): redis-cli, redis-benchmark and Redis clients",
    capabilities: ["net:listen", "protocol:resp"]
);
