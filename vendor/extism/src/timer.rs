// kvs patch (see ../KVS-PATCH.md): upstream 1.30 sent a Start and a Stop message to this
// thread on every call, waking it twice per call. Here the thread is a periodic epoch
// ticker instead: a plugin registers its engine once, and each call installs an epoch
// callback that checks its own wall-clock deadline and cancel flag on every tick, so no
// message is sent per call.

use crate::*;

/// How often the ticker advances the epoch of every registered engine: the granularity
/// of timeouts and cancellation.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(10);

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
                loop {
                    // With no plugins there is nothing to tick: sleep until one registers.
                    let action = if plugins.is_empty() {
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
                            plugins.insert(id, engine);
                        }
                        Some(TimerAction::Unregister { id }) => {
                            trace!(plugin = id.to_string(), "ticker: unregister");
                            plugins.remove(&id);
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
