// kvs patch (see ../KVS-PATCH.md): upstream 1.30 sent a Start and a Stop message to this
// thread on every call, waking it twice per call. Here the thread is a periodic epoch
// ticker instead: a plugin registers its engine once, and each call installs an epoch
// callback that checks its own wall-clock deadline and cancel flag on every tick, so no
// message is sent per call. After a second without a call in flight the ticker sleeps,
// and the next call wakes it (`InFlight`).

use crate::*;

/// How often the ticker advances the epoch of every registered engine: the granularity
/// of timeouts and cancellation.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Ticks without a call in flight after which the ticker sleeps until the next call.
const IDLE_TICKS: u32 = 100;

/// Calls (and instantiations) running now, in any plugin.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Set by the ticker when it goes to sleep; the first call to find it set wakes it.
static ASLEEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Counts a call in flight for as long as it lives, waking the ticker if it slept. Only
/// a call that finds the ticker asleep (after `IDLE_TICKS` without calls) sends it a
/// message: a busy host sends none, an idle one is not woken 100 times a second.
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn new() -> InFlight {
        use std::sync::atomic::Ordering::SeqCst;
        IN_FLIGHT.fetch_add(1, SeqCst);
        // SeqCst on both sides: either the ticker sees this call in flight before it
        // sleeps, or this call sees it asleep and wakes it.
        if ASLEEP.swap(false, SeqCst) {
            let _ = Timer::tx().send(TimerAction::Wake);
        }
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub(crate) enum TimerAction {
    /// A plugin was created: tick its engine from now on.
    Register {
        id: uuid::Uuid,
        engine: Engine,
    },
    /// The plugin was dropped.
    Unregister {
        id: uuid::Uuid,
    },
    /// A call started while the ticker slept.
    Wake,
    Shutdown,
}

pub(crate) struct Timer {
    pub tx: std::sync::mpsc::Sender<TimerAction>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(not(target_family = "windows"))]
extern "C" fn cleanup_timer() {
    let mut timer = match TIMER.lock() {
        Ok(x) => x,
        Err(e) => e.into_inner(),
    };
    drop(timer.take());
}

static TIMER: std::sync::Mutex<Option<Timer>> = std::sync::Mutex::new(None);

impl Timer {
    pub(crate) fn tx() -> std::sync::mpsc::Sender<TimerAction> {
        let mut timer = match TIMER.lock() {
            Ok(x) => x,
            Err(e) => e.into_inner(),
        };

        let timer = &mut *timer;

        match timer {
            None => Timer::init(timer),
            Some(t) => t.tx.clone(),
        }
    }

    pub fn init(timer: &mut Option<Timer>) -> std::sync::mpsc::Sender<TimerAction> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("extism-ticker".into())
            .spawn(move || {
                let mut plugins: BTreeMap<uuid::Uuid, Engine> = BTreeMap::new();
                let mut next_tick = std::time::Instant::now() + TICK;
                let mut idle_ticks = 0u32;
                loop {
                    // With no plugins there is nothing to tick, and with no call in
                    // flight for IDLE_TICKS nothing needs ticking: sleep until a plugin
                    // registers or a call wakes us.
                    let sleep = plugins.is_empty() || idle_ticks >= IDLE_TICKS && {
                        use std::sync::atomic::Ordering::SeqCst;
                        ASLEEP.store(true, SeqCst);
                        let idle = IN_FLIGHT.load(SeqCst) == 0;
                        if !idle {
                            ASLEEP.store(false, SeqCst);
                        }
                        idle
                    };
                    let action = if sleep {
                        match rx.recv() {
                            Ok(x) => Some(x),
                            Err(_) => return,
                        }
                    } else {
                        let wait = next_tick.saturating_duration_since(std::time::Instant::now());
                        match rx.recv_timeout(wait) {
                            Ok(x) => Some(x),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    };
                    match action {
                        Some(TimerAction::Register { id, engine }) => {
                            trace!(plugin = id.to_string(), "ticker: register");
                            if plugins.is_empty() {
                                next_tick = std::time::Instant::now() + TICK;
                            }
                            idle_ticks = 0;
                            ASLEEP.store(false, std::sync::atomic::Ordering::SeqCst);
                            plugins.insert(id, engine);
                        }
                        Some(TimerAction::Unregister { id }) => {
                            trace!(plugin = id.to_string(), "ticker: unregister");
                            plugins.remove(&id);
                        }
                        Some(TimerAction::Wake) => {
                            idle_ticks = 0;
                            next_tick = std::time::Instant::now() + TICK;
                        }
                        Some(TimerAction::Shutdown) => {
                            trace!("Shutting down timer");
                            for engine in plugins.values() {
                                engine.increment_epoch();
                            }
                            return;
                        }
                        None => {}
                    }
                    let now = std::time::Instant::now();
                    if now >= next_tick {
                        // Plugins sharing an engine advance it more than once per tick;
                        // harmless, since each call compares against its own deadline.
                        for engine in plugins.values() {
                            engine.increment_epoch();
                        }
                        next_tick = now + TICK;
                        if IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                            idle_ticks = idle_ticks.saturating_add(1);
                        } else {
                            idle_ticks = 0;
                        }
                    }
                }
            })
            .expect("cannot spawn the extism ticker thread");
        *timer = Some(Timer {
            thread: Some(thread),
            tx: tx.clone(),
        });
        trace!("Extism timer created");

        #[cfg(not(target_family = "windows"))]
        unsafe {
            libc::atexit(cleanup_timer);
        }

        tx
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = self.tx.send(TimerAction::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
