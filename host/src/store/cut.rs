//! The store's side of backups and migrations: asking the writer for a cut of the map
//! (`map::Cut`), reading it, ending it.

use std::sync::Arc;

use super::{Phase, Store};
use crate::write_request::Msg;

impl Store {
    /// Begins a cut of the map between two of the writer's batches (`map::Cut`): for a
    /// backup, or with `tee` for a migration. End it with [`Store::end_cut`].
    pub(crate) fn begin_cut(
        &self,
        tee: Option<crate::write_request::Tee>,
    ) -> Result<Arc<crate::map::Cut>, String> {
        if self.phase() != Phase::Serving {
            return Err("kvs is not serving (starting or stopping); retry once it is".into());
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if !self.send_to_writer(Msg::Cut(crate::write_request::CutRequest { tee, reply })) {
            return Err("the writer has stopped".into());
        }
        // The writer answers after the batch in progress: an append's time.
        match answer.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(answer) => answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err("the writer did not answer within 60 s (is the logger stuck?)".into())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err("the writer has stopped".into())
            }
        }
    }

    /// Hands `each` every key of one shard of `cut` (see [`Map::read_cut`]).
    pub(crate) fn read_cut(
        &self,
        cut: &crate::map::Cut,
        shard: usize,
        each: impl FnMut(crate::map::CutRecord<'_>),
    ) {
        self.map.read_cut(cut, shard, each)
    }

    /// Ends `cut`: writes stop keeping entries for it.
    pub(crate) fn end_cut(&self, cut: &Arc<crate::map::Cut>) {
        self.map.end_cut(cut)
    }
}
