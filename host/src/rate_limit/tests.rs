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
    limits.take(&client, || None).unwrap();
    limits.take(&client, || None).unwrap();
    let e = limits.take(&client, || None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RATE_LIMITED);
    assert!(
        e.message()
            .contains("client 127.0.0.1 is over its rate limit of 20 operations"),
        "{e:?}"
    );
    assert!(e.message().contains("retry in 0.0"), "{e:?}");
    std::thread::sleep(Duration::from_millis(60)); // 1.2 tokens
    limits.take(&client, || None).unwrap();
    assert!(limits.take(&client, || None).is_err());
}

#[test]
fn clients_are_told_apart_by_principal_else_by_address_without_port() {
    let limits = limiter(1.0, Some(1));
    limits.take(&from("10.0.0.1:1"), || None).unwrap();
    // Another port of the same address is the same client ...
    assert!(limits.take(&from("10.0.0.1:2"), || None).is_err());
    // ... another address is not; IPv6 too.
    limits.take(&from("10.0.0.2:1"), || None).unwrap();
    limits.take(&from("[::1]:1"), || None).unwrap();
    assert!(limits.take(&from("[::1]:9"), || None).is_err());
    // A verified principal keeps its own bucket from any address.
    limits
        .take(&from("10.0.0.1:3"), || Some("alice".into()))
        .unwrap();
    assert!(
        limits
            .take(&from("10.0.0.9:3"), || Some("alice".into()))
            .is_err()
    );
    // A frontend that carries no address counts as one client.
    let anonymous = Caller::anonymous("line");
    limits.take(&anonymous, || None).unwrap();
    let e = limits.take(&anonymous, || None).unwrap_err();
    assert!(e.message().contains("frontend line"), "{e:?}");
}

#[test]
fn a_multi_key_write_admitted_by_its_precheck_is_not_split() {
    let limits = limiter(10.0, Some(1));
    let client = from("127.0.0.1:1");
    // Ten keys asked about with one token: all ten are granted ...
    for _ in 0..10 {
        limits.precheck(&client, || None).unwrap();
    }
    for _ in 0..10 {
        limits.take(&client, || None).unwrap();
    }
    // ... and nothing more: the debt (-9) is repaid before anything else is admitted.
    assert!(limits.take(&client, || None).is_err());
    assert!(limits.precheck(&client, || None).is_err());
    std::thread::sleep(crate::overload::BURST + Duration::from_millis(10));
    assert!(limits.take(&client, || None).is_err());
    // A grant unused within the window lapses.
    let other = from("127.0.0.2:1");
    limits.take(&other, || None).unwrap();
    limits.precheck(&other, || None).unwrap_err();
    let fresh = from("127.0.0.3:1");
    limits.precheck(&fresh, || None).unwrap();
    std::thread::sleep(crate::overload::BURST + Duration::from_millis(10));
    limits.take(&fresh, || None).unwrap(); // its token, not the lapsed grant
    assert!(limits.take(&fresh, || None).is_err());
}

#[test]
fn no_limit_admits_everything_and_bad_settings_are_refused() {
    let limits = limiter(0.0, None);
    for _ in 0..10_000 {
        limits.take(&from("127.0.0.1:1"), || None).unwrap();
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
}

#[test]
fn a_flood_of_addresses_shares_one_bucket_past_the_cap() {
    let limits = limiter(1.0, Some(1));
    for i in 0..MAX_CLIENTS {
        let peer = format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255);
        limits.take(&from(&peer), || None).unwrap();
    }
    assert_eq!(limits.buckets.len(), MAX_CLIENTS);
    // Every tracked client is in debt, so nobody is forgotten: newcomers share a bucket.
    limits.take(&from("192.168.0.1:1"), || None).unwrap();
    assert!(limits.take(&from("192.168.0.2:1"), || None).is_err());
    assert_eq!(limits.buckets.len(), MAX_CLIENTS + 1);
}
