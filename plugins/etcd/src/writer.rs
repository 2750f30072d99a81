//! Appends that can be retried: each transaction this node commits also puts its
//! *writer key* (`\0kvs-writer/<prefix>/<node id>`, outside the watched prefix), and
//! applies only if that key is as this node last left it. A transaction whose answer
//! was lost (a member that hung or died after receiving it) can then be sent again, to
//! another member: if the first attempt was applied, the second finds the key already
//! holding the first's token and reports the first's revision instead of applying
//! twice. Without this, a transaction could be sent only once, and a hung member held
//! every write for the whole request timeout.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp, TxnOpResponse};
use kvs_plugin_api::{ErrorCode, PluginError, log};

use crate::{retry, unavailable};

/// This node's writer key and where it stands.
pub(crate) struct Writer {
    key: Vec<u8>,
    /// The writer key's mod revision after this node's last transaction (0: none yet).
    last: AtomicI64,
    /// Transactions committed so far; the next one's token.
    count: AtomicU64,
}

/// The writer keys of every node on `prefix` start with this.
pub(crate) fn writer_prefix(prefix: &[u8]) -> Vec<u8> {
    [b"\0kvs-writer/".as_slice(), prefix, b"/"].concat()
}

impl Writer {
    /// A writer with a fresh identity (random per process): two nodes never share one.
    pub(crate) fn new(prefix: &[u8]) -> Writer {
        let random = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            h.write_u32(std::process::id());
            h.finish()
        };
        let id = format!("{:016x}{:016x}", random(1), random(2));
        Writer {
            key: [writer_prefix(prefix), id.into_bytes()].concat(),
            last: AtomicI64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Commits `ops` in one transaction, on the condition that each of `expects`' keys
    /// is at its mod revision, retried (each attempt at most `attempt`, all within
    /// `timeout`) until it is known to have applied exactly once; its revision, or
    /// CONFLICT when a condition failed. Called by one thread at a time (the host's
    /// writer).
    pub(crate) async fn commit(
        &self,
        kv: &KvClient,
        ops: Vec<TxnOp>,
        expects: &[(Vec<u8>, i64)],
        timeout: Duration,
        attempt: Duration,
    ) -> Result<u64, PluginError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let number = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let token = number.to_string().into_bytes();
        let mut ops = ops;
        ops.push(TxnOp::put(self.key.clone(), token.clone(), None));
        // Attempts sent so far: after more than one, an earlier may still be in flight.
        let mut sent = 0usize;
        loop {
            let last = self.last.load(Ordering::Acquire);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let response = retry(left, attempt, false, || {
                sent += 1;
                let mut kv = kv.clone();
                let mut when = Vec::with_capacity(1 + expects.len());
                when.push(Compare::mod_revision(
                    self.key.clone(),
                    CompareOp::Equal,
                    last,
                ));
                when.extend(expects.iter().map(|(key, revision)| {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, *revision)
                }));
                let txn = Txn::new()
                    .when(when)
                    .and_then(ops.clone())
                    .or_else([TxnOp::get(self.key.clone(), None)]);
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(|e| {
                if crate::too_large(&e) {
                    // Refused before anything was applied, by every member alike.
                    PluginError::new(
                        ErrorCode::TOO_LARGE,
                        format!("etcd refused the transaction: {e}"),
                    )
                } else {
                    unavailable("transaction (it may or may not have applied)", e)
                }
            })?;
            if response.succeeded() {
                let revision = response.header().map_or(0, |h| h.revision());
                self.last.store(revision, Ordering::Release);
                return Ok(revision as u64);
            }
            // The key moved since this node last saw it. Only this node writes it, so
            // it holds one of this node's tokens: this transaction's (an earlier
            // attempt applied), or an earlier one's (a transaction reported failed —
            // its answer lost — applied after all).
            let found = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                _ => None,
            });
            let earlier = |value: &[u8]| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|n| n < number)
            };
            // Unmoved since this node's last transaction: not this one's, nor an earlier
            // one that applied late; so an expected key's compare is what failed.
            let unmoved = match &found {
                Some((_, revision)) => *revision == last,
                None => last == 0,
            };
            if !expects.is_empty() && unmoved {
                // An earlier attempt still in flight (sent to a member that hung) could
                // yet apply if its keys came back to where it expected them (a key
                // deleted again is at 0 again), after the host was told CONFLICT and
                // made the update anew. Moving the writer key first rules that out.
                if sent > 1 {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if !self.fence(kv, last, left, attempt).await? {
                        // The writer key moved after all: this transaction (or an
                        // earlier one) applied late. Look again.
                        continue;
                    }
                }
                return Err(PluginError::new(
                    ErrorCode::CONFLICT,
                    "the key moved on in the shared log since this node read it",
                ));
            }
            match found {
                Some((value, revision)) if value == token => {
                    self.last.store(revision, Ordering::Release);
                    return Ok(revision as u64);
                }
                Some((value, revision)) if earlier(&value) => {
                    log::warn(&format!(
                        "an etcd transaction this node reported failed (no answer in time) \
                         was applied after all, at revision {revision}; its writes reach \
                         every node's map, only their clients were told 503"
                    ));
                    self.last.store(revision, Ordering::Release);
                }
                _ => {
                    return Err(PluginError::internal(format!(
                        "this node's etcd writer key {:?} was changed by something else; \
                         kvs cannot tell whether its last write applied",
                        String::from_utf8_lossy(&self.key)
                    )));
                }
            }
        }
    }

    /// Puts a new token in the writer key if it is still at `last`, so that no
    /// transaction sent before can apply any more (each compares the key with `last`).
    /// False if the key had moved (a transaction sent before applied). Retried like a
    /// commit: an attempt that applied late is recognised by its token.
    async fn fence(
        &self,
        kv: &KvClient,
        last: i64,
        timeout: Duration,
        attempt: Duration,
    ) -> Result<bool, PluginError> {
        let number = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let token = number.to_string().into_bytes();
        let response = retry(timeout, attempt, false, || {
            let mut kv = kv.clone();
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    self.key.clone(),
                    CompareOp::Equal,
                    last,
                )])
                .and_then([TxnOp::put(self.key.clone(), token.clone(), None)])
                .or_else([TxnOp::get(self.key.clone(), None)]);
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|e| unavailable("fencing this node's earlier attempts", e))?;
        let applied = if response.succeeded() {
            response.header().map(|h| h.revision())
        } else {
            // An earlier attempt of this fence applied: fenced all the same.
            response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .filter(|kv| kv.value() == token.as_slice())
                    .map(|kv| kv.mod_revision()),
                _ => None,
            })
        };
        match applied {
            Some(revision) => {
                self.last.store(revision, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes the writer key (on a clean close; a crashed node's key is left behind,
    /// a few bytes, safe to delete once the node is gone).
    pub(crate) async fn remove(&self, kv: &KvClient, timeout: Duration) {
        let mut kv = kv.clone();
        let _ = tokio::time::timeout(timeout, kv.delete(self.key.clone(), None)).await;
    }
}
