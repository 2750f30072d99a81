//! A [`Log`] for the host's unit tests: it keeps every batch it is given, refuses the
//! appends whose number is in `refuse`, refuses whole (TOO_LARGE, keeping nothing) a
//! batch over `max_events`, and, with a `gate`, waits for one go-ahead before each
//! append (so a test can hold the writer inside an append).

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use kvs_plugin_api::{Event, EventKind, PluginError};

use super::{HealthCheck, Log};

/// Every batch appended: (sequence, kind, key) per event.
pub(crate) type Recorded = Arc<Mutex<Vec<Vec<(u64, EventKind, Vec<u8>)>>>>;

#[derive(Default)]
pub(crate) struct Recording {
    pub(crate) batches: Recorded,
    pub(crate) refuse: Vec<usize>,
    pub(crate) max_events: Option<usize>,
    pub(crate) gate: Option<Receiver<()>>,
}

impl Recording {
    /// Recording into `batches`, refusing nothing, never waiting.
    pub(crate) fn into(batches: &Recorded) -> Recording {
        Recording {
            batches: batches.clone(),
            ..Recording::default()
        }
    }

    /// Events appended so far.
    pub(crate) fn count(batches: &Recorded) -> u64 {
        batches.lock().unwrap().iter().map(|b| b.len() as u64).sum()
    }

    /// Keys appended so far, in order.
    pub(crate) fn keys(batches: &Recorded) -> Vec<Vec<u8>> {
        let batches = batches.lock().unwrap();
        batches
            .iter()
            .flatten()
            .map(|(_, _, k)| k.clone())
            .collect()
    }
}

impl Log for Recording {
    fn append(&mut self, batch: &[Event<'_>]) -> Result<(), PluginError> {
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        if self.max_events.is_some_and(|max| batch.len() > max) {
            return Err(PluginError::new(
                kvs_plugin_api::ErrorCode::TOO_LARGE,
                format!("{} events do not fit one append", batch.len()),
            ));
        }
        let mut batches = self.batches.lock().unwrap();
        let number = batches.len();
        batches.push(
            batch
                .iter()
                .map(|e| (e.sequence, e.kind, e.key.to_vec()))
                .collect(),
        );
        if self.refuse.contains(&number) {
            return Err(PluginError::unavailable("disk full"));
        }
        Ok(())
    }
    fn replay(
        &mut self,
        _sink: &mut dyn FnMut(&[Event<'_>]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
    fn health(&self) -> Option<HealthCheck> {
        None
    }
}
