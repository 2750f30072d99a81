//! The etcd logger's appends against a real etcd member (Debian's etcd-server, started
//! by `kvs_testkit::etcd`): every condition of a batch compared, and a batch over one
//! etcd transaction refused whole, never split.

use kvs_plugin_api::{ErrorCode, Event, EventKind, SharedLog};
use kvs_testkit::etcd::EtcdCluster;

use super::open;

/// An `EXPECT` that `key` is at `revision` (0: absent).
fn expect(key: &[u8], revision: u64) -> Event<'_> {
    Event {
        sequence: revision,
        kind: EventKind::EXPECT,
        key: key.into(),
        value: (&[][..]).into(),
    }
}

/// The value of kvs key `key` under `prefix` in etcd, read directly.
fn in_etcd(log: &super::EtcdLog, key: &str) -> Option<Vec<u8>> {
    let mut kv = log.client.kv_client();
    let full = log.key(key.as_bytes());
    let got = log.runtime.block_on(kv.get(full, None)).unwrap();
    got.kvs().first().map(|kv| kv.value().to_vec())
}

#[test]
fn every_expect_is_compared_and_a_batch_over_one_transaction_is_refused_whole() {
    let etcd = EtcdCluster::start(1);
    let log = open(&format!(
        "endpoints = {:?}\nprefix = \"t/\"\nmax_txn_ops = 6\n",
        etcd.endpoints()
    ))
    .unwrap();
    let first = log
        .append(&[
            expect(b"a", 0),
            expect(b"b", 0),
            Event::put(1, b"a", b"1"),
            Event::put(2, b"b", b"1"),
        ])
        .expect("both keys absent");
    // The second key's condition fails: nothing of the batch is applied.
    let conflict = log
        .append(&[
            expect(b"a", first),
            expect(b"b", first + 1000),
            Event::put(3, b"a", b"2"),
        ])
        .unwrap_err();
    assert_eq!(conflict.code(), ErrorCode::CONFLICT, "{conflict}");
    assert_eq!(in_etcd(&log, "a").as_deref(), Some(&b"1"[..]));
    // Both hold: applied whole, at one revision.
    let second = log
        .append(&[
            expect(b"a", first),
            expect(b"b", first),
            Event::put(4, b"a", b"3"),
            Event::delete(5, b"b"),
        ])
        .unwrap();
    assert!(second > first);
    assert_eq!(in_etcd(&log, "a").as_deref(), Some(&b"3"[..]));
    assert_eq!(in_etcd(&log, "b"), None);
    // Five keys and kvs's two operations are over 6: refused whole, none written.
    let puts: Vec<Event<'_>> = [b"v", b"w", b"x", b"y", b"z"]
        .iter()
        .zip(10..)
        .map(|(key, n)| Event::put(n, &key[..], b"v"))
        .collect();
    let refused = log.append(&puts).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::TOO_LARGE, "{refused}");
    assert!(
        refused
            .message()
            .contains("does not fit one etcd transaction"),
        "{refused}"
    );
    assert_eq!(in_etcd(&log, "v"), None);
    assert_eq!(in_etcd(&log, "z"), None);
    // A key written twice counts once: five writes to four keys fit.
    let mut fits = puts[1..].to_vec();
    fits.push(Event::put(15, b"w", b"again"));
    log.append(&fits).expect("four keys fit");
    assert_eq!(in_etcd(&log, "w").as_deref(), Some(&b"again"[..]));
    // Six conditions and the writer key's compare are over 6 too.
    let keys: Vec<Vec<u8>> = (0..6).map(|i| format!("c{i}").into_bytes()).collect();
    let many: Vec<Event<'_>> = keys.iter().map(|k| expect(k, 0)).collect();
    let refused = log.append(&many).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::TOO_LARGE, "{refused}");
    log.close().unwrap();
}
