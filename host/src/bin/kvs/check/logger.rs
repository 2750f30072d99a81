//! The logger checks: replay of an empty log, odd and many events, and every event
//! back in order after a close and reopen.

use kvs_host::plugins::{self, Plugin};
use kvs_host::ports::Log;
use kvs_plugin_api::{Event, EventKind};

use super::{Outcome, Owned, check, fail, pass};

fn replay(logger: &mut dyn Log) -> Result<Vec<Owned>, String> {
    let mut got = Vec::new();
    logger
        .replay(&mut |events| {
            got.extend(
                events
                    .iter()
                    .map(|e| (e.sequence, e.kind, e.key.to_vec(), e.value.to_vec())),
            );
            Ok(())
        })
        .map_err(|e| format!("replay failed: {e}"))?;
    Ok(got)
}

fn append(logger: &mut dyn Log, batch: &[Owned]) -> Result<(), String> {
    let events: Vec<Event<'_>> = batch
        .iter()
        .map(|(s, k, key, v)| Event {
            sequence: *s,
            kind: *k,
            key: key.as_slice().into(),
            value: v.as_slice().into(),
        })
        .collect();
    logger
        .append(&events)
        .map_err(|e| format!("append failed: {e}"))
}

pub(super) fn check_logger(plugin: &Plugin, table: &str, out: &mut Vec<Outcome>) {
    // The check writes test events: never let a default config aim them at real data.
    if plugin.format == plugins::Format::Native && table.trim().is_empty() {
        out.push(fail(
            "open",
            "no --config: point the logger at scratch storage, e.g. --config 'path = \"{tmp}/log\"' \
             ({tmp} is a fresh temporary directory); the check writes test events there",
        ));
        return;
    }
    let open = || kvs_host::lifecycle::open_logger(plugin, table).map_err(|e| format!("{e:#}"));
    let mut logger = match open() {
        Ok(l) => {
            out.push(pass("open"));
            l
        }
        Err(why) => {
            out.push(fail(
                "open",
                format!("{why} (pass its config with --config, e.g. 'path = \"{{tmp}}/log\"')"),
            ));
            return;
        }
    };
    let ok = check(
        out,
        "replay of an empty log returns nothing",
        match replay(logger.as_mut()) {
            Ok(events) if events.is_empty() => Ok(()),
            Ok(events) => Err(format!(
                "{} events in a new log: point --config at an empty location",
                events.len()
            )),
            Err(e) => Err(e),
        },
    );
    if !ok {
        return;
    }
    let odd: Vec<Owned> = vec![
        (
            1,
            EventKind::PUT,
            b"\0\xff binary\tkey\n".to_vec(),
            Vec::new(),
        ),
        (
            2,
            EventKind::PUT,
            "ключ/🔑".as_bytes().to_vec(),
            b"v".to_vec(),
        ),
        (
            3,
            EventKind::DELETE,
            b"\0\xff binary\tkey\n".to_vec(),
            Vec::new(),
        ),
        (4, EventKind::PUT, b"empty".to_vec(), Vec::new()),
    ];
    check(
        out,
        "append: binary keys and empty values",
        append(logger.as_mut(), &odd),
    );
    let many: Vec<Owned> = (5..10_005u64)
        .map(|s| {
            (
                s,
                EventKind::PUT,
                format!("k{}", s % 100).into_bytes(),
                s.to_le_bytes().to_vec(),
            )
        })
        .collect();
    check(
        out,
        "append: a batch of 10000 events in one call",
        append(logger.as_mut(), &many),
    );
    let mut all = odd;
    all.extend(many);
    if plugin
        .capabilities
        .iter()
        .any(|c| c == kvs_plugin_api::capability::LOG_EXPIRY)
    {
        // It promised to store deadlines: a put until a day from now, and one already
        // past (a logger may drop that one only when it compacts, not on replay).
        let day_ms = 86_400_000u64;
        let now = kvs_host::map::now_ms();
        let until = |deadline: u64, value: &[u8]| {
            let mut bytes = deadline.to_le_bytes().to_vec();
            bytes.extend_from_slice(value);
            bytes
        };
        let expiring: Vec<Owned> = vec![
            (
                10_005,
                EventKind::PUT_UNTIL,
                b"lease".to_vec(),
                until(now + day_ms, b"v"),
            ),
            (
                10_006,
                EventKind::PUT_UNTIL,
                b"gone".to_vec(),
                until(now - day_ms, b""),
            ),
        ];
        check(
            out,
            "append: PUT_UNTIL events (it declares log:expiry)",
            append(logger.as_mut(), &expiring),
        );
        all.extend(expiring);
    }
    match replay_after_reopen(logger.as_mut(), open) {
        Ok(got) => {
            check(
                out,
                "close, reopen: replay returns every event in order, unchanged",
                compare(&all, &got),
            );
        }
        Err(why) => {
            out.push(fail(
                "close, reopen: replay returns every event in order, unchanged",
                why,
            ));
        }
    }
}

fn replay_after_reopen(
    logger: &mut dyn Log,
    open: impl Fn() -> Result<Box<dyn Log>, String>,
) -> Result<Vec<Owned>, String> {
    logger.close().map_err(|e| format!("close failed: {e}"))?;
    let mut again = open()?;
    let got = replay(again.as_mut())?;
    let _ = again.close();
    Ok(got)
}

fn compare(want: &[Owned], got: &[Owned]) -> Result<(), String> {
    if let Some(i) = want.iter().zip(got).position(|(w, g)| w != g) {
        return Err(format!(
            "event {i} differs: wrote sequence {} {:?} key {:?} ({} value bytes), replayed sequence {} {:?} key {:?} ({} value bytes)",
            want[i].0,
            want[i].1,
            String::from_utf8_lossy(&want[i].2),
            want[i].3.len(),
            got[i].0,
            got[i].1,
            String::from_utf8_lossy(&got[i].2),
            got[i].3.len()
        ));
    }
    if want.len() != got.len() {
        return Err(format!(
            "wrote {} events, replayed {}",
            want.len(),
            got.len()
        ));
    }
    Ok(())
}
