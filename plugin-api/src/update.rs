//! Atomic writes (1.4): a write that carries a condition, a read-modify-write change or
//! an expiry deadline, evaluated by the host's writer in log order.
//!
//! The host has one writer per node, which orders every write; a shared log orders them
//! across nodes. An [`Update`] is evaluated at its place in that order, against every
//! write before it — including those still in the same group-commit batch — so
//! `INCR`, `SET NX`, compare-and-set and `If-Match` lose no update and need no lock.
//! What reaches a logger is still a plain PUT or DELETE (or, with a deadline,
//! [`EventKind::PUT_UNTIL`](crate::EventKind::PUT_UNTIL)); an update whose condition
//! fails logs nothing.
//!
//! Native frontends call it through [`Store::update_with`](crate::Store::update_with),
//! WASM ones through `kvs_update`; both pass the [`Update::encode`] bytes, so one
//! definition serves both and a later minor can append fields. 1.6 appended them:
//! a [`Transaction`] is several updates made all or none, each with a
//! [`DeadlineCondition`] (see its module, `transaction`).
//!
//! ```text
//! update    = key:bytes condition change expiry flags:u8     (flags bit 0: return_previous)
//! condition = 0 always | 1 absent | 2 present | 3 revision:u64 | 4 value:bytes
//! change    = 0 put value:bytes | 1 delete | 2 keep | 3 increment:i64
//!           | 4 increment_float:f64 | 5 append value:bytes
//! expiry    = 0 keep | 1 clear | 2 at unix_ms:u64 | 3 after ms:u64
//! outcome   = applied:u8 revision:u64 expires_at:opt_u64 length:u64
//!             previous:opt_bytes value:opt_bytes
//! entry     = revision:u64 expires_at:opt_u64 value:bytes
//! ```

use crate::wire::{Reader, WireError, Writer};

mod evaluate;
mod transaction;

pub use evaluate::{
    Current, Effect, Refused, evaluate, evaluate_transaction, format_float, parse_float,
    parse_integer,
};
pub use transaction::{
    DeadlineCondition, MAX_STEPS, Step, Transaction, decode_outcomes, encode_outcomes, step_holds,
};

/// When an [`Update`] applies. Evaluated against the key's state just before the update
/// in log order; a key past its deadline counts as absent.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only if the key is absent (`SET NX`, `If-None-Match: *`).
    Absent,
    /// Only if the key is present (`SET XX`).
    Present,
    /// Only if the key's revision is this one (`If-Match`); 0 means "absent" (no
    /// present key has revision 0).
    Revision(u64),
    /// Only if the key holds exactly this value (compare-and-set by value).
    Value(Vec<u8>),
}

/// What an [`Update`] does to the key's value when its condition holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set the value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Leave the value as it is (only the [`Expiry`] changes: `EXPIRE`, `PERSIST`). Not
    /// applied to an absent key.
    Keep,
    /// Add to the value read as a base-10 `i64` (an absent key counts as 0). A value that
    /// is not such an integer, or a sum that overflows, is an `invalid input` error.
    Increment(i64),
    /// Add to the value read as a decimal number (an absent key counts as 0). A value
    /// that is not a number, or a result that is not finite, is an `invalid input`
    /// error.
    IncrementFloat(f64),
    /// Append to the value (an absent key counts as empty).
    Append(Vec<u8>),
}

/// What an [`Update`] does to the key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Keep the deadline the key has, if any (`INCR`, `APPEND`, `SET ... KEEPTTL`).
    Keep,
    /// Remove it: the key stays until deleted (`SET` without options, `PERSIST`).
    Clear,
    /// Expire at this wall-clock time, in milliseconds since the Unix epoch (`PXAT`). A
    /// time already past removes the key.
    At(u64),
    /// Expire this many milliseconds after the host receives the update (`PX`); the host
    /// stores it as [`Expiry::At`].
    After(u64),
}

/// An atomic write: on `key`, if `condition` holds, make `change` and set `expiry`.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The key (1..=the host's key limit bytes).
    pub key: Vec<u8>,
    /// When it applies.
    pub condition: Condition,
    /// What it does to the value.
    pub change: Change,
    /// What it does to the deadline. Ignored by [`Change::Delete`].
    pub expiry: Expiry,
    /// Whether [`Outcome::previous`] should carry the value before (`GETSET`,
    /// `SET ... GET`, `GETDEL`).
    pub return_previous: bool,
}

impl Update {
    /// An update of `key` that applies always, keeps the value and the deadline: set
    /// the fields that matter.
    pub fn new(key: impl Into<Vec<u8>>, change: Change) -> Update {
        Update {
            key: key.into(),
            condition: Condition::Always,
            change,
            expiry: Expiry::Keep,
            return_previous: false,
        }
    }

    /// This update with `condition`.
    pub fn when(mut self, condition: Condition) -> Update {
        self.condition = condition;
        self
    }

    /// This update with `expiry`.
    pub fn expiring(mut self, expiry: Expiry) -> Update {
        self.expiry = expiry;
        self
    }

    /// This update, asking for the value before.
    pub fn returning_previous(mut self) -> Update {
        self.return_previous = true;
        self
    }

    /// The `update` encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.key.len() + 32));
        w.bytes(&self.key);
        match &self.condition {
            Condition::Always => w.u8(0),
            Condition::Absent => w.u8(1),
            Condition::Present => w.u8(2),
            Condition::Revision(r) => w.u8(3).u64(*r),
            Condition::Value(v) => w.u8(4).bytes(v),
        };
        match &self.change {
            Change::Put(v) => w.u8(0).bytes(v),
            Change::Delete => w.u8(1),
            Change::Keep => w.u8(2),
            Change::Increment(by) => w.u8(3).u64(*by as u64),
            Change::IncrementFloat(by) => w.u8(4).u64(by.to_bits()),
            Change::Append(v) => w.u8(5).bytes(v),
        };
        match self.expiry {
            Expiry::Keep => w.u8(0),
            Expiry::Clear => w.u8(1),
            Expiry::At(ms) => w.u8(2).u64(ms),
            Expiry::After(ms) => w.u8(3).u64(ms),
        };
        w.u8(self.return_previous as u8);
        w.0
    }

    /// Reads the `update` encoding. Bytes after it (fields of a later minor) are
    /// ignored.
    pub fn decode(bytes: &[u8]) -> Result<Update, WireError> {
        Update::read(&mut Reader::new(bytes))
    }

    /// Reads one `update` from `r`, leaving what follows it.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Update, WireError> {
        let key = r.bytes()?.to_vec();
        let condition = match r.u8()? {
            0 => Condition::Always,
            1 => Condition::Absent,
            2 => Condition::Present,
            3 => Condition::Revision(r.u64()?),
            4 => Condition::Value(r.bytes()?.to_vec()),
            other => return Err(WireError(format!("unknown condition {other}"))),
        };
        let change = match r.u8()? {
            0 => Change::Put(r.bytes()?.to_vec()),
            1 => Change::Delete,
            2 => Change::Keep,
            3 => Change::Increment(r.u64()? as i64),
            4 => Change::IncrementFloat(f64::from_bits(r.u64()?)),
            5 => Change::Append(r.bytes()?.to_vec()),
            other => return Err(WireError(format!("unknown change {other}"))),
        };
        let expiry = match r.u8()? {
            0 => Expiry::Keep,
            1 => Expiry::Clear,
            2 => Expiry::At(r.u64()?),
            3 => Expiry::After(r.u64()?),
            other => return Err(WireError(format!("unknown expiry {other}"))),
        };
        let return_previous = r.u8()? & 1 == 1;
        Ok(Update {
            key,
            condition,
            change,
            expiry,
            return_previous,
        })
    }
}

/// What an [`Update`] did. When nothing was written (`applied` false, or a change that
/// changed nothing), `revision`, `expires_at` and `length` describe the key as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the condition held and the change was made. False for a failed condition;
    /// for [`Change::Delete`] or [`Change::Keep`] on an absent key; and for `Keep` with
    /// [`Expiry::Clear`] on a key without a deadline (`PERSIST`'s 0). True for a
    /// deadline already past on a present key (it was removed).
    pub applied: bool,
    /// The key's revision afterwards: the log position of the write that last changed
    /// it (any write: a new deadline is a new revision); 0 means absent — no present key
    /// has revision 0.
    pub revision: u64,
    /// The key's deadline afterwards, in milliseconds since the Unix epoch, if it has one.
    pub expires_at: Option<u64>,
    /// The value's length afterwards (`APPEND`'s reply); 0 if the key is absent.
    pub length: u64,
    /// The value before, if the update asked for it and there was one.
    pub previous: Option<Vec<u8>>,
    /// The value afterwards, for [`Change::Increment`] and [`Change::IncrementFloat`]
    /// (the new number as stored).
    pub value: Option<Vec<u8>>,
}

impl Outcome {
    /// The `outcome` encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        // Sized once: growing from empty cost an INCR four reallocations.
        let bytes = |v: &Option<Vec<u8>>| 1 + v.as_ref().map_or(0, |v| 4 + v.len());
        let size = 1 + 8 + 9 + 8 + bytes(&self.previous) + bytes(&self.value);
        let mut w = Writer(Vec::with_capacity(size));
        w.u8(self.applied as u8).u64(self.revision);
        opt_u64(&mut w, self.expires_at);
        w.u64(self.length);
        opt_bytes(&mut w, self.previous.as_deref());
        opt_bytes(&mut w, self.value.as_deref());
        w.0
    }

    /// Reads the `outcome` encoding; later fields are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Outcome, WireError> {
        Outcome::read(&mut Reader::new(bytes))
    }

    /// Reads one `outcome` from `r`, leaving what follows it.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Outcome, WireError> {
        Ok(Outcome {
            applied: r.u8()? != 0,
            revision: r.u64()?,
            expires_at: read_opt_u64(r)?,
            length: r.u64()?,
            previous: read_opt_bytes(r)?,
            value: read_opt_bytes(r)?,
        })
    }
}

/// A key's value with what the host knows about it (1.4's `get_entry`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// The log position of the write that last changed the key (an `ETag`).
    pub revision: u64,
    /// When the key expires, in milliseconds since the Unix epoch, if it does.
    pub expires_at: Option<u64>,
}

impl Entry {
    /// The `entry` encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.value.len() + 24));
        w.u64(self.revision);
        opt_u64(&mut w, self.expires_at);
        w.bytes(&self.value);
        w.0
    }

    /// Reads the `entry` encoding; later fields are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Entry, WireError> {
        Entry::decode_owned(bytes.to_vec())
    }

    /// [`Entry::decode`] of a buffer it may keep: the value stays where it is (moved
    /// to the front), not copied into a new allocation.
    pub fn decode_owned(mut bytes: Vec<u8>) -> Result<Entry, WireError> {
        let mut r = Reader::new(&bytes);
        let revision = r.u64()?;
        let expires_at = read_opt_u64(&mut r)?;
        let len = r.u32()? as usize;
        let start = bytes.len() - r.rest().len();
        if r.rest().len() < len {
            return Err(WireError(format!(
                "a value of {len} bytes in {} bytes",
                r.rest().len()
            )));
        }
        bytes.truncate(start + len);
        bytes.drain(..start);
        Ok(Entry {
            value: bytes,
            revision,
            expires_at,
        })
    }
}

fn opt_u64(w: &mut Writer, v: Option<u64>) {
    match v {
        None => w.u8(0),
        Some(v) => w.u8(1).u64(v),
    };
}

fn opt_bytes(w: &mut Writer, v: Option<&[u8]>) {
    match v {
        None => w.u8(0),
        Some(v) => w.u8(1).bytes(v),
    };
}

fn read_opt_u64(r: &mut Reader<'_>) -> Result<Option<u64>, WireError> {
    Ok(match r.u8()? {
        0 => None,
        _ => Some(r.u64()?),
    })
}

fn read_opt_bytes(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, WireError> {
    Ok(match r.u8()? {
        0 => None,
        _ => Some(r.bytes()?.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_outcomes_and_entries_round_trip() {
        let updates = [
            Update::new("k", Change::Put(b"v".to_vec())).when(Condition::Absent),
            Update::new("k", Change::Delete).when(Condition::Revision(7)),
            Update::new("k", Change::Keep).expiring(Expiry::At(1_700_000_000_000)),
            Update::new("k", Change::Increment(-3)).when(Condition::Present),
            Update::new("k", Change::IncrementFloat(0.1)).expiring(Expiry::Clear),
            Update::new("k", Change::Append(b"x".to_vec()))
                .when(Condition::Value(b"old".to_vec()))
                .expiring(Expiry::After(5000))
                .returning_previous(),
        ];
        for u in updates {
            assert_eq!(Update::decode(&u.encode()).unwrap(), u);
        }
        let outcome = Outcome {
            applied: true,
            revision: 9,
            expires_at: Some(5),
            length: 2,
            previous: Some(b"a".to_vec()),
            value: None,
        };
        assert_eq!(Outcome::decode(&outcome.encode()).unwrap(), outcome);
        let entry = Entry {
            value: b"v".to_vec(),
            revision: 3,
            expires_at: None,
        };
        let mut later = entry.encode();
        later.extend_from_slice(b"a field of a later minor");
        assert_eq!(Entry::decode(&later).unwrap(), entry);
        assert!(Update::decode(&[0, 0, 0]).is_err());
    }
}
