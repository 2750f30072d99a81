//! The file logger's replay of a *valid* log — written by the logger itself from
//! fuzzer-chosen events, in fuzzer-chosen batches, closed or not, with zeros after it
//! (the space `sync = "always"` writes ahead) — after fuzzer-chosen damage: flipped bits
//! and/or a truncation.
//!
//! What the format promises (plugins/file/src/format.rs, scan.rs and their tests): a
//! torn tail (a cut, or only zeros after the last record) is dropped with a warning,
//! keeping every whole batch before it (format 2: a batch is replayed whole or not at
//! all); anything else that is not a valid record is corruption, refused (file
//! unchanged) unless `repair` is set. So the checks:
//! * no panic;
//! * no damage: exactly what was written replays;
//! * only a cut: exactly the whole batches before the cut replay (never an error);
//! * flips: either a refusal, or a replay that is a prefix of what was written ending
//!   where a batch ends — never an event that was not written, nor one out of place,
//!   nor part of a batch; with `repair` it is always such a prefix;
//! * whatever replays is exactly what the file then holds, replays the same again, and
//!   the log can be continued (append, close, replay).
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use kvs_fuzz::{Owned, check_continues, check_replay, encoded, log_path, open_and_replay};
use kvs_plugin_api::{Event, EventKind, TransactionLogger};
use kvs_plugin_file::format;
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Input {
    /// The batches, each a list of events (sequences increase, as the host numbers them).
    batches: Vec<Vec<Owned>>,
    close: bool,
    zero_tail: usize,
    /// (offset, bit) pairs; offsets are taken modulo the file's length.
    flips: Vec<(u32, u8)>,
    /// Cut the file to this length (modulo its length + 1).
    cut: Option<u32>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut sequence = 0u64;
        let mut batches = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let mut batch = Vec::new();
            for _ in 0..u.int_in_range(1..=4)? {
                // Mostly small steps; sometimes a big jump (sequences may be sparse).
                let step = match u.int_in_range(0..=7)? {
                    0 => u.arbitrary::<u64>()?.max(1),
                    s => s,
                };
                // The host never repeats a sequence; the logger relies on it.
                let Some(next) = sequence.checked_add(step) else {
                    break;
                };
                sequence = next;
                let kind = if u.arbitrary()? {
                    EventKind::PUT
                } else {
                    EventKind::DELETE
                };
                let key: Vec<u8> = u.arbitrary()?;
                let value: Vec<u8> = if kind == EventKind::PUT {
                    u.arbitrary()?
                } else {
                    Vec::new()
                };
                batch.push((sequence, kind, key, value));
            }
            if !batch.is_empty() {
                batches.push(batch);
            }
        }
        Ok(Input {
            batches,
            close: u.arbitrary()?,
            zero_tail: u.int_in_range(0..=64)?,
            flips: u.arbitrary_iter()?.take(8).collect::<Result<_>>()?,
            cut: u.arbitrary()?,
        })
    }
}

/// How many of the events written lie in whole batches within the first `len` bytes
/// of the file (a batch is replayed whole or not at all).
fn whole_before(batches: &[Vec<Owned>], len: usize) -> usize {
    let mut end = format::HEADER_LEN as usize;
    let mut events = 0;
    for batch in batches {
        end += encoded(batch).len();
        if end > len {
            break;
        }
        events += batch.len();
    }
    events
}

fuzz_target!(|input: Input| {
    let path = log_path();
    let _ = std::fs::remove_file(&path);

    // Write the log with the logger itself.
    let (mut logger, replayed) = open_and_replay(&path, false).expect("a new log");
    assert!(replayed.is_empty());
    let mut written: Vec<Owned> = Vec::new();
    for batch in &input.batches {
        let events: Vec<Event<'_>> = batch
            .iter()
            .map(|(sequence, kind, key, value)| Event {
                sequence: *sequence,
                kind: *kind,
                key: key.as_slice().into(),
                value: value.as_slice().into(),
            })
            .collect();
        logger.append(&events).expect("append");
        written.extend(batch.iter().cloned());
    }
    if input.close {
        logger.close().expect("close");
    }
    drop(logger);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(bytes.len() + input.zero_tail, 0);
    let undamaged = bytes.clone();

    // Damage it.
    let mut flipped = false;
    for &(at, bit) in &input.flips {
        let at = at as usize % bytes.len();
        bytes[at] ^= 1 << (bit % 8);
        flipped = true;
    }
    flipped &= bytes != undamaged;
    let cut = input.cut.map(|c| c as usize % (bytes.len() + 1));
    if let Some(cut) = cut {
        bytes.truncate(cut);
    }
    std::fs::write(&path, &bytes).unwrap();

    // A prefix of what was written, ending where a batch ends.
    let boundaries: Vec<usize> = input
        .batches
        .iter()
        .scan(0, |n, batch| {
            *n += batch.len();
            Some(*n)
        })
        .collect();
    let is_prefix = |events: &[Owned]| {
        written.starts_with(events) && (events.is_empty() || boundaries.contains(&events.len()))
    };
    match open_and_replay(&path, false) {
        Ok((logger, events)) => {
            let now = std::fs::read(&path).unwrap();
            if !flipped {
                let whole = whole_before(&input.batches, cut.unwrap_or(usize::MAX));
                assert_eq!(events, written[..whole], "a cut lost whole batches");
            }
            assert!(
                is_prefix(&events),
                "replayed what was not written: {events:?}"
            );
            check_replay(&events, &now);
            drop(logger);
            let (logger, again) = open_and_replay(&path, false).expect("replays again");
            assert_eq!(again, events);
            check_continues(&path, logger, again);
        }
        Err(e) => {
            assert!(flipped, "undamaged or only cut, yet refused: {e}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "a refusal changed the file"
            );
            let Ok((logger, events)) = open_and_replay(&path, true) else {
                // Only a damaged file header is beyond repair.
                assert!(format::check_header(&bytes).is_err(), "repair failed: {e}");
                return;
            };
            assert!(
                is_prefix(&events),
                "repair replayed what was not written: {events:?}"
            );
            let now = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(&now), "repair did more than truncate");
            check_replay(&events, &now);
            check_continues(&path, logger, events);
        }
    }
});
