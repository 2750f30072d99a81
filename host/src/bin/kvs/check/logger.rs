//! The logger checks: replay of an empty log, odd and many events, every event back in
//! order after a close and reopen, `repair = true` accepted, and a torn tail (the last
//! bytes of its files cut off, as a crash during an append leaves them) replayed as a
//! prefix of what was appended, or refused — never as something else.

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

pub(super) fn check_logger(
    plugin: &Plugin,
    table: &str,
    tmp: &std::path::Path,
    out: &mut Vec<Outcome>,
) {
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
    match replay_after_reopen(logger.as_mut(), &open) {
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
            return;
        }
    }
    // `kvs --repair-log` adds `repair = true` to the logger's table.
    let mut repairing: toml::Table = toml::from_str(table).unwrap_or_default();
    repairing.insert("repair".into(), toml::Value::Boolean(true));
    let repairing = toml::to_string(&repairing).expect("a parsed table serializes");
    check(
        out,
        "opens with repair = true in its table (kvs --repair-log adds it)",
        kvs_host::lifecycle::open_logger(plugin, &repairing)
            .map_err(|e| format!("{e:#}"))
            .and_then(|mut l| l.close().map_err(|e| format!("close failed: {e}"))),
    );
    torn_tail(&all, tmp, &open, out);
}

/// Cuts the last 3 bytes off every file under `tmp` (a crash during the last append),
/// reopens and replays: the events must be a prefix of `all`, or the replay refused
/// with a reason. Skipped when the logger keeps nothing under `tmp`.
fn torn_tail(
    all: &[Owned],
    tmp: &std::path::Path,
    open: &impl Fn() -> Result<Box<dyn Log>, String>,
    out: &mut Vec<Outcome>,
) {
    const NAME: &str = "a torn tail (its files' last 3 bytes cut): replays a prefix of what \
                        was appended, or refuses";
    let mut cut = 0;
    let mut dirs = vec![tmp.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() && meta.len() > 3 {
                let shorter = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(meta.len() - 3));
                if shorter.is_ok() {
                    cut += 1;
                }
            }
        }
    }
    if cut == 0 {
        out.push(super::skip(format!(
            "{NAME}: it keeps no files under the temporary directory"
        )));
        return;
    }
    let replayed = open().and_then(|mut l| {
        let got = replay(l.as_mut());
        let _ = l.close();
        got
    });
    let verdict = match replayed {
        // Refusing to start on a damaged log is allowed: it says so, and loses nothing.
        Err(why) => Ok(format!("refused: {why}")),
        Ok(got) if got.len() <= all.len() && got[..] == all[..got.len()] => {
            Ok(format!("{} of {} events replayed", got.len(), all.len()))
        }
        Ok(got) => Err(match got.iter().zip(all).position(|(g, w)| g != w) {
            Some(i) => format!(
                "event {i} was replayed as sequence {} key {:?} with {} value bytes, but \
                 sequence {} key {:?} with {} value bytes was appended: a torn record must \
                 be cut off or refused, never read as a shorter one",
                got[i].0,
                String::from_utf8_lossy(&got[i].2),
                got[i].3.len(),
                all[i].0,
                String::from_utf8_lossy(&all[i].2),
                all[i].3.len()
            ),
            None => format!("{} events replayed, only {} appended", got.len(), all.len()),
        }),
    };
    match verdict {
        Ok(how) => out.push(pass(format!("{NAME} ({how})"))),
        Err(why) => out.push(fail(NAME, why)),
    }
}

fn replay_after_reopen(
    logger: &mut dyn Log,
    open: &impl Fn() -> Result<Box<dyn Log>, String>,
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
