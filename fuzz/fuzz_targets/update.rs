//! Atomic updates (plugin-api 1.4): what a guest hands `kvs_update` and a native
//! frontend `StoreApi::update` — arbitrary bytes — decoded, and whatever decodes
//! evaluated against fuzzer-chosen key states by the rule the host's writer runs.
//!
//! Checks: no panic or over-allocation in `Update`, `Outcome` and `Entry` decoding; what
//! decodes re-encodes to bytes that decode to the same encoding (compared as bytes: an
//! increment by NaN is not equal to itself); `evaluate` never panics, whatever the
//! update, value, revision, deadline or clock; a put writes its value, an increment a
//! number it can read back, an append stays within the value limit; an outcome's length
//! is the value's; an update that did not apply changes nothing.
#![no_main]

use kvs_plugin_api::Change;
use kvs_plugin_api::update::{
    Current, Effect, Entry, Outcome, Update, evaluate, parse_float, parse_integer,
};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 12;

fuzz_target!(|data: &[u8]| {
    let _ = Outcome::decode(data);
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
    }
    // The first 17 bytes choose the key's state and the clock; the rest is the update.
    let (state, update) = data.split_at(data.len().min(17));
    let Ok(update) = Update::decode(update) else {
        return;
    };
    let encoded = update.encode();
    assert_eq!(Update::decode(&encoded).unwrap().encode(), encoded);
    let byte = |i: usize| state.get(i).copied().unwrap_or(0) as u64;
    let now = (0..8).fold(0u64, |n, i| n << 8 | byte(i));
    let deadline = (byte(8) & 1 == 1).then(|| now.wrapping_add(byte(9) << 8 | byte(10)));
    let revision = byte(11) << 8 | byte(12);
    let value_len = (byte(13) as usize).min(state.len());
    let current = Current {
        value: state[..value_len].to_vec(),
        revision,
        deadline,
    };
    for current in [None, Some(&current)] {
        let Ok((effect, outcome)) = evaluate(&update, current, now, LIMIT) else {
            continue;
        };
        if let Effect::Put { value, .. } = &effect {
            if let Change::Put(put) = &update.change {
                assert_eq!(value, put, "a put writes its value");
            }
            match update.change {
                Change::Increment(_) => assert!(parse_integer(value).is_some(), "{value:?}"),
                Change::IncrementFloat(_) => assert!(parse_float(value).is_some(), "{value:?}"),
                Change::Append(_) => assert!(value.len() as u64 <= LIMIT),
                _ => {}
            }
            assert_eq!(outcome.length, value.len() as u64);
        }
        if !outcome.applied {
            assert!(
                effect == Effect::Nothing,
                "an update that did not apply changes nothing"
            );
        }
    }
});
