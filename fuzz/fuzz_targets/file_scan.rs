//! The file logger's open + replay (`kvs_plugin_file`: header check, `scan`, torn-tail
//! truncation, corruption refusal and repair) on an arbitrary file, with or without a
//! valid file header in front (so the fuzzer spends its time on records).
//!
//! Checks: no panic; a refusal (bad header, corrupt record) leaves the file unchanged;
//! whatever replays is exactly what the file then holds (see `check_replay`); a log
//! refused as corrupt opens with `repair`, and a repaired or recovered log replays the
//! same again without `repair` and can be continued (append, close, replay).
#![no_main]

use kvs_fuzz::{check_continues, check_replay, log_path, open_and_replay};
use kvs_plugin_file::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let mut original = Vec::new();
    if flags & 1 == 0 {
        original.extend_from_slice(&format::header());
    }
    original.extend_from_slice(bytes);
    let path = log_path();
    std::fs::write(&path, &original).unwrap();
    let fresh = format::header().starts_with(&original)
        || (original.len() >= format::HEADER_LEN as usize && original.iter().all(|&b| b == 0));

    let (logger, events) = match open_and_replay(&path, false) {
        Ok(x) => x,
        Err(_) => {
            let now = std::fs::read(&path).unwrap();
            assert!(now == original, "a refused log was changed");
            // Corrupt records (not a bad file header) are what `repair` is for.
            if format::check_header(&original).is_err() {
                return;
            }
            let (_, repaired) = open_and_replay(&path, true).expect("replay with repair");
            let now = std::fs::read(&path).unwrap();
            assert!(original.starts_with(&now), "repair did more than truncate");
            check_replay(&repaired, &now);
            let (logger, again) = open_and_replay(&path, false).expect("replay after repair");
            assert_eq!(again, repaired);
            check_continues(&path, logger, again);
            return;
        }
    };
    let now = std::fs::read(&path).unwrap();
    if fresh {
        assert!(events.is_empty());
        assert_eq!(now, format::header(), "a fresh log is its header");
    } else {
        assert!(
            original.starts_with(&now),
            "recovery did more than truncate"
        );
    }
    check_replay(&events, &now);
    drop(logger);
    let (logger, again) = open_and_replay(&path, false).expect("a recovered log replays");
    assert_eq!(again, events, "replaying twice differs");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        now,
        "a clean log was changed"
    );
    check_continues(&path, logger, again);
});
