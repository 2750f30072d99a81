//! Expiry deadlines in etcd (capability `log:expiry`): a key with a deadline is put
//! under an etcd lease whose id carries the deadline, so
//!
//! * every node reads the exact deadline back from the key (its `lease` field), in the
//!   snapshot and in the watch alike, and delivers it as a `PUT_UNTIL`: reads hide the
//!   key from the deadline on, on every node, by the wall clock as on one node;
//! * etcd itself deletes the key once the lease runs out (a little after the deadline:
//!   the lease's time to live is rounded up), and that delete comes to every node
//!   through the watch, so memory is reclaimed and a later snapshot omits the key;
//! * keys with the same deadline share one lease (granting an id that exists is
//!   refused by etcd, and that lease already runs out when this one would).
//!
//! A lease id is `LEASE_TAG` in the top 16 bits and the deadline (milliseconds since
//! the Unix epoch, below 2^48: the year 10889) below: leases of other etcd users, whose
//! ids etcd picks at random, are never read as deadlines unless one collides with the
//! tag, and a key put under someone else's lease is delivered as a plain put.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{KeyValue, LeaseGrantOptions};
use kvs_plugin_api::PluginError;

/// "KV": the top 16 bits of every lease id kvs grants.
const LEASE_TAG: i64 = 0x4b56;
/// Deadlines must fit below the tag.
const DEADLINE_BITS: u32 = 48;

/// The lease id that carries `deadline`, or why it cannot.
pub(crate) fn lease_id(deadline: u64) -> Result<i64, PluginError> {
    if deadline >= 1 << DEADLINE_BITS {
        return Err(PluginError::invalid_input(format!(
            "a deadline of {deadline} ms since 1970 is past what the etcd logger stores \
             (2^48 ms, the year 10889)"
        )));
    }
    Ok(LEASE_TAG << DEADLINE_BITS | deadline as i64)
}

/// The deadline a lease id carries, if it is one of kvs's.
pub(crate) fn deadline_of(lease: i64) -> Option<u64> {
    (lease >> DEADLINE_BITS == LEASE_TAG).then_some((lease & ((1 << DEADLINE_BITS) - 1)) as u64)
}

/// How long etcd should keep a lease that must not run out before `deadline`: the
/// time left, rounded up to whole seconds (etcd's unit), plus one.
fn ttl_secs(deadline: u64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left_ms = deadline.saturating_sub(now);
    (left_ms.div_ceil(1000) as i64).max(1) + 1
}

/// Grants the lease for each of `deadlines` (distinct), unless it exists already.
pub(crate) async fn grant(
    client: &etcd_client::Client,
    deadlines: &[u64],
    timeout: Duration,
    attempt: Duration,
) -> Result<(), PluginError> {
    for &deadline in deadlines {
        let id = lease_id(deadline)?;
        let ttl = ttl_secs(deadline);
        // Safe to retry: a second grant of one id is refused as existing.
        let granted = crate::retry(timeout, attempt, false, || {
            let mut lease = client.lease_client();
            async move {
                match lease
                    .grant(ttl, Some(LeaseGrantOptions::new().with_id(id)))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.to_string().contains("lease already exists") => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await;
        granted.map_err(|e| crate::unavailable("lease grant", e))?;
    }
    Ok(())
}

/// A key-value's value as a `PUT_UNTIL` event's, if it is under one of kvs's leases:
/// the deadline (little-endian `u64`), then the value.
pub(crate) fn with_deadline(kv: &KeyValue) -> Option<Vec<u8>> {
    let deadline = deadline_of(kv.lease())?;
    let value = kv.value();
    let mut bytes = Vec::with_capacity(8 + value.len());
    bytes.extend_from_slice(&deadline.to_le_bytes());
    bytes.extend_from_slice(value);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_carry_deadlines_and_others_leases_carry_none() {
        let deadline = 1_765_000_000_123;
        let id = lease_id(deadline).unwrap();
        assert!(id > 0);
        assert_eq!(deadline_of(id), Some(deadline));
        assert_eq!(deadline_of(0), None);
        assert_eq!(
            deadline_of(0x694d_71a4_3c1f_0b2e),
            None,
            "an id etcd picked"
        );
        assert!(lease_id(1 << 48).is_err());
        assert!(
            ttl_secs(0) >= 2,
            "a deadline past still gets a lease that runs out"
        );
    }
}
