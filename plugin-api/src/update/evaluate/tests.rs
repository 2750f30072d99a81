//! The update and transaction rules, case by case.

use super::*;

const NOW: u64 = 1_000_000;
const LIMIT: u64 = 1 << 20;

fn at(value: &str, revision: u64, deadline: Option<u64>) -> Current {
    Current {
        value: value.as_bytes().to_vec(),
        revision,
        deadline,
    }
}

fn run(update: Update, current: Option<Current>) -> (Effect, Outcome) {
    evaluate(&update, current.as_ref(), NOW, LIMIT).unwrap()
}

fn put(value: &str, deadline: Option<u64>) -> Effect {
    Effect::Put {
        value: value.as_bytes().to_vec(),
        deadline,
    }
}

#[test]
fn conditions() {
    let set = || Update::new("k", Change::Put(b"new".to_vec()));
    let held = |o: &Outcome| o.applied;
    let present = Some(at("old", 5, None));
    assert!(held(&run(set().when(Condition::Absent), None).1));
    assert!(!held(
        &run(set().when(Condition::Absent), present.clone()).1
    ));
    assert!(held(
        &run(set().when(Condition::Present), present.clone()).1
    ));
    assert!(!held(&run(set().when(Condition::Present), None).1));
    assert!(held(
        &run(set().when(Condition::Revision(5)), present.clone()).1
    ));
    assert!(!held(
        &run(set().when(Condition::Revision(4)), present.clone()).1
    ));
    assert!(held(&run(set().when(Condition::Revision(0)), None).1));
    let by_value = |v: &str| set().when(Condition::Value(v.as_bytes().to_vec()));
    assert!(held(&run(by_value("old"), present.clone()).1));
    assert!(!held(&run(by_value("other"), present.clone()).1));
    // A failed condition writes nothing and reports the key as it is.
    let (effect, outcome) = run(
        set().when(Condition::Absent).returning_previous(),
        present.clone(),
    );
    assert_eq!(effect, Effect::Nothing);
    assert_eq!(outcome.revision, 5);
    assert_eq!(outcome.previous.as_deref(), Some(&b"old"[..]));
}

#[test]
fn counters() {
    let incr = |by| Update::new("k", Change::Increment(by));
    assert_eq!(run(incr(1), None).0, put("1", None));
    assert_eq!(
        run(incr(-5), Some(at("3", 1, Some(NOW + 10)))).0,
        put("-2", Some(NOW + 10)),
        "INCR keeps the deadline"
    );
    let (_, outcome) = run(incr(2), Some(at("40", 1, None)));
    assert_eq!(outcome.value.as_deref(), Some(&b"42"[..]));
    for bad in [
        "",
        "x",
        "1.5",
        " 1",
        "01",
        "+1",
        "-0",
        "99999999999999999999",
    ] {
        let err = evaluate(&incr(1), Some(&at(bad, 1, None)), NOW, LIMIT).unwrap_err();
        assert!(err.message.contains("not an integer"), "{bad}: {err}");
    }
    let err = evaluate(
        &incr(1),
        Some(&at(&i64::MAX.to_string(), 1, None)),
        NOW,
        LIMIT,
    )
    .unwrap_err();
    assert!(err.message.contains("overflow"), "{err}");
    let float = |by| Update::new("k", Change::IncrementFloat(by));
    assert_eq!(
        run(float(0.2), Some(at("0.1", 1, None))).0,
        put("0.30000000000000004", None),
        "the f64 sum, exactly"
    );
    // Adding 0 never changes a value, and the largest f64 reads back.
    for value in [
        "123456789012345680",
        "9007199254740992",
        "0.12345678901234568",
    ] {
        assert_eq!(
            run(float(0.0), Some(at(value, 1, None))).0,
            put(value, None)
        );
    }
    let (max, _) = run(float(f64::MAX), None);
    let Effect::Put { value, .. } = max else {
        panic!("{max:?}")
    };
    assert_eq!(parse_float(&value), Some(f64::MAX));
    assert_eq!(
        run(float(0.1), Some(at("10.5", 1, None))).0,
        put("10.6", None)
    );
    assert_eq!(run(float(1.0), Some(at("2", 1, None))).0, put("3", None));
    assert_eq!(run(float(5.0e3), None).0, put("5000", None));
    assert_eq!(run(float(-1.5e-7), None).0, put("-0.00000015", None));
    assert!(evaluate(&float(1.0), Some(&at("abc", 1, None)), NOW, LIMIT).is_err());
    assert!(
        evaluate(
            &float(f64::MAX),
            Some(&at(&format!("{}", f64::MAX), 1, None)),
            NOW,
            LIMIT
        )
        .is_err()
    );
}

#[test]
fn appends_and_their_limit() {
    let append = |v: &str| Update::new("k", Change::Append(v.as_bytes().to_vec()));
    let (effect, outcome) = run(append("def"), Some(at("abc", 1, None)));
    assert_eq!((effect, outcome.length), (put("abcdef", None), 6));
    assert_eq!(run(append("x"), None).0, put("x", None));
    let err = evaluate(&append("xy"), Some(&at("abc", 1, None)), NOW, 4).unwrap_err();
    assert_eq!(err.code, ErrorCode::TOO_LARGE);
}

#[test]
fn deadlines() {
    let set = |expiry| Update::new("k", Change::Put(b"v".to_vec())).expiring(expiry);
    assert_eq!(
        run(set(Expiry::After(300)), None).0,
        put("v", Some(NOW + 300))
    );
    assert_eq!(
        run(set(Expiry::At(NOW + 1)), None).1.expires_at,
        Some(NOW + 1)
    );
    let with_deadline = Some(at("v", 1, Some(NOW + 50)));
    assert_eq!(
        run(set(Expiry::Clear), with_deadline.clone()).0,
        put("v", None)
    );
    assert_eq!(
        run(set(Expiry::Keep), with_deadline.clone()).0,
        put("v", Some(NOW + 50)),
        "KEEPTTL"
    );
    // A deadline already past removes the key; on an absent key it writes nothing.
    let (effect, outcome) = run(set(Expiry::At(NOW)), with_deadline.clone());
    assert_eq!((effect, outcome.applied), (Effect::Delete, true));
    assert_eq!(run(set(Expiry::At(NOW - 1)), None).0, Effect::Nothing);
    // EXPIRE / PERSIST: only the deadline changes; not applied to an absent key.
    let touch = |expiry| Update::new("k", Change::Keep).expiring(expiry);
    assert_eq!(
        run(touch(Expiry::After(10)), with_deadline.clone()).0,
        put("v", Some(NOW + 10))
    );
    assert_eq!(run(touch(Expiry::Clear), with_deadline).0, put("v", None));
    let (effect, outcome) = run(touch(Expiry::Clear), Some(at("v", 1, None)));
    assert_eq!(
        (effect, outcome.applied),
        (Effect::Nothing, false),
        "PERSIST: nothing to remove"
    );
    let (effect, outcome) = run(touch(Expiry::Keep), Some(at("v", 1, None)));
    assert_eq!(
        (effect, outcome.applied),
        (Effect::Nothing, true),
        "GETEX without options"
    );
    assert!(!run(touch(Expiry::After(10)), None).1.applied);
    // Deleting: applied only if the key was there.
    let del = Update::new("k", Change::Delete).returning_previous();
    let (effect, outcome) = run(del.clone(), Some(at("v", 1, None)));
    assert_eq!(
        (effect, outcome.previous),
        (Effect::Delete, Some(b"v".to_vec()))
    );
    assert_eq!(run(del, None).0, Effect::Nothing);
}
