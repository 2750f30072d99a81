//! Delivery's waits, grouping and read barriers, without a log behind them.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Many concurrent readers are served by far fewer barriers, and each gets one that
/// started after it asked.
#[test]
fn concurrent_reads_share_barriers_that_began_after_they_arrived() {
    // Barriers are numbered as they start; a read must be answered by one that
    // started after it arrived.
    let started = Arc::new(AtomicU64::new(0));
    let counter = started.clone();
    let barriers = Barriers::start(move || {
        let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
        std::thread::sleep(Duration::from_millis(2));
        Ok(number)
    })
    .unwrap();
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (barriers, started) = (barriers.clone(), started.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let before = started.load(Ordering::SeqCst);
                    let number = barriers.position(Duration::from_secs(10)).unwrap();
                    assert!(
                        number > before,
                        "barrier {number} began before the read ({before})"
                    );
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let calls = started.load(Ordering::SeqCst);
    assert!(calls < 16 * 20 / 2, "{calls} barriers for 320 reads");
}

/// Delivery applies the events of one log position (an append: a transaction, a
/// batch) together, so that no read sees part of them; a position of one event
/// costs nothing extra.
#[test]
fn the_events_of_one_position_are_applied_together() {
    use crate::ports::FollowSink;
    let map = Arc::new(Map::default());
    let delivered = Delivered::new(map.clone(), Metrics::new(false));
    let sink = Sink(delivered);
    sink.deliver(
        &[
            Event::put(5, b"a", b"1"),
            Event::put(5, b"b", b"1"),
            Event::put(6, b"c", b"1"),
            Event::put(7, b"a", b"2"),
            Event::delete(7, b"c"),
        ],
        7,
    );
    assert_eq!(map.applied_together(), 2, "positions 5 and 7");
    assert_eq!(map.get(b"a").as_deref(), Some(&b"2"[..]));
    assert_eq!(map.get(b"b").as_deref(), Some(&b"1"[..]));
    assert!(map.get(b"c").is_none());
}

/// Catching up at start waits as long as events keep coming, however long that
/// takes, and gives up once they stop for the stall time.
#[test]
fn catching_up_waits_while_delivery_progresses_and_not_once_it_stalls() {
    use crate::ports::FollowSink;
    let delivered = Delivered::new(Arc::new(Map::default()), Metrics::new(false));
    let sink = Sink(delivered.clone());
    // A snapshot taking 1 s in pages every 50 ms, against a stall time of 300 ms.
    let feeder = std::thread::spawn(move || {
        sink.begin_snapshot();
        for page in 0..20u64 {
            std::thread::sleep(Duration::from_millis(50));
            sink.deliver(&[Event::put(page + 1, b"k", b"v")], 0);
        }
        sink.end_snapshot(20);
    });
    let started = Instant::now();
    delivered
        .wait_through_progressing(20, Duration::from_millis(300))
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    feeder.join().unwrap();
    // Nothing more comes: it gives up after the stall time, saying where it is.
    let started = Instant::now();
    let e = delivered
        .wait_through_progressing(21, Duration::from_millis(300))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(e.message.contains("delivered nothing for 300 ms"), "{e}");
    assert!(e.message.contains("it is at 20"), "{e}");
}

/// A barrier the log never answers holds no reader past its own timeout.
#[test]
fn a_reader_stops_waiting_at_its_timeout_while_the_barrier_hangs() {
    let barriers = Barriers::start(|| {
        std::thread::sleep(Duration::from_secs(3));
        Ok(1)
    })
    .unwrap();
    let started = Instant::now();
    let e = barriers.position(Duration::from_millis(200)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(e.message.contains("no read barrier"), "{e}");
}
