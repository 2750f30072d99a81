//! The per-peer connection cap: one client address cannot hold every one of a
//! listener's `max_connections` slots.
//!
//! Counted by IP address (every port of a host is one peer). A listener behind a proxy
//! on one address sees a single peer: set `max_connections_per_peer = 0` (no per-peer
//! cap) or a larger one there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs_plugin_api::log::Level;

use crate::LogFn;

pub use kvs_config::DEFAULT_MAX_CONNECTIONS_PER_PEER;

/// Open connections by peer address, for one listener.
#[derive(Clone)]
pub(crate) struct PeerSlots {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

/// One connection's place in its peer's count, given back when dropped.
pub(crate) struct PeerSlot {
    slots: Option<(PeerSlots, IpAddr)>,
}

impl PeerSlots {
    /// `cap` connections per address at most; 0: no cap.
    pub(crate) fn new(cap: usize) -> PeerSlots {
        PeerSlots {
            cap,
            open: Arc::default(),
            last_warning: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or `None` (and a warning, at most every 10 s)
    /// when that address already has `cap` open.
    pub(crate) fn take(&self, ip: IpAddr, table: &str, log: LogFn) -> Option<PeerSlot> {
        if self.cap == 0 {
            return Some(PeerSlot { slots: None });
        }
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n < self.cap {
                *n += 1;
                return Some(PeerSlot {
                    slots: Some((self.clone(), ip)),
                });
            }
        }
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            log(
                Level::WARN,
                &format!(
                    "{table}: refusing connections from {ip}: it has {} open, the limit is \
                     max_connections_per_peer = {}",
                    self.cap, self.cap
                ),
            );
        }
        None
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some((slots, ip)) = self.slots.take() {
            let mut open = slots.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(_: Level, _: &str) {}

    #[test]
    fn an_address_gets_at_most_cap_slots_and_gets_them_back() {
        let slots = PeerSlots::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = slots.take(a, "[t]", quiet).unwrap();
        let _second = slots.take(a, "[t]", quiet).unwrap();
        assert!(slots.take(a, "[t]", quiet).is_none());
        assert!(slots.take(b, "[t]", quiet).is_some());
        drop(first);
        assert!(slots.take(a, "[t]", quiet).is_some());
        let unlimited = PeerSlots::new(0);
        let all: Vec<_> = (0..1000).map(|_| unlimited.take(a, "[t]", quiet)).collect();
        assert!(all.iter().all(Option::is_some));
    }
}
