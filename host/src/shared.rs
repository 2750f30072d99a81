//! Shared logs (plugin-api 1.3): several kvs nodes on one log, such as an etcd cluster.
//!
//! With a shared logger the host does not apply its own writes. The writer still
//! gathers batches and appends them ([`SharedWriterLog`]), but the map changes only as
//! the log comes back through [`Delivered`], the follow sink: a snapshot, then every
//! event in log order, this node's and every other node's. A write is acknowledged once
//! delivery has passed the position its batch was given, so a node reads its own
//! writes, and every node's map is a prefix of one global order. The writer does not
//! wait for that: it hands the batch's completions to [`Delivered`] and appends the
//! next batch, so several batches can be in flight; a write not delivered back within
//! the cluster timeout is answered `unavailable` (its outcome is then unknown).
//!
//! Start-up: ask the log for a quorum position (`barrier`), start delivery, and serve
//! once delivery has reached it. Linearizable reads do the same per read.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvs_plugin_api::{Event, PluginError};

use crate::metrics::Metrics;
use crate::ports::{HealthCheck, Log, SharedLog};
use crate::store::Map;
use crate::write_request::Completion;

mod sink;
use sink::Sink;

/// What delivery has applied so far; shared by the follow sink, the writer and reads.
pub struct Delivered {
    map: Arc<Map>,
    metrics: Arc<Metrics>,
    state: Mutex<DeliveryState>,
    moved: Condvar,
}

#[derive(Default)]
struct DeliveryState {
    /// The log position the map reflects.
    through: u64,
    /// Keys seen since a snapshot began; the rest are dropped when it ends.
    snapshot: Option<HashSet<Vec<u8>>>,
    /// Events applied since start.
    events: u64,
    /// Writes waiting for delivery to pass their batch's position: (position, when
    /// they give up, completions), in append order.
    waiting: std::collections::VecDeque<(u64, Instant, Vec<Completion>)>,
}

impl Delivered {
    fn new(map: Arc<Map>, metrics: Arc<Metrics>) -> Arc<Delivered> {
        Arc::new(Delivered {
            map,
            metrics,
            state: Mutex::new(DeliveryState::default()),
            moved: Condvar::new(),
        })
    }

    /// Begins a cut of the map as of the position delivery has applied (between two
    /// deliveries: they apply under the same lock).
    fn begin_cut(&self) -> Result<Arc<crate::map::Cut>, String> {
        let state = self.state.lock().unwrap();
        if state.snapshot.is_some() {
            return Err(
                "this node is reloading the shared log's snapshot; retry in a moment".to_string(),
            );
        }
        self.map
            .begin_cut(state.through)
            .ok_or_else(|| crate::writer::BUSY.to_string())
    }

    /// The log position the map reflects.
    pub fn through(&self) -> u64 {
        self.state.lock().unwrap().through
    }

    /// Waits until the map reflects the log through `position`.
    pub fn wait_through(&self, position: u64, timeout: Duration) -> Result<(), PluginError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        while state.through < position {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PluginError::unavailable(format!(
                    "the shared log has not delivered position {position} within {} ms \
                     (this node is at {})",
                    timeout.as_millis(),
                    state.through
                )));
            }
            state = self.moved.wait_timeout(state, left).unwrap().0;
        }
        Ok(())
    }

    /// Waits until the map reflects the log through `position`, as long as delivery
    /// makes progress: fails only once `stall` passes with no event applied. A node
    /// starting on a large log loads its snapshot for longer than any request waits
    /// (about 12,000 keys a second on a busy 2-core machine), so start-up is bounded
    /// by progress, not by the time a request may wait.
    pub fn wait_through_progressing(
        &self,
        position: u64,
        stall: Duration,
    ) -> Result<(), PluginError> {
        let mut state = self.state.lock().unwrap();
        let mut seen = (state.through, state.events);
        let mut deadline = Instant::now() + stall;
        while state.through < position {
            let now = Instant::now();
            if (state.through, state.events) != seen {
                seen = (state.through, state.events);
                deadline = now + stall;
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(PluginError::unavailable(format!(
                    "the shared log delivered nothing for {} ms while this node caught up \
                     to position {position} (it is at {}, {} event(s) applied so far)",
                    stall.as_millis(),
                    state.through,
                    state.events
                )));
            }
            // `moved` is notified when the position advances, not per snapshot page:
            // look at the event count now and then.
            let wait = left.min(Duration::from_millis(100));
            state = self.moved.wait_timeout(state, wait).unwrap().0;
        }
        Ok(())
    }

    /// Moves `through` forward; returns the writes that are now delivered, to be
    /// completed once the lock is released.
    fn advance(&self, state: &mut DeliveryState, through: u64) -> Vec<Completion> {
        let mut done = Vec::new();
        if through > state.through {
            state.through = through;
            self.moved.notify_all();
            // Positions increase in append order, so the delivered ones are in front.
            while state.waiting.front().is_some_and(|(p, _, _)| *p <= through) {
                done.extend(state.waiting.pop_front().expect("front exists").2);
            }
        }
        done
    }

    /// Completes `dones` once delivery has passed `position` (now, if it has).
    fn complete_at(&self, position: u64, dones: Vec<Completion>, timeout: Duration) {
        let mut state = self.state.lock().unwrap();
        if state.through >= position {
            drop(state);
            complete(dones, Ok(()));
        } else {
            state
                .waiting
                .push_back((position, Instant::now() + timeout, dones));
        }
    }

    /// Answers the writes that waited past their deadline with `unavailable`.
    fn expire(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            while state
                .waiting
                .front()
                .is_some_and(|(_, deadline, _)| *deadline <= now)
            {
                expired.push(state.waiting.pop_front().expect("front exists"));
            }
        }
        for (position, _, dones) in expired {
            complete(
                dones,
                Err(PluginError::unavailable(format!(
                    "written to the shared log at position {position}, but not delivered back \
                     to this node in time: the write may or may not have taken effect"
                ))),
            );
        }
    }
}

fn complete(dones: Vec<Completion>, result: Result<(), PluginError>) {
    for done in dones {
        done.complete(result.clone());
    }
}

/// The writer's logger in shared mode: appends to the shared log and notes the
/// position, which the writer's hand-off ([`Following::acknowledge`]) then waits for.
struct SharedWriterLog {
    log: Arc<dyn SharedLog>,
    last_position: Arc<std::sync::atomic::AtomicU64>,
}

impl Log for SharedWriterLog {
    fn health(&self) -> Option<HealthCheck> {
        self.log.health()
    }

    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        let position = self.log.append(batch)?;
        self.last_position
            .store(position, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn replay(
        &mut self,
        _sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        Ok(()) // the map is filled by delivery, not replay
    }

    fn close(&mut self) -> Result<(), PluginError> {
        self.log.close()
    }
}

/// A shared log, caught up and ready for the writer.
pub struct Following {
    /// What the writer appends through (it must not apply: delivery does).
    pub writer_log: Box<dyn Log>,
    /// What the writer does with an appended batch: hand its completions to delivery.
    pub acknowledge: crate::writer::Acknowledge,
    /// What delivery has applied.
    pub delivered: Arc<Delivered>,
    /// The log itself, for read barriers.
    pub log: Arc<dyn SharedLog>,
    /// Events delivered while catching up.
    pub events: u64,
}

/// Starts delivery of `log` into `map` and waits until it has reached the position a
/// quorum agrees on, for as long as delivery makes progress (`timeout` at most without
/// any).
pub fn follow(
    log: Arc<dyn SharedLog>,
    map: Arc<Map>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    conditional: bool,
) -> Result<Following, PluginError> {
    let delivered = Delivered::new(map, metrics);
    let target = log.barrier()?;
    log.follow(Arc::new(Sink(delivered.clone())))?;
    delivered.wait_through_progressing(target, timeout)?;
    let events = delivered.state.lock().unwrap().events;
    let last_position = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acknowledge = {
        let (hand, position) = (delivered.clone(), last_position.clone());
        let hand_off = Box::new(move |dones| {
            let position = position.load(std::sync::atomic::Ordering::Acquire);
            hand.complete_at(position, dones, timeout);
        });
        // After a conditional append conflicted: everything the log holds now, applied.
        let catch_up = conditional.then(|| {
            let (log, delivered) = (log.clone(), delivered.clone());
            Box::new(move || {
                let target = log.barrier()?;
                delivered.wait_through(target, timeout)
            }) as Box<dyn FnMut() -> Result<(), PluginError> + Send>
        });
        let cutting = delivered.clone();
        crate::writer::Acknowledge::Handoff(crate::writer::Handoff {
            hand_off,
            last_position: last_position.clone(),
            catch_up,
            begin_cut: Box::new(move || cutting.begin_cut()),
        })
    };
    // Writes stuck waiting for delivery (the log stopped delivering) are answered
    // after `timeout`; the thread ends with the last holder of `delivered`.
    let sweeper = Arc::downgrade(&delivered);
    std::thread::Builder::new()
        .name("kvs-shared-expiry".into())
        .spawn(move || {
            while let Some(delivered) = sweeper.upgrade() {
                delivered.expire();
                drop(delivered);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .map_err(|e| PluginError::internal(format!("cannot start a thread: {e}")))?;
    Ok(Following {
        writer_log: Box::new(SharedWriterLog {
            log: log.clone(),
            last_position,
        }),
        acknowledge,
        delivered,
        log,
        events,
    })
}

/// Concurrent linearizable reads share quorum barriers: a read needs a barrier that
/// *started* after it arrived (an earlier one might miss a write acknowledged just
/// before the read), so a read waits for the one in flight to finish, then shares the
/// next with every read that arrived meanwhile. One etcd round trip serves them all.
///
/// Barriers run on their own thread (`kvs-read-barrier`), never a reader's: a reader
/// waits only until its own deadline, however long the log takes to answer.
struct Barriers {
    state: Mutex<BarrierState>,
    /// Tells the barrier thread a reader wants a new barrier.
    wanted: Condvar,
    /// Tells readers a barrier finished.
    done: Condvar,
}

#[derive(Default)]
struct BarrierState {
    /// The highest barrier number a reader is waiting for.
    wanted: u64,
    /// Barriers started so far; the running one, if any, is number `started`.
    started: u64,
    /// The number of the last one finished, and its outcome.
    finished: u64,
    outcome: Option<Result<u64, PluginError>>,
}

impl Barriers {
    /// Starts the barrier thread, which asks `ask` for one barrier at a time while
    /// readers want one; it ends when the returned `Barriers` is dropped.
    fn start(
        ask: impl Fn() -> Result<u64, PluginError> + Send + 'static,
    ) -> std::io::Result<Arc<Barriers>> {
        let barriers = Arc::new(Barriers {
            state: Mutex::new(BarrierState::default()),
            wanted: Condvar::new(),
            done: Condvar::new(),
        });
        let weak = Arc::downgrade(&barriers);
        std::thread::Builder::new()
            .name("kvs-read-barrier".into())
            .spawn(move || {
                loop {
                    let Some(barriers) = weak.upgrade() else {
                        return;
                    };
                    let mut state = barriers.state.lock().unwrap();
                    if state.wanted <= state.started {
                        // Nothing wanted: wait a while, then check the owner is alive.
                        let _ = barriers
                            .wanted
                            .wait_timeout(state, Duration::from_secs(1))
                            .unwrap();
                        continue;
                    }
                    state.started += 1;
                    let number = state.started;
                    drop(state);
                    let outcome = ask();
                    let mut state = barriers.state.lock().unwrap();
                    state.finished = number;
                    state.outcome = Some(outcome);
                    barriers.done.notify_all();
                }
            })?;
        Ok(barriers)
    }

    /// The log position of a barrier that began after this call, waiting at most
    /// `timeout`.
    fn position(&self, timeout: Duration) -> Result<u64, PluginError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        let needed = state.started + 1;
        if state.wanted < needed {
            state.wanted = needed;
            self.wanted.notify_one();
        }
        while state.finished < needed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PluginError::unavailable(format!(
                    "the shared log gave no read barrier within {} ms: this node cannot \
                     confirm it is current (no quorum?)",
                    timeout.as_millis()
                )));
            }
            state = self.done.wait_timeout(state, left).unwrap().0;
        }
        state
            .outcome
            .clone()
            .expect("a finished barrier has an outcome")
    }
}

/// A linearizable read's barrier: the log's quorum position (shared with concurrent
/// reads, see `Barriers`), then wait until this node's map reflects it. The whole
/// wait is bounded by `timeout` (`[cluster] timeout_ms`) or the reader's deadline,
/// whichever comes first.
pub fn read_barrier(
    log: Arc<dyn SharedLog>,
    delivered: Arc<Delivered>,
    timeout: Duration,
) -> Result<impl Fn(Option<Instant>) -> Result<(), PluginError> + Send + Sync, PluginError> {
    let barriers = Barriers::start(move || log.barrier())
        .map_err(|e| PluginError::internal(format!("cannot start a thread: {e}")))?;
    Ok(move |deadline: Option<Instant>| {
        let now = Instant::now();
        let until = deadline.map_or(now + timeout, |d| d.min(now + timeout));
        let position = barriers.position(until.saturating_duration_since(now))?;
        delivered.wait_through(position, until.saturating_duration_since(Instant::now()))
    })
}

#[cfg(test)]
mod tests;
