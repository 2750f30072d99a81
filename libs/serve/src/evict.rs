//! Making room on a full listener: when a new connection arrives and `max_connections`
//! are open, the connection that has been silent longest (received nothing for at least
//! [`EVICT_AFTER_SILENCE`], no request of its own in progress) is closed, and the new
//! one takes its place. Without this, clients that open connections and then say
//! nothing, or send half a request and stop, could hold every slot until their idle
//! deadline (`idle_timeout_ms`, 300 s by default) and shut everyone else out; with it,
//! they only ever hold slots nobody else needs. If no connection has been silent that
//! long, the new one is refused, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::deadline::Activity;

/// Only a connection silent at least this long may be closed to make room.
pub const EVICT_AFTER_SILENCE: Duration = Duration::from_secs(2);

type Connections = Mutex<HashMap<u64, Weak<Activity>>>;

/// One listener's open connections, by id.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    connections: Arc<Connections>,
    next_id: Arc<AtomicU64>,
}

/// A connection's place in its listener's registry; removes it when dropped with its
/// `Activity`.
#[derive(Debug)]
pub(crate) struct Registration {
    connections: Weak<Connections>,
    id: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registration {
    pub(crate) fn remove(self) {
        if let Some(connections) = self.connections.upgrade() {
            connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
        }
    }
}

impl Registry {
    /// The activity of a new connection, registered.
    pub(crate) fn register(&self) -> Arc<Activity> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::registered(Some(Registration {
            connections: Arc::downgrade(&self.connections),
            id,
        }));
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&activity));
        activity
    }

    /// Closes the connection silent longest, if one has been silent at least `min`;
    /// whether one was. Its slot is free once its task has ended (a moment later).
    pub(crate) fn evict_quietest(&self, min: Duration) -> bool {
        let victim = {
            let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            let mut quietest: Option<(u64, Duration, Arc<Activity>)> = None;
            for (id, weak) in connections.iter() {
                let Some(activity) = weak.upgrade() else {
                    continue;
                };
                let Some(silence) = activity.silence() else {
                    continue;
                };
                if silence >= min && quietest.as_ref().is_none_or(|(_, s, _)| silence > *s) {
                    quietest = Some((*id, silence, activity));
                }
            }
            // Taken out now, so that the next arrival picks another.
            quietest.map(|(id, _, activity)| {
                connections.remove(&id);
                activity
            })
        };
        match victim {
            Some(activity) => {
                activity.evicted.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_quietest_idle_connection_is_evicted_and_busy_or_recent_ones_never() {
        let registry = Registry::default();
        let old = registry.register();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let busy = registry.register();
        let _request = crate::deadline::Busy::new(&busy);
        let newer = registry.register();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Nothing has been silent for a second.
        assert!(!registry.evict_quietest(Duration::from_secs(1)));
        // The oldest silent one goes first, then the next; the busy one never.
        assert!(registry.evict_quietest(Duration::from_millis(20)));
        tokio::time::timeout(Duration::from_secs(1), old.evicted.notified())
            .await
            .expect("the quietest was not told");
        assert!(registry.evict_quietest(Duration::from_millis(20)));
        tokio::time::timeout(Duration::from_secs(1), newer.evicted.notified())
            .await
            .expect("the next quietest was not told");
        assert!(!registry.evict_quietest(Duration::from_millis(20)));
        // A dropped connection leaves the registry.
        drop(old);
        drop(newer);
        assert_eq!(registry.connections.lock().unwrap().len(), 1);
    }
}
