//! The `postgres` transaction logger: events in a PostgreSQL table, binary-safe.
//!
//! * **Table**: the book's `transactions(sequence, event_type, key, value)`, with `BYTEA`
//!   keys and values and `sequence` as the primary key; `event_type` keeps the book's
//!   numbering (1 = DELETE, 2 = PUT), and 3 for kvs's own PUT_UNTIL (a put with a
//!   deadline in front of its value; capability `log:expiry`, plugin-api 1.4), which
//!   the book's code does not write and skips. Created if missing; `kvs_schema` records its
//!   schema version so a later plug-in can migrate it.
//! * **append** is one `INSERT ... SELECT FROM unnest(...)` statement (atomic on its
//!   own) acknowledged after commit. `ON CONFLICT DO NOTHING` makes a retry after a lost
//!   acknowledgement harmless: the same batch carries the same sequence numbers.
//! * **replay** streams rows in sequence order; the table is never loaded whole.
//! * **Resilience**: failures are retried with exponential backoff and jitter within a
//!   budget; then the circuit breaker opens: appends fail fast with `unavailable` and the
//!   logger reports itself unhealthy (kvs's readiness goes false) while a background
//!   task probes the database; the first successful probe closes the breaker. No restart
//!   is needed.
//! * **Compaction**: a background task deletes superseded rows (older events of keys
//!   that have later ones) in bounded batches, on its own connection.
//!
//! The plug-in runs its own tokio runtime; the host's committing thread (its writer
//! thread, or a frontend's committing its own writes) blocks on it.

mod config;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::{StreamExt, pin_mut};
use kvs_plugin_api::{
    Event, EventKind, Health, PluginError, TransactionLogger, export_plugin, log,
};
use tokio_postgres::{NoTls, error::SqlState};

pub use config::Config;

/// The book's event numbering, kept in the table.
const BOOK_DELETE: i16 = 1;
const BOOK_PUT: i16 = 2;
/// kvs's own: a put with its deadline in front of the value (not in the book).
const PUT_UNTIL: i16 = 3;
/// The table layout this plug-in writes.
const SCHEMA_VERSION: i32 = 1;
/// Rows handed to the host per replay chunk.
const REPLAY_CHUNK: usize = 4096;

/// Why an operation failed: worth retrying, or not.
enum Failure {
    /// The database is unreachable, restarting, overloaded, or the call timed out.
    Transient(String),
    /// Anything else: a bug, a constraint, bad data.
    Permanent(String),
}

fn classify(e: &tokio_postgres::Error) -> Failure {
    let transient = match e.code() {
        None => true, // I/O, closed connection, timeout: no SQLSTATE
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || c.starts_with("57") // operator intervention: shutdown, cancel, timeout
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        }
    };
    let msg = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    if transient {
        Failure::Transient(msg)
    } else {
        Failure::Permanent(msg)
    }
}

fn pool_failure(e: deadpool_postgres::PoolError) -> Failure {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(&e),
        other => Failure::Transient(other.to_string()),
    }
}

/// The circuit breaker's state, shared by the writer thread and the probe task.
#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open: bool,
}

/// The logger. See the crate docs.
pub struct PostgresLogger {
    config: Config,
    runtime: tokio::runtime::Runtime,
    pool: Pool,
    insert_sql: String,
    breaker: Arc<Mutex<Breaker>>,
    health: Health,
    prober: Option<tokio::task::JoinHandle<()>>,
    compactor: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl PostgresLogger {
    /// Connects, creates the table if missing, checks its schema version.
    pub fn open(config: Config) -> Result<PostgresLogger, PluginError> {
        let pg = config.connection()?;
        let target = Config::describe(&pg);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kvs-postgres")
            .enable_all()
            .build()?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .wait_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .build()
            .map_err(|e| PluginError::internal(format!("connection pool: {e}")))?;
        let table = config.table.clone();
        runtime
            .block_on(create_schema(&pool, &table))
            .map_err(|e| startup_error(&target, e))?;
        let mut logger = PostgresLogger {
            insert_sql: format!(
                "INSERT INTO {table} (sequence, event_type, key, value) \
                 SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::bytea[], $4::bytea[]) \
                 ON CONFLICT (sequence) DO NOTHING"
            ),
            config,
            runtime,
            pool,
            breaker: Arc::default(),
            health: Health::new(true),
            prober: None,
            compactor: None,
            target,
        };
        logger.warn_if_not_durable();
        logger.start_compactor();
        Ok(logger)
    }

    /// A write is acknowledged once its INSERT has committed. That survives a power loss
    /// of the database server only if the commit waited for the WAL to reach disk
    /// (`synchronous_commit` on, local or remote_*) and the server fsyncs at all.
    fn warn_if_not_durable(&self) {
        let settings = self.runtime.block_on(async {
            let client = self.pool.get().await.ok()?;
            let get = async |name: &str| -> Option<String> {
                let row = client.query_one(&format!("SHOW {name}"), &[]).await.ok()?;
                row.try_get::<_, String>(0).ok()
            };
            Some((get("synchronous_commit").await?, get("fsync").await?))
        });
        let Some((synchronous_commit, fsync)) = settings else {
            return;
        };
        if synchronous_commit == "off" {
            log::log(
                log::Level::WARN,
                "durability",
                "synchronous_commit is off for kvs's connections: a write kvs acknowledges may be \
                 lost if the database server crashes or loses power; set synchronous_commit = \
                 on for the kvs role or database",
                &[("database", &self.target)],
            );
        }
        if fsync == "off" {
            log::log(
                log::Level::WARN,
                "durability",
                "the database server runs with fsync = off: acknowledged writes do not survive \
                 a power loss or OS crash of the database machine",
                &[("database", &self.target)],
            );
        }
    }

    async fn try_insert(pool: &Pool, sql: &str, batch: &[Event<'_>]) -> Result<(), Failure> {
        let seqs: Vec<i64> = batch.iter().map(|e| e.sequence as i64).collect();
        let kinds: Vec<i16> = batch
            .iter()
            .map(|e| match e.kind {
                EventKind::PUT => BOOK_PUT,
                EventKind::PUT_UNTIL => PUT_UNTIL,
                _ => BOOK_DELETE,
            })
            .collect();
        let keys: Vec<&[u8]> = batch.iter().map(|e| e.key.as_slice()).collect();
        let values: Vec<&[u8]> = batch.iter().map(|e| e.value.as_slice()).collect();
        let client = pool.get().await.map_err(pool_failure)?;
        client
            .execute(sql, &[&seqs, &kinds, &keys, &values])
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    /// Opens the breaker: writes fail fast, readiness goes false, a probe task watches
    /// for the database to come back.
    fn open_breaker(&mut self) {
        self.breaker.lock().unwrap().open = true;
        self.health.set(false);
        log::log(
            log::Level::WARN,
            "breaker",
            "circuit breaker open: writes fail fast and kvs reports not ready until a probe reaches the database",
            &[
                ("target", &self.target),
                ("probe_ms", &self.config.breaker_probe_ms),
            ],
        );
        if self.prober.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        let (pool, breaker, health) =
            (self.pool.clone(), self.breaker.clone(), self.health.clone());
        let period = Duration::from_millis(self.config.breaker_probe_ms);
        self.prober = Some(self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let ok = match pool.get().await {
                    Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    *breaker.lock().unwrap() = Breaker::default();
                    health.set(true);
                    log::info("circuit breaker closed: the database answers again, writes resume");
                    return;
                }
            }
        }));
    }

    fn start_compactor(&mut self) {
        if self.config.compact_interval_ms == 0 {
            return;
        }
        let pool = self.pool.clone();
        let period = Duration::from_millis(self.config.compact_interval_ms);
        let sql = format!(
            "DELETE FROM {t} WHERE sequence IN (SELECT old.sequence FROM {t} old \
             WHERE EXISTS (SELECT 1 FROM {t} newer WHERE newer.key = old.key AND newer.sequence > old.sequence) \
             LIMIT $1)",
            t = self.config.table
        );
        let batch = self.config.compact_batch;
        self.compactor = Some(self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                // Bounded statements, each its own transaction, so writes never wait long.
                let mut removed = 0u64;
                while let Ok(client) = pool.get().await {
                    match client.execute(&sql, &[&batch]).await {
                        Ok(n) => {
                            removed += n;
                            if (n as i64) < batch {
                                break;
                            }
                        }
                        Err(e) => {
                            log::log(
                                log::Level::WARN,
                                "compaction",
                                "compaction statement failed; retried next period",
                                &[("error", &e)],
                            );
                            break;
                        }
                    }
                }
                if removed > 0 {
                    log::log(
                        log::Level::DEBUG,
                        "compaction",
                        "removed superseded events",
                        &[("rows", &removed)],
                    );
                }
            }
        }));
    }
}

async fn create_schema(pool: &Pool, table: &str) -> Result<(), Failure> {
    let mut client = pool.get().await.map_err(pool_failure)?;
    let tx = client.transaction().await.map_err(|e| classify(&e))?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS kvs_schema (table_name TEXT PRIMARY KEY, version INT NOT NULL);
         CREATE TABLE IF NOT EXISTS {table} (
             sequence BIGINT PRIMARY KEY,
             event_type SMALLINT NOT NULL,
             key BYTEA NOT NULL,
             value BYTEA NOT NULL);
         CREATE INDEX IF NOT EXISTS {table}_key_sequence ON {table} (key, sequence);"
    ))
    .await
    .map_err(|e| classify(&e))?;
    tx.execute(
        "INSERT INTO kvs_schema (table_name, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&table, &SCHEMA_VERSION],
    )
    .await
    .map_err(|e| classify(&e))?;
    let version: i32 = tx
        .query_one(
            "SELECT version FROM kvs_schema WHERE table_name = $1",
            &[&table],
        )
        .await
        .map_err(|e| classify(&e))?
        .get(0);
    if version != SCHEMA_VERSION {
        return Err(Failure::Permanent(format!(
            "table {table} has schema version {version}; this plug-in writes version {SCHEMA_VERSION}: upgrade the plug-in"
        )));
    }
    tx.commit().await.map_err(|e| classify(&e))
}

fn startup_error(target: &str, failure: Failure) -> PluginError {
    let (Failure::Transient(msg) | Failure::Permanent(msg)) = failure;
    let hint = if msg.contains("password") || msg.contains("28P01") || msg.contains("28000") {
        "; check the user in [plugins.postgres] url and the password in KVS_POSTGRES_PASSWORD (or PGPASSWORD)"
    } else {
        "; check [plugins.postgres] url and that the server is running"
    };
    PluginError::unavailable(format!("cannot use PostgreSQL at {target}: {msg}{hint}"))
}

impl TransactionLogger for PostgresLogger {
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        if self.breaker.lock().unwrap().open {
            return Err(PluginError::unavailable(format!(
                "PostgreSQL at {} is unavailable (circuit open; probing every {} ms)",
                self.target, self.config.breaker_probe_ms
            )));
        }
        let started = Instant::now();
        let budget = Duration::from_millis(self.config.retry_budget_ms);
        let mut delay = Duration::from_millis(self.config.retry_base_ms);
        let max_delay = Duration::from_millis(self.config.retry_max_ms);
        let last_error = loop {
            match self
                .runtime
                .block_on(Self::try_insert(&self.pool, &self.insert_sql, batch))
            {
                Ok(()) => {
                    self.breaker.lock().unwrap().consecutive_failures = 0;
                    return Ok(());
                }
                Err(Failure::Permanent(msg)) => {
                    return Err(PluginError::internal(format!(
                        "PostgreSQL refused the batch: {msg}"
                    )));
                }
                Err(Failure::Transient(msg)) => {
                    if started.elapsed() + delay > budget {
                        break msg;
                    }
                    log::log(
                        log::Level::DEBUG,
                        "retry",
                        "append failed, retrying",
                        &[("error", &msg), ("delay_ms", &delay.as_millis())],
                    );
                    // Full jitter: spread retries of many writers over the interval.
                    let jittered = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
                    std::thread::sleep(jittered);
                    delay = (delay * 2).min(max_delay);
                }
            }
        };
        let open = {
            let mut b = self.breaker.lock().unwrap();
            b.consecutive_failures += 1;
            b.consecutive_failures >= self.config.breaker_failures
        };
        if open {
            self.open_breaker();
        }
        Err(PluginError::unavailable(format!(
            "PostgreSQL at {} is unavailable: {last_error}",
            self.target
        )))
    }

    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let sql = format!(
            "SELECT sequence, event_type, key, value FROM {} ORDER BY sequence",
            self.config.table
        );
        let target = self.target.clone();
        self.runtime.block_on(async {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| startup_error(&target, pool_failure(e)))?;
            let rows = client
                .query_raw(&sql, std::iter::empty::<i64>())
                .await
                .map_err(|e| startup_error(&target, classify(&e)))?;
            pin_mut!(rows);
            let mut chunk: Vec<(i64, i16, Vec<u8>, Vec<u8>)> = Vec::with_capacity(REPLAY_CHUNK);
            let mut flush =
                |chunk: &mut Vec<(i64, i16, Vec<u8>, Vec<u8>)>| -> Result<(), PluginError> {
                    let mut events = Vec::with_capacity(chunk.len());
                    for (seq, kind, key, value) in chunk.iter() {
                        let kind = match *kind {
                            BOOK_PUT => EventKind::PUT,
                            BOOK_DELETE => EventKind::DELETE,
                            PUT_UNTIL => EventKind::PUT_UNTIL,
                            other => {
                                return Err(PluginError::internal(format!(
                                    "row {seq}: unknown event_type {other}"
                                )));
                            }
                        };
                        events.push(Event {
                            sequence: *seq as u64,
                            kind,
                            key: key.as_slice().into(),
                            value: value.as_slice().into(),
                        });
                    }
                    let result = sink(&events);
                    drop(events);
                    chunk.clear();
                    result
                };
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| startup_error(&target, classify(&e)))?;
                chunk.push((row.get(0), row.get(1), row.get(2), row.get(3)));
                if chunk.len() == REPLAY_CHUNK {
                    flush(&mut chunk)?;
                }
            }
            flush(&mut chunk)
        })
    }

    fn close(&mut self) -> Result<(), PluginError> {
        for task in [self.prober.take(), self.compactor.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        self.pool.close();
        Ok(())
    }

    fn health(&self) -> Option<Health> {
        Some(self.health.clone())
    }
}

fn open(config: &str) -> Result<PostgresLogger, PluginError> {
    PostgresLogger::open(Config::parse(config)?)
}

export_plugin!(
    logger: open,
    name: "postgres",
    description: "PostgreSQL table of events; retries with backoff, circuit breaker, background compaction",
    capabilities: ["log:expiry", "log:atomic_batch"]
);
