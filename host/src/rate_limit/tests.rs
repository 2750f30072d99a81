use std::time::Duration;

use kvs_plugin_api::ErrorCode;

use super::*;

fn limiter(per_client: f64, burst: Option<u64>) -> RateLimiter {
    let limiter = RateLimiter::default();
    limiter.set(&RateLimitConfig { per_client, burst });
    limiter
}

fn from(peer: &str) -> Caller<'_> {
    Caller {
        peer: Some(peer),
        ..Caller::anonymous("test")
    }
}

#[test]
fn a_client_past_its_burst_is_refused_until_its_bucket_refills() {
    let limits = limiter(20.0, Some(2));
    let client = from("127.0.0.1:5000");
    limits.take(&client, b"k", || None).unwrap();
    limits.take(&client, b"k", || None).unwrap();
    let e = limits.take(&client, b"k", || None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RATE_LIMITED);
    assert!(
        e.message()
            .contains("client 127.0.0.1 is over its rate limit of 20 operations"),
        "{e:?}"
    );
    assert!(e.message().contains("retry in 0.0"), "{e:?}");
    std::thread::sleep(Duration::from_millis(60)); // 1.2 tokens
    limits.take(&client, b"k", || None).unwrap();
    assert!(limits.take(&client, b"k", || None).is_err());
}

#[test]
fn clients_are_told_apart_by_principal_else_by_address_without_port() {
    let limits = limiter(1.0, Some(1));
    limits.take(&from("10.0.0.1:1"), b"k", || None).unwrap();
    // Another port of the same address is the same client ...
    assert!(limits.take(&from("10.0.0.1:2"), b"k", || None).is_err());
    // ... another address is not; IPv6 too.
    limits.take(&from("10.0.0.2:1"), b"k", || None).unwrap();
    limits.take(&from("[::1]:1"), b"k", || None).unwrap();
    assert!(limits.take(&from("[::1]:9"), b"k", || None).is_err());
    // A verified principal keeps its own bucket from any address.
    limits
        .take(&from("10.0.0.1:3"), b"k", || Some("alice".into()))
        .unwrap();
    assert!(
        limits
            .take(&from("10.0.0.9:3"), b"k", || Some("alice".into()))
            .is_err()
    );
    // A frontend that carries no address counts as one client.
    let anonymous = Caller::anonymous("line");
    limits.take(&anonymous, b"k", || None).unwrap();
    let e = limits.take(&anonymous, b"k", || None).unwrap_err();
    assert!(e.message().contains("frontend line"), "{e:?}");
}

#[test]
fn a_multi_key_command_asked_about_first_is_served_whole_and_nothing_rides_along() {
    let limits = limiter(10.0, Some(1));
    let conn = from("127.0.0.1:1");
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    // Ten keys asked about with one token: each is granted ...
    for k in &keys {
        limits.precheck(&conn, k.as_bytes(), || None).unwrap();
    }
    // ... but only to its key on its connection: another key, or the same key from
    // another connection of the client, rides on nothing.
    assert!(
        limits.take(&conn, b"rider", || None).is_ok(),
        "the one token"
    );
    assert!(limits.take(&conn, b"rider", || None).is_err());
    assert!(limits.take(&from("127.0.0.1:2"), b"k0", || None).is_err());
    for k in &keys {
        limits.take(&conn, k.as_bytes(), || None).unwrap();
    }
    // Used up: the debt (-10) is repaid before anything else is admitted.
    assert!(limits.take(&conn, b"k0", || None).is_err());
    assert!(limits.precheck(&conn, b"k0", || None).is_err());
    // A grant unused within its window lapses.
    let fresh = from("127.0.0.3:1");
    limits.precheck(&fresh, b"k", || None).unwrap();
    std::thread::sleep(crate::overload::BURST + Duration::from_millis(10));
    limits.take(&fresh, b"k", || None).unwrap(); // its token, not the lapsed grant
    assert!(limits.take(&fresh, b"k", || None).is_err());
}

#[test]
fn no_limit_admits_everything_and_bad_settings_are_refused() {
    let limits = limiter(0.0, None);
    for _ in 0..10_000 {
        limits.take(&from("127.0.0.1:1"), b"k", || None).unwrap();
    }
    assert!(limits.buckets.is_empty());
    assert!(
        RateLimitConfig {
            per_client: -1.0,
            burst: None
        }
        .validate()
        .is_err()
    );
    assert!(
        RateLimitConfig {
            per_client: 5.0,
            burst: Some(0)
        }
        .validate()
        .is_err()
    );
    assert_eq!(
        RateLimitConfig {
            per_client: 2.5,
            burst: None
        }
        .burst_or_default(),
        3.0
    );
    for (per_client, burst) in [
        (1e-300, None),
        (f64::NAN, None),
        (f64::INFINITY, None),
        (2e9, None),
        (0.0, Some(5)),
        (5.0, Some(u64::MAX)),
    ] {
        let config = RateLimitConfig { per_client, burst };
        assert!(config.validate().is_err(), "{config:?}");
    }
}

#[test]
fn a_flood_of_addresses_neither_grows_the_table_nor_locks_out_newcomers() {
    let limits = limiter(0.01, Some(1));
    for i in 0..MAX_CLIENTS {
        let peer = format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255);
        limits.take(&from(&peer), b"k", || None).unwrap();
    }
    assert_eq!(limits.buckets.len(), MAX_CLIENTS);
    // Every tracked client has just spent its token, so none is forgotten: a newcomer
    // goes untracked, and is never refused for what others did.
    for _ in 0..3 {
        limits.take(&from("192.168.0.1:1"), b"k", || None).unwrap();
    }
    assert_eq!(limits.buckets.len(), MAX_CLIENTS);
    // A tracked client is still limited.
    assert!(limits.take(&from("10.0.0.5:1"), b"k", || None).is_err());
}
