//! The transaction log's unit: a sequenced PUT or DELETE.

use std::fmt;

#[cfg(feature = "native")]
use abi_stable::std_types::RSlice;

/// Whether an event stores a value or removes a key.
///
/// A transparent `u8` (not an enum) so the set can grow in a minor version without
/// making an old plug-in's layout check fail.
#[repr(transparent)]
#[cfg_attr(feature = "native", derive(abi_stable::StableAbi))]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKind(pub u8);

impl EventKind {
    /// Set `key` to `value`.
    pub const PUT: EventKind = EventKind(1);
    /// Remove `key`; `value` is empty.
    pub const DELETE: EventKind = EventKind(2);
    /// Set `key` until a deadline (1.4): `value` is the deadline, a little-endian `u64`
    /// of milliseconds since the Unix epoch, then the value. Past the deadline the key
    /// is gone; the host logs a DELETE once it removes it. Sent only to loggers that
    /// declare [`LOG_EXPIRY`](crate::capability::LOG_EXPIRY); a logger stores it as it
    /// stores a PUT and replays it unchanged, also when its deadline has passed (the
    /// host hides it). Like a superseded record, one whose deadline has passed may be
    /// dropped when the logger compacts — but, as for every record, never the log's
    /// newest: the host numbers its next write after the highest sequence it replays,
    /// and keys' revisions (clients' ETags) are those numbers.
    pub const PUT_UNTIL: EventKind = EventKind(3);
    /// Not a change but a condition on the batch it leads (1.4): the batch applies only
    /// if `key`'s newest event in the log is at position `sequence` (0: the key has
    /// none, or its newest is a delete); otherwise `append` applies nothing and fails
    /// with [`ErrorCode::CONFLICT`](crate::ErrorCode::CONFLICT). Its `value` is empty;
    /// it is never delivered back. Sent only to shared logs that declare
    /// [`LOG_CONDITIONAL`](crate::capability::LOG_CONDITIONAL): it is how a kvs cluster
    /// makes compare-and-set and counters linearizable (etcd: a transaction comparing
    /// the key's `mod_revision`).
    pub const EXPECT: EventKind = EventKind(4);
}

/// Splits a [`EventKind::PUT_UNTIL`] event's value into its deadline (milliseconds since
/// the Unix epoch) and the value; `None` if it is shorter than a deadline.
pub fn split_deadline(value: &[u8]) -> Option<(u64, &[u8])> {
    let (deadline, value) = value.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*deadline), value))
}

impl fmt::Debug for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::PUT => f.write_str("PUT"),
            Self::DELETE => f.write_str("DELETE"),
            Self::PUT_UNTIL => f.write_str("PUT_UNTIL"),
            Self::EXPECT => f.write_str("EXPECT"),
            EventKind(other) => write!(f, "EventKind({other})"),
        }
    }
}

/// One entry of the transaction log, borrowing its key and value.
///
/// Sequence numbers strictly increase in log order. They may have gaps: a batch the
/// logger refused is never retried under the same numbers.
#[cfg(feature = "native")]
#[repr(C)]
#[derive(abi_stable::StableAbi, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log, assigned by the host's writer.
    pub sequence: u64,
    /// PUT or DELETE.
    pub kind: EventKind,
    /// Any bytes, 1..=the host's key limit long.
    pub key: RSlice<'a, u8>,
    /// Any bytes (possibly empty) for a PUT; empty for a DELETE.
    pub value: RSlice<'a, u8>,
}

#[cfg(feature = "native")]
impl<'a> Event<'a> {
    /// A PUT event.
    pub fn put(sequence: u64, key: &'a [u8], value: &'a [u8]) -> Self {
        Event {
            sequence,
            kind: EventKind::PUT,
            key: key.into(),
            value: value.into(),
        }
    }

    /// A DELETE event.
    pub fn delete(sequence: u64, key: &'a [u8]) -> Self {
        Event {
            sequence,
            kind: EventKind::DELETE,
            key: key.into(),
            value: RSlice::from_slice(&[]),
        }
    }
}

#[cfg(feature = "native")]
impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("sequence", &self.sequence)
            .field("kind", &self.kind)
            .field("key", &String::from_utf8_lossy(self.key.as_slice()))
            .field("value_len", &self.value.len())
            .finish()
    }
}
