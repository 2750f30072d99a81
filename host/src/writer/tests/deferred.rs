//! Deferred writes (`queue.rs`): committed on the thread that calls `commit_here`, by
//! the writer thread when nobody does, and in queue order whoever commits.

use std::time::Duration;

use super::*;

/// A recording log that also notes which thread made each append.
struct OnThread {
    log: Recording,
    threads: Arc<Mutex<Vec<String>>>,
}

impl Log for OnThread {
    fn append(&mut self, batch: &[kvs_plugin_api::Event<'_>]) -> Result<(), PluginError> {
        let thread = std::thread::current();
        self.threads
            .lock()
            .unwrap()
            .push(thread.name().unwrap_or("unnamed").to_string());
        self.log.append(batch)
    }
    fn replay(
        &mut self,
        sink: &mut dyn FnMut(&[kvs_plugin_api::Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        self.log.replay(sink)
    }
    fn close(&mut self) -> Result<(), PluginError> {
        self.log.close()
    }
    fn health(&self) -> Option<crate::ports::HealthCheck> {
        None
    }
}

/// A put of `key` = `value` whose outcome lands in `outcomes`, queued deferred or not.
fn put(queue: &WriteQueue, key: &str, value: &str, deferred: bool, outcomes: &Outcomes) {
    let outcomes = outcomes.clone();
    let name = key.as_bytes().to_vec();
    let request = WriteRequest {
        op: WriteOp::Put(key.as_bytes().into(), value.as_bytes().into()),
        done: Completion::new(move |r| outcomes.lock().unwrap().push((name, r))),
        trace: tracing::Span::none(),
        admitted: Default::default(),
    };
    assert!(queue.try_send(Msg::Write(request), deferred).is_ok());
}

fn start(queue: &Arc<WriteQueue>, log: impl Log + 'static, map: &Arc<Map>) -> Writer {
    Writer::spawn(
        Box::new(log),
        map.clone(),
        queue.clone(),
        settings(1, 64, true),
        Metrics::new(false),
    )
    .unwrap_or_else(|(e, _)| panic!("{e}"))
}

/// A writer on `queue` whose log records its batches and the thread of each append.
fn start_on_thread(
    queue: &Arc<WriteQueue>,
) -> (Recorded, Arc<Mutex<Vec<String>>>, Arc<Map>, Writer) {
    let (batches, threads) = (Recorded::default(), Arc::default());
    let log = OnThread {
        log: Recording::into(&batches),
        threads: Arc::clone(&threads),
    };
    let map = Arc::new(Map::default());
    let writer = start(queue, log, &map);
    (batches, threads, map, writer)
}

fn wait_for(outcomes: &Outcomes, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while outcomes.lock().unwrap().len() < n {
        assert!(Instant::now() < until, "writes never answered");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn deferred_writes_wait_for_commit_here_and_are_appended_on_the_calling_thread() {
    // A watchdog that never fires in this test: only `commit_here` commits.
    let queue = WriteQueue::with_watchdog(64, Duration::from_secs(600));
    let (batches, threads, map, writer) = start_on_thread(&queue);
    let outcomes = Outcomes::default();
    // The writer thread is not looking yet: the first deferred write wakes it.
    put(&queue, "first", "1", true, &outcomes);
    wait_for(&outcomes, 1);
    // Once it has taken that one, it looks (every 600 s) instead of being woken.
    std::thread::sleep(Duration::from_millis(50));
    for key in ["a", "b", "c"] {
        put(&queue, key, "v", true, &outcomes);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(outcomes.lock().unwrap().len(), 1, "deferred writes wait");
    assert_eq!(map.len(), 1);
    queue.commit_here();
    // Committed, applied and answered before `commit_here` returned, in one append
    // made on this thread.
    assert_eq!(outcomes.lock().unwrap().len(), 4);
    assert_eq!(map.len(), 4);
    let batches = batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 2);
    let keys: Vec<&[u8]> = batches[1].iter().map(|(_, _, k)| k.as_slice()).collect();
    assert_eq!(keys, [b"a", b"b", b"c"]);
    let me = std::thread::current().name().unwrap().to_string();
    assert_eq!(*threads.lock().unwrap(), ["kvs-writer".to_string(), me]);
    let (stats, closed) = writer.stop();
    closed.unwrap();
    assert_eq!((stats.batches, stats.writes), (2, 4));
}

#[test]
fn a_deferred_write_nobody_commits_is_committed_by_the_writer_thread() {
    let queue = WriteQueue::with_watchdog(64, Duration::from_millis(20));
    let (_, threads, map, writer) = start_on_thread(&queue);
    let outcomes = Outcomes::default();
    put(&queue, "first", "1", true, &outcomes);
    wait_for(&outcomes, 1);
    std::thread::sleep(Duration::from_millis(50));
    // The writer thread looks every 20 ms now: these do not wake it, and nobody
    // calls `commit_here`.
    put(&queue, "a", "v", true, &outcomes);
    put(&queue, "b", "v", true, &outcomes);
    wait_for(&outcomes, 3);
    assert!(outcomes.lock().unwrap().iter().all(|(_, r)| r.is_ok()));
    assert!(threads.lock().unwrap().iter().all(|t| t == "kvs-writer"));
    assert_eq!(map.len(), 3);
    writer.stop().1.unwrap();
}

#[test]
fn a_long_queue_is_left_to_the_writer_thread() {
    let queue = WriteQueue::with_watchdog(256, Duration::from_secs(600));
    let (_, threads, map, writer) = start_on_thread(&queue);
    let outcomes = Outcomes::default();
    put(&queue, "first", "1", true, &outcomes);
    wait_for(&outcomes, 1);
    std::thread::sleep(Duration::from_millis(50));
    // More deferred writes than a caller's thread commits itself (a pipeline's worth
    // from many clients): `commit_here` rings, and the writer thread commits them
    // while the caller's thread would go on parsing.
    for i in 0..100 {
        put(&queue, &format!("k{i}"), "v", true, &outcomes);
    }
    queue.commit_here();
    wait_for(&outcomes, 101);
    assert!(threads.lock().unwrap().iter().all(|t| t == "kvs-writer"));
    assert_eq!(map.len(), 101);
    writer.stop().1.unwrap();
}

#[test]
fn writes_committed_by_many_threads_and_the_writer_keep_each_callers_order() {
    // No watchdog within the test: every write must be committed by a caller's
    // `commit_here` or, when that meets another committer, by the writer thread it rang.
    let queue = WriteQueue::with_watchdog(256, Duration::from_secs(600));
    let batches = Recorded::default();
    let map = Arc::new(Map::default());
    let writer = start(&queue, Recording::into(&batches), &map);
    let outcomes = Outcomes::default();
    const THREADS: usize = 4;
    const WRITES: usize = 500;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (queue, outcomes) = (&queue, &outcomes);
            scope.spawn(move || {
                for i in 0..WRITES {
                    let key = format!("t{t}:{i:04}");
                    // Every third write rings the doorbell; the rest are deferred,
                    // committed here every few writes or by the writer thread.
                    let deferred = i % 3 != 0;
                    let outcome = outcomes.clone();
                    let name = key.clone().into_bytes();
                    let mut msg = Msg::Write(WriteRequest {
                        op: WriteOp::Put(key.as_bytes().into(), format!("{i}").as_bytes().into()),
                        done: Completion::new(move |r| outcome.lock().unwrap().push((name, r))),
                        trace: tracing::Span::none(),
                        admitted: Default::default(),
                    });
                    // Full: make room, as a frontend would by waiting, and queue the
                    // same write again.
                    while let Err(full) = queue.try_send(msg, deferred) {
                        msg = full.into_inner();
                        queue.commit_here();
                        std::thread::yield_now();
                    }
                    if i % 5 == 4 {
                        queue.commit_here();
                    }
                }
                queue.commit_here();
            });
        }
    });
    wait_for(&outcomes, THREADS * WRITES);
    assert!(outcomes.lock().unwrap().iter().all(|(_, r)| r.is_ok()));
    let logged: Vec<(u64, Vec<u8>)> = batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|(sequence, _, key)| (*sequence, key.clone()))
        .collect();
    assert_eq!(logged.len(), THREADS * WRITES);
    let sequences: Vec<u64> = logged.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (1..=(THREADS * WRITES) as u64).collect();
    assert_eq!(sequences, want, "consecutive numbers in append order");
    // Each caller's writes were logged in the order it queued them.
    for t in 0..THREADS {
        let prefix = format!("t{t}:");
        let order: Vec<&[u8]> = logged
            .iter()
            .map(|(_, key)| key.as_slice())
            .filter(|key| key.starts_with(prefix.as_bytes()))
            .collect();
        assert_eq!(order.len(), WRITES);
        assert!(order.is_sorted(), "thread {t}'s writes reordered");
    }
    assert_eq!(map.len(), THREADS * WRITES);
    writer.stop().1.unwrap();
}

#[test]
fn a_completion_that_commits_from_inside_a_commit_returns_at_once() {
    let queue = WriteQueue::with_watchdog(64, Duration::from_secs(600));
    let map = Arc::new(Map::default());
    let writer = start(&queue, Recording::into(&Recorded::default()), &map);
    let outcomes = Outcomes::default();
    // Committed by the writer thread (rung), then on this thread (deferred): each
    // completion calls `commit_here` while its thread holds the writer's state.
    for (key, deferred) in [("by-thread", false), ("by-caller", true)] {
        let (queue_in_callback, outcomes_in_callback) = (queue.clone(), outcomes.clone());
        let request = WriteRequest {
            op: WriteOp::Put(key.as_bytes().into(), b"v".to_vec().into()),
            done: Completion::new(move |r| {
                queue_in_callback.commit_here();
                outcomes_in_callback
                    .lock()
                    .unwrap()
                    .push((b"done".to_vec(), r))
            }),
            trace: tracing::Span::none(),
            admitted: Default::default(),
        };
        assert!(queue.try_send(Msg::Write(request), deferred).is_ok());
        queue.commit_here();
    }
    wait_for(&outcomes, 2);
    assert_eq!(map.len(), 2);
    writer.stop().1.unwrap();
}
