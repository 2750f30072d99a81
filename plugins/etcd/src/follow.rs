//! Delivery: the snapshot, then the watch, into the host's follower — moving only with
//! events actually delivered — and whether the node may say it is current
//! ([`Readiness`]). Also the marker write that barriers and catch-up use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, WatchOptions, WatchResponse, WatchResponseStream,
};
use kvs_plugin_api::{Event, Follower, Health, PluginError, log};

use crate::{MAX_RESPONSE_BYTES, prefix_end, retry, unavailable};

/// Writes the marker (the etcd key `prefix`: the empty kvs key, never a kvs key) and
/// returns the revision of that write.
pub(crate) async fn put_marker(
    kv: etcd_client::KvClient,
    marker: Vec<u8>,
    timeout: Duration,
    attempt: Duration,
) -> Result<u64, PluginError> {
    // Retried on any failure: a marker written twice costs a raft round, nothing more.
    let response = retry(timeout, attempt, false, || {
        let (mut kv, marker) = (kv.clone(), marker.clone());
        async move { kv.put(marker, Vec::new(), None).await }
    })
    .await
    .map_err(|e| unavailable("barrier (marker write)", e))?;
    Ok(response.header().map_or(0, |h| h.revision()) as u64)
}

/// Whether this node may say it is current: the watch has caught up (a marker written
/// after it started has come back) and appends succeed. Both feed the one `Health`.
#[derive(Clone)]
pub(crate) struct Readiness {
    health: Health,
    /// (caught up, appends succeed), changed and published together.
    state: Arc<Mutex<(bool, bool)>>,
}

impl Readiness {
    pub(crate) fn new(health: Health) -> Readiness {
        health.set(false);
        Readiness {
            health,
            state: Arc::new(Mutex::new((false, true))),
        }
    }

    pub(crate) fn set_caught_up(&self, yes: bool) {
        let mut state = self.state.lock().unwrap();
        state.0 = yes;
        self.health.set(state.0 && state.1);
    }

    /// Whether writes to etcd succeed: set by appends, and by any other write (markers),
    /// so a node that failed an append is ready again once etcd takes writes, without
    /// waiting for a client's write to prove it.
    pub(crate) fn set_appending(&self, yes: bool) {
        let mut state = self.state.lock().unwrap();
        state.1 = yes;
        self.health.set(state.0 && state.1);
    }

    pub(crate) fn appending(&self) -> bool {
        self.state.lock().unwrap().1
    }
}

/// What the follow task needs besides the follower.
pub(crate) struct FollowParts {
    pub(crate) client: Client,
    pub(crate) prefix: Vec<u8>,
    pub(crate) page_size: i64,
    pub(crate) timeout: Duration,
    pub(crate) attempt: Duration,
    pub(crate) readiness: Readiness,
    pub(crate) awaited: Arc<AtomicU64>,
}

/// Delivers the log under `prefix` to `follower` for as long as the task runs.
pub(crate) async fn follow(parts: FollowParts, follower: Follower) {
    // The revision to watch from: one past the last event (or snapshot) delivered;
    // `None` until a snapshot has been read. It moves only with what was delivered.
    let mut from: Option<i64> = None;
    let mut retry = Duration::from_millis(100);
    loop {
        parts.readiness.set_caught_up(false);
        let start = match from {
            Some(start) => start,
            None => {
                match snapshot(&parts.client, &parts.prefix, parts.page_size, &follower).await {
                    Ok(revision) => revision + 1,
                    Err(e) => {
                        log::warn(&format!("etcd snapshot failed, retrying: {e}"));
                        back_off(&mut retry).await;
                        continue;
                    }
                }
            }
        };
        from = Some(start);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        // The request half is kept alive for as long as this watch is read.
        let (_watcher, responses) = match parts
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(parts.prefix.clone(), Some(options))
            .await
        {
            Ok(stream) => stream.split(),
            Err(e) => {
                log::debug(&format!("etcd watch from {start} failed, retrying: {e}"));
                back_off(&mut retry).await;
                continue;
            }
        };
        retry = Duration::from_millis(100);
        from = parts.watch(start, responses, &follower).await;
        parts.readiness.set_caught_up(false);
        tokio::time::sleep(retry).await;
    }
}

/// Waits `retry`, then doubles it up to 2 s.
async fn back_off(retry: &mut Duration) {
    tokio::time::sleep(*retry).await;
    *retry = (*retry * 2).min(Duration::from_secs(2));
}

impl FollowParts {
    /// Delivers what one watch, from revision `start`, sends until it breaks, stalls or
    /// says this node fell behind a compaction. Returns the revision to resume from, or
    /// `None` to reload the snapshot.
    async fn watch(
        &self,
        start: i64,
        mut responses: WatchResponseStream,
        follower: &Follower,
    ) -> Option<i64> {
        let mut from = Some(start);
        // Caught up once a marker written after the watch began has come back through
        // it: everything a quorum had before then has been delivered.
        let mut marker = tokio::spawn(marker_until_written(
            self.client.kv_client(),
            self.prefix.clone(),
            self.timeout,
            self.attempt,
            self.awaited.clone(),
            self.readiness.clone(),
        ));
        // A watch that delivers nothing while a revision this node wrote is awaited is
        // stuck (its member hangs): restart it, on a member that answers.
        let mut check = tokio::time::interval(self.attempt / 4);
        let mut probe: Option<tokio::task::JoinHandle<()>> = None;
        let mut heard = tokio::time::Instant::now();
        let mut caught_up_at: Option<u64> = None;
        // The last revision delivered: events must not go back before it.
        let mut last = start as u64 - 1;
        loop {
            let message = tokio::select! {
                written = &mut marker, if caught_up_at.is_none() => {
                    let revision = written.unwrap_or(u64::MAX);
                    caught_up_at = Some(revision);
                    if last >= revision {
                        self.readiness.set_caught_up(true);
                    }
                    continue;
                }
                _ = check.tick() => {
                    self.probe_appends(&mut probe);
                    if self.stalled(last, heard) {
                        break;
                    }
                    continue;
                }
                message = responses.message() => message,
            };
            heard = tokio::time::Instant::now();
            let message = match message {
                Ok(Some(m)) => m,
                Err(e) => {
                    log::debug(&format!(
                        "etcd watch broke, resuming from revision {start}: {e}",
                        start = last + 1
                    ));
                    break;
                }
                Ok(None) => break,
            };
            if message.canceled() {
                if message.compact_revision() > 0 {
                    log::warn(&format!(
                        "this node fell behind etcd's compaction (revision {}): reloading the snapshot",
                        message.compact_revision()
                    ));
                    from = None;
                }
                break;
            }
            match deliver(&message, &self.prefix, last, start as u64, follower) {
                Delivery::Nothing => continue,
                Delivery::OutOfOrder => {
                    log::error(&format!(
                        "the etcd watch delivered revisions out of order (after {last}, from \
                         {start}): this node cannot tell what it missed, so it stops answering \
                         as current and reloads the snapshot"
                    ));
                    from = None;
                    break;
                }
                Delivery::Delivered(newest) => {
                    last = newest;
                    from = Some(newest as i64 + 1);
                    if caught_up_at.is_some_and(|m| last >= m) {
                        self.readiness.set_caught_up(true);
                    }
                }
            }
        }
        marker.abort();
        if let Some(probe) = probe {
            probe.abort();
        }
        from
    }

    /// After a failed append, probes with a marker (one at a time) until etcd takes
    /// writes again: a node nobody writes through would otherwise stay unready.
    fn probe_appends(&self, probe: &mut Option<tokio::task::JoinHandle<()>>) {
        if self.readiness.appending() || probe.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        let (kv, marker, readiness) = (
            self.client.kv_client(),
            self.prefix.clone(),
            self.readiness.clone(),
        );
        let (timeout, attempt) = (self.timeout, self.attempt);
        *probe = Some(tokio::spawn(async move {
            if put_marker(kv, marker, timeout, attempt).await.is_ok() {
                readiness.set_appending(true);
            }
        }));
    }

    /// Whether the watch is stuck: a revision this node wrote is awaited past `last`, and
    /// nothing has been heard for an attempt's time (logged when so).
    fn stalled(&self, last: u64, heard: tokio::time::Instant) -> bool {
        let waiting_for = self.awaited.load(Ordering::Acquire);
        if waiting_for <= last || heard.elapsed() < self.attempt {
            return false;
        }
        log::warn(&format!(
            "the etcd watch delivered nothing for {} ms while revision \
             {waiting_for} is awaited: restarting it from {}",
            heard.elapsed().as_millis(),
            last + 1
        ));
        true
    }
}

/// What a watch message delivered.
enum Delivery {
    /// No events (a creation or a progress notification): nothing this node can trust
    /// about delivery (see the module docs), so it does not move.
    Nothing,
    /// Events up to this revision, handed to the follower.
    Delivered(u64),
    /// Events before `last` or before the watch's start: nothing delivered.
    OutOfOrder,
}

/// Hands `message`'s events under `prefix` to `follower` (the marker only moves the
/// position), if they follow `last` and the watch's `start` in order.
fn deliver(
    message: &WatchResponse,
    prefix: &[u8],
    last: u64,
    start: u64,
    follower: &Follower,
) -> Delivery {
    let Some(newest) = message.events().iter().filter_map(|e| e.kv()).next_back() else {
        return Delivery::Nothing;
    };
    let newest = newest.mod_revision() as u64;
    let in_order = message
        .events()
        .iter()
        .filter_map(|e| e.kv())
        .try_fold(last, |before, kv| {
            let revision = kv.mod_revision() as u64;
            // A transaction's events share a revision.
            (revision >= before && revision >= start).then_some(revision)
        });
    if in_order.is_none() {
        return Delivery::OutOfOrder;
    }
    // Puts under kvs's leases carry deadlines: their values, led by them, live here.
    let until: Vec<Option<Vec<u8>>> = message
        .events()
        .iter()
        .map(|e| match (e.event_type(), e.kv()) {
            (EventType::Put, Some(kv)) => crate::lease::with_deadline(kv),
            _ => None,
        })
        .collect();
    let kvs_events: Vec<Event<'_>> = message
        .events()
        .iter()
        .zip(&until)
        .filter_map(|(e, until)| {
            let kv = e.kv()?;
            let key = kv.key().strip_prefix(prefix)?;
            if key.is_empty() {
                return None; // the marker: a position, not a kvs key
            }
            let position = kv.mod_revision() as u64;
            Some(match (e.event_type(), until) {
                (EventType::Put, Some(until)) => put_until(position, key, until),
                (EventType::Put, None) => Event::put(position, key, kv.value()),
                (EventType::Delete, _) => Event::delete(position, key),
            })
        })
        .collect();
    follower.deliver(&kvs_events, newest);
    Delivery::Delivered(newest)
}

/// A `PUT_UNTIL` event; `value` is led by the deadline.
fn put_until<'a>(position: u64, key: &'a [u8], value: &'a [u8]) -> Event<'a> {
    Event {
        kind: kvs_plugin_api::EventKind::PUT_UNTIL,
        ..Event::put(position, key, value)
    }
}

/// Writes a marker, retrying every half second while etcd has no quorum; its revision.
async fn marker_until_written(
    kv: etcd_client::KvClient,
    marker: Vec<u8>,
    timeout: Duration,
    attempt: Duration,
    awaited: Arc<AtomicU64>,
    readiness: Readiness,
) -> u64 {
    loop {
        match put_marker(kv.clone(), marker.clone(), timeout, attempt).await {
            Ok(revision) => {
                awaited.fetch_max(revision, Ordering::AcqRel);
                readiness.set_appending(true);
                return revision;
            }
            Err(e) => {
                log::debug(&format!("catch-up marker not written yet: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Reads every key under `prefix` at one revision, page by page, into `follower`;
/// returns that revision.
async fn snapshot(
    client: &Client,
    prefix: &[u8],
    page_size: i64,
    follower: &Follower,
) -> Result<i64, etcd_client::Error> {
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let end = prefix_end(prefix);
    follower.begin_snapshot();
    let mut key = prefix.to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(page_size);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = kv.get(key.clone(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let until: Vec<Option<Vec<u8>>> =
            page.kvs().iter().map(crate::lease::with_deadline).collect();
        let events: Vec<Event<'_>> = page
            .kvs()
            .iter()
            .zip(&until)
            .filter_map(|(kv, until)| {
                let k = kv.key().strip_prefix(prefix)?;
                if k.is_empty() {
                    return None; // the barrier marker, not a kvs key
                }
                let position = kv.mod_revision() as u64;
                Some(match until {
                    Some(until) => put_until(position, k, until),
                    None => Event::put(position, k, kv.value()),
                })
            })
            .collect();
        follower.deliver(&events, 0);
        match page.kvs().last() {
            Some(last) if page.more() => key = [last.key(), &[0]].concat(),
            _ => break,
        }
    }
    follower.end_snapshot(revision as u64);
    Ok(revision)
}
