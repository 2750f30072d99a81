//! Transaction-log events, as a WASM logger appends and replays them.

use super::{Reader, WireError, Writer};
use crate::event::EventKind;

/// A log event borrowing its key and value from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log.
    pub sequence: u64,
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for DELETE).
    pub value: &'a [u8],
}

/// Appends `events` to `w`.
pub fn encode_events<'a>(w: &mut Writer, events: impl ExactSizeIterator<Item = Event<'a>>) {
    w.u32(events.len() as u32);
    for e in events {
        w.u64(e.sequence).u8(e.kind.0).bytes(e.key).bytes(e.value);
    }
}

/// Reads a list of events.
pub fn decode_events<'a>(r: &mut Reader<'a>) -> Result<Vec<Event<'a>>, WireError> {
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        out.push(Event {
            sequence: r.u64()?,
            kind: EventKind(r.u8()?),
            key: r.bytes()?,
            value: r.bytes()?,
        });
    }
    Ok(out)
}
