//! A connection's view of the store ([`Connection`], the [`Backend`] the shared command
//! code runs against): its request context, and its writes queued at the store
//! ([`Pending`]) until `settle` waits for them and puts each reply in place.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kvs_plugin_api::update::Entry;
use kvs_plugin_api::{
    Action, Consistency, ErrorCode, Outcome, PluginError, RequestContext, Transaction, Update,
};
use kvs_resp::{Backend, ErrorKind, Render, Reply, ServerInfo, Session, StoreError};

use super::Shared;

/// A write queued at the store, and where its reply sits in the output.
pub(super) struct Pending {
    pub(super) outcome: Pin<Box<dyn Future<Output = Result<Outcome, PluginError>> + Send>>,
    pub(super) reply: Range<usize>,
    /// Which of the connection's commands queued it (an update's reply range is empty,
    /// so two in a row share one: the command tells them apart).
    pub(super) command: u64,
    /// For an atomic update: how its reply is made from its outcome, once known (its
    /// range is empty until then).
    pub(super) render: Option<Render>,
}

/// A plain write's outcome as an update's.
async fn acknowledged(
    write: impl Future<Output = Result<(), PluginError>>,
) -> Result<Outcome, PluginError> {
    write.await.map(|()| Outcome::default())
}

/// One connection's view of the store: its context, its queued writes.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) context: RequestContext,
    pub(super) pending: Vec<Pending>,
    /// Commands run so far (what tells [`Pending`]s of different commands apart).
    pub(super) commands: u64,
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

    fn transact(
        &mut self,
        _: &Session,
        transaction: Transaction,
        render: Render,
        _out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        // As `update`: queued now, the reply made from the first step's outcome once
        // what it wrote is durable.
        let outcomes = self.shared.store.transact_with(&self.context, &transaction);
        self.pending.push(Pending {
            outcome: Box::pin(async move {
                outcomes
                    .await
                    .map(|outcomes| outcomes.into_iter().next().unwrap_or_default())
            }),
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

    fn check_read(&mut self, _: &Session, key: &[u8]) -> Result<(), StoreError> {
        self.shared
            .store
            .check_with(&self.context, Action::GET, key)
            .map_err(store_error)
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
    pub(super) async fn settle(&mut self, out: &mut Vec<u8>, protocol: kvs_resp::Protocol) {
        if !self.pending.is_empty() {
            // Committed when the thread has run every ready connection (`commits`).
            self.shared.commits.queued();
        }
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
