//! OPLOG's rules for one shard's row, the ones the DynamoDB adapter's conditions express, for the
//! stores that keep the row themselves (in memory, on disk).

use super::{Behind, Checkpoint, ShardProgress};

impl ShardProgress {
    /// A shard OPLOG knows nothing of yet.
    pub fn unknown(shard_id: &str) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            checkpoint: None,
            behind: None,
        }
    }

    /// Moves the checkpoint to `checkpoint` if that is forward, adding its `records_applied` to
    /// the running total and clearing `behind` (progress: the next batch that falls behind
    /// starts a new "since"). False, and nothing changed, when the row is already at or past it.
    pub fn advance(&mut self, checkpoint: &Checkpoint) -> bool {
        let total = match &self.checkpoint {
            Some(stored) if stored.sequence_number >= checkpoint.sequence_number => return false,
            Some(stored) => stored.records_applied + checkpoint.records_applied,
            None => checkpoint.records_applied,
        };
        self.checkpoint = Some(Checkpoint {
            records_applied: total,
            ..checkpoint.clone()
        });
        self.behind = None;
        true
    }

    /// Notes that a batch could not be applied in full, keeping the earliest `since` until the
    /// checkpoint moves.
    pub fn note_behind(&mut self, behind: &Behind) {
        let since = self
            .behind
            .as_ref()
            .map_or_else(|| behind.since.clone(), |b| b.since.clone());
        self.behind = Some(Behind {
            since,
            ..behind.clone()
        });
    }
}
