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
//!   fsync; their replies are sent only once every one of them is durable. The
//!   frontend commits them itself (`frontend:commits`, plugin-api 1.7): when its thread
//!   has run every ready connection and would wait for the network, it commits what all
//!   of them queued in one append on that thread — what Redis does before its event
//!   loop sleeps — so a write costs no wake-up of another thread (`commits.rs`). An
//!   update's reply is made from its outcome then; a write that fails after it was queued (the
//!   logger failed, the value was not a number) has its reply replaced by the error
//!   before anything is sent.
//! * **Order.** A command that reads the store (`GET`, `DEL`, `EXISTS`, ...) first waits
//!   for the connection's queued writes, so a pipeline sees its own writes, as in Redis.
//! * **Bad input.** Limits come from the store's key and value limits and
//!   `max_command_bytes`: an oversized argument is skipped unread and answered
//!   `-ERR ...`, and the connection carries on; bytes that are not RESP get
//!   `-ERR Protocol error: ...` and a close (the stream cannot be resynchronised). A
//!   command must arrive whole within `command_timeout_ms` of its first byte, else the
//!   connection is answered an error and closed: a client trickling a command holds its
//!   slot that long at most (a silent one is closed by the listener's idle deadline).
//! * **Credentials.** `AUTH token` (or `HELLO 3 AUTH user token`) has the host verify
//!   the token (`-WRONGPASS` if it refuses it) and sets the bearer token every later
//!   store call carries; the host decides each call, and a refused one answers
//!   `-NOAUTH` or `-NOPERM`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvs_plugin_api::{Frontend, PluginError, Store, export_plugin};
use kvs_resp::{Decoded, Decoder, Flow, Reply, Session};
use kvs_serve::tcp::{Accepted, OpenConnections};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod backend;
mod commits;
mod config;

use backend::Connection;
use commits::Commits;

pub use config::Config;

/// What every connection shares: the store, limits, counters for `INFO`.
struct Shared {
    store: Store,
    /// When the writes its connections queue are committed.
    commits: Arc<Commits>,
    limits: kvs_resp::Limits,
    max_reply_bytes: usize,
    /// `command_timeout_ms` (`None`: no bound).
    command_timeout: Option<Duration>,
    port: u16,
    started: Instant,
    connected: OpenConnections,
    total_connections: AtomicU64,
    total_commands: AtomicU64,
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
    /// Commands finished: run, or answered with an error (too large).
    finished: u64,
    /// Whether to close the connection once the replies are sent.
    flow: Flow,
}

impl Connection {
    /// Runs every complete command in `input`, appending the replies to `out`.
    async fn run_commands(
        &mut self,
        decoder: &mut Decoder,
        spare: &mut Vec<&'static [u8]>,
        session: &mut Session,
        input: &[u8],
        out: &mut Vec<u8>,
        stream: &mut (impl AsyncWrite + Unpin),
    ) -> Ran {
        let mut ran = Ran {
            consumed: 0,
            commands: 0,
            finished: 0,
            flow: Flow::Continue,
        };
        while ran.flow == Flow::Continue && ran.consumed < input.len() {
            // The argument list is the connection's, reused: no allocation per command
            // (the end of a read is not decoded, which would drop it; a read ending
            // mid-command does drop it).
            let args = kvs_resp::recycle(std::mem::take(spare));
            match decoder.decode_into(&input[ran.consumed..], args) {
                Ok((n, None)) => {
                    ran.consumed += n;
                    break;
                }
                Ok((n, Some(Decoded::TooLarge(why)))) => {
                    ran.consumed += n;
                    ran.finished += 1;
                    Reply::new(out, session.protocol).error(&format!("ERR {why}"));
                }
                Ok((n, Some(Decoded::Command(args)))) => {
                    ran.finished += 1;
                    if !args.is_empty() {
                        ran.commands += 1;
                        ran.flow = self.run_command(&args, session, out, stream).await;
                    }
                    *spare = kvs_resp::recycle(args);
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
        self.shared.commits.ran();
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
    let mut args = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
    // Since when kvs has been waiting for the rest of a command, if it is: the clock
    // runs only while kvs waits for the client's bytes, never while it waits for its
    // own writes to be durable or for the client to take its replies.
    let mut partial_since: Option<tokio::time::Instant> = None;
    // One wait for the stop, made once: a new one per read registers and unregisters
    // with the channel each time (measured: ~380 instructions per request).
    let stopping = stop.changed();
    tokio::pin!(stopping);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(BUFFER_BYTES);
        }
        let give_up = partial_since
            .zip(shared.command_timeout)
            .map(|(t, d)| t + d);
        let read = tokio::select! {
            // The stop first: a client that keeps sending always has bytes ready and
            // would never see it. What it sent after the stop is not run (nor
            // acknowledged); what was read before is answered first (above).
            biased;
            _ = &mut stopping => break,
            // Bytes that are there are read before the clock is looked at, however late
            // it says it is.
            r = stream.read_buf(&mut buf) => r,
            _ = sleep_until(give_up), if give_up.is_some() => {
                let timeout = shared.command_timeout.unwrap_or_default().as_millis();
                Reply::new(&mut out, session.protocol).error(&format!(
                    "ERR command not received whole within {timeout} ms of its first byte \
                     (command_timeout_ms); closing the connection"
                ));
                let _ = stream.write_all(&out).await;
                break;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let ran = conn
            .run_commands(
                &mut decoder,
                &mut args,
                &mut session,
                &buf,
                &mut out,
                &mut stream,
            )
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
        let partial = !buf.is_empty() || decoder.mid_command();
        partial_since = match partial_since {
            _ if !partial => None,
            // Still the same command: its clock runs on.
            Some(since) if ran.finished == 0 => Some(since),
            // A new command began in this read: its clock starts now, as kvs waits.
            _ => Some(tokio::time::Instant::now()),
        };
        shrink(&mut buf);
        shrink(&mut out);
    }
    // Writes still queued complete in the store whatever happens to the connection.
    let _ = stream.shutdown().await;
}

/// Waits until `at` (forever if `None`; `select!` skips that branch then).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
    let commits = Arc::new(Commits::new(store.clone()));
    let settings = kvs_serve::tcp::TcpSettings {
        listen: &config.listen,
        table: "[plugins.resp]",
        worker_threads: config.worker_threads,
        blocks_in_place: false,
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
        when_idle: Some(kvs_serve::tcp::IdleHook(Arc::new({
            let commits = commits.clone();
            move || commits.idle()
        }))),
    };
    let server = kvs_serve::tcp::TcpServer::start(&settings, |addr, connected| {
        let shared = Arc::new(Shared {
            commits,
            limits,
            max_reply_bytes: config.max_reply_bytes,
            command_timeout: (config.command_timeout_ms > 0)
                .then(|| Duration::from_millis(config.command_timeout_ms)),
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
    // `frontend:commits`: this frontend commits its connections' writes itself
    // (`commits.rs`, when its thread would park), one append for every connection that
    // ran meanwhile.
    capabilities: ["net:listen", "protocol:resp", "frontend:commits"]
);
