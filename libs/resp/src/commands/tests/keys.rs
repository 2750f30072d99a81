//! GET, plain SET, MGET, MSET, DEL, EXISTS, STRLEN and the size checks.

use super::*;

#[test]
fn get_and_set() {
    let mut c = Conn::new();
    assert_eq!(c.run("GET k"), "$-1\r\n");
    assert_eq!(c.run("SET k hello"), "+OK\r\n");
    assert_eq!(c.value("k"), Some(&b"hello"[..]));
    assert_eq!(c.run("get k"), "$5\r\nhello\r\n");
    // Binary-safe: a value with CR LF and a NUL comes back as sent.
    let (reply, _) = c.run_args(&[b"SET", b"bin", b"a\r\n\0b"]);
    assert_eq!(reply, "+OK\r\n");
    assert_eq!(c.run("GET bin"), "$5\r\na\r\n\0b\r\n");
    assert_eq!(c.session.commands, 5);
    // RESP3's null is its own type.
    assert_eq!(Conn::new().resp3().run("GET missing"), "_\r\n");
}

#[test]
fn a_store_error_is_the_reply() {
    let mut c = Conn::new();
    assert_eq!(c.run("GET broken"), "-ERR the store is unavailable\r\n");
    c.backend.refused = vec![b"ro"];
    assert_eq!(
        c.run("SET ro v"),
        "-NOPERM no role grants a write of ro\r\n"
    );
}

#[test]
fn mget_in_both_protocols() {
    let mut c = Conn::new();
    c.set("a", "1");
    c.set("c", "333");
    assert_eq!(c.run("MGET a b c"), "*3\r\n$1\r\n1\r\n$-1\r\n$3\r\n333\r\n");
    let mut c = Conn::with(std::mem::take(&mut c.backend)).resp3();
    assert_eq!(c.run("MGET a b c"), "*3\r\n$1\r\n1\r\n_\r\n$3\r\n333\r\n");
}

#[test]
fn mget_refuses_a_reply_over_the_limit() {
    let mut c = Conn::new();
    c.set("a", "0123456789");
    c.session.max_reply_bytes = Some(40);
    // Each value counts its length plus 16: 26, then 52 > 40.
    assert_eq!(c.run("MGET a"), "*1\r\n$10\r\n0123456789\r\n");
    assert_eq!(
        c.run("MGET a a"),
        "-ERR MGET's reply would be over 40 bytes (max_reply_bytes): ask for fewer keys at \
         a time\r\n"
    );
}

#[test]
fn mset_writes_every_pair_or_none() {
    let mut c = Conn::new();
    assert_eq!(c.run("MSET a 1 b 2"), "+OK\r\n");
    assert_eq!(
        (c.value("a"), c.value("b")),
        (Some(&b"1"[..]), Some(&b"2"[..]))
    );
    assert_eq!(
        c.run("MSET a 1 b"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(
        c.run("MSET a"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    // One refused key refuses the whole command: nothing is written, not even the pairs
    // before it.
    c.backend.refused = vec![b"locked"];
    c.backend.calls.clear();
    assert_eq!(
        c.run("MSET a 10 locked 20 z 30"),
        "-NOPERM no role grants a write of locked\r\n"
    );
    assert_eq!(c.value("a"), Some(&b"1"[..]));
    assert_eq!(c.value("z"), None);
    assert!(c.backend.calls.is_empty(), "{:?}", c.backend.calls);
}

#[test]
fn del_and_exists_count_keys() {
    let mut c = Conn::new();
    c.set("a", "1");
    c.set("b", "2");
    c.set("c", "3");
    // EXISTS counts a key each time it is named; DEL counts what it removed, once.
    assert_eq!(c.run("EXISTS a a missing b"), ":3\r\n");
    assert_eq!(c.run("DEL a a b missing"), ":2\r\n");
    assert_eq!(c.value("a"), None);
    assert_eq!(c.value("b"), None);
    assert_eq!(c.run("EXISTS a b c"), ":1\r\n");
    assert_eq!(c.run("DEL a"), ":0\r\n");
    // Every read of the command before any of its writes.
    c.backend.calls.clear();
    assert_eq!(c.run("DEL c x"), ":1\r\n");
    assert_eq!(c.backend.calls, ["get c", "get x", "delete c", "delete x"]);
    // A refused key: nothing deleted.
    c.set("c", "3");
    c.backend.refused = vec![b"locked"];
    assert_eq!(
        c.run("DEL c locked"),
        "-NOPERM no role grants a write of locked\r\n"
    );
    assert_eq!(c.value("c"), Some(&b"3"[..]));
    // Past eight keys the ones seen are a set: still each counted once.
    for i in 0..5 {
        c.set(&format!("k{i}"), "v");
    }
    assert_eq!(
        c.run("DEL k0 k1 k2 k3 k4 k5 k6 k7 k8 k0 k3 k9 k1"),
        ":5\r\n"
    );
    assert_eq!(c.run("EXISTS k0 k1 k2 k3 k4"), ":0\r\n");
}

#[test]
fn strlen() {
    let mut c = Conn::new();
    c.set("k", "hello");
    assert_eq!(c.run("STRLEN k"), ":5\r\n");
    assert_eq!(c.run("STRLEN missing"), ":0\r\n");
}

#[test]
fn size_checks_give_the_hosts_messages() {
    let err = |r: Result<(), StoreError>| r.unwrap_err().reply();
    assert_eq!(err(check_sizes(b"", None, 4, 4)), "ERR key is empty");
    assert_eq!(
        err(check_sizes(b"abcde", None, 4, 4)),
        "ERR key is 5 bytes; the limit is 4 (limits.max_key_bytes)"
    );
    assert_eq!(
        err(check_sizes(b"k", Some(b"vvvvv"), 4, 4)),
        "ERR value is 5 bytes; the limit is 4 (limits.max_value_bytes)"
    );
    assert!(check_sizes(b"abcd", Some(b"vvvv"), 4, 4).is_ok());
    assert!(check_sizes(b"abcd", None, 4, 0).is_ok());
}

/// Every command that takes keys refuses an empty one with the same error, before any
/// store call: a multi-key command with one applies nothing.
#[test]
fn an_empty_key_refuses_the_whole_command() {
    let refused = format!("-{EMPTY_KEY}\r\n");
    let cases: &[&[&[u8]]] = &[
        &[b"MSET", b"ma", b"1", b"", b"2", b"mb", b"3"],
        &[b"MSET", b"", b"1"],
        &[b"DEL", b"da", b""],
        &[b"DEL", b""],
        &[b"MGET", b"ga", b""],
        &[b"EXISTS", b"da", b"", b"da"],
        &[b"SET", b"", b"v"],
        &[b"GET", b""],
        &[b"STRLEN", b""],
    ];
    for args in cases {
        let mut c = Conn::new();
        c.set("da", "1");
        c.set("ga", "2");
        let (reply, _) = c.run_args(args);
        assert_eq!(reply, refused, "{args:?}");
        assert!(
            c.backend.calls.is_empty(),
            "{args:?}: {:?}",
            c.backend.calls
        );
        assert_eq!(c.value("ma"), None);
        assert_eq!(c.value("mb"), None);
        assert_eq!(c.value("da"), Some(&b"1"[..]), "{args:?}");
    }
    // A value may be empty; only keys may not.
    let mut c = Conn::new();
    let (reply, _) = c.run_args(&[b"MSET", b"k", b"", b"j", b"x"]);
    assert_eq!(reply, "+OK\r\n");
    assert_eq!(c.value("k"), Some(&b""[..]));
}
