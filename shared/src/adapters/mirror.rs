//! Mirroring the processor's STATUS writes into a second table while the stack switches to a
//! rebuilt one (docs/operations.md, "Switching to the rebuilt table").
//!
//! Every row goes to the mirror (the rebuilt table) **first**, then to STATUS, and the batch's
//! checkpoint is written only after both, marked with the mirror's name. Why this order:
//! - A reader moved from STATUS to the mirror must not see an id go back. Each write lands in
//!   the mirror before STATUS, so while mirroring the mirror holds every row STATUS holds
//!   (once the follower has filled in what came before: [`crate::run::rebuild::follow`]).
//! - A read-your-writes token is honoured once the processor's checkpoint passed it; the
//!   checkpoint comes after both writes, so whichever table a reader is served from holds it.
//! - A failure between the two writes fails the batch: it is retried, and re-applying a row a
//!   table already holds changes nothing.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::{
    AdvanceOutcome, ApplyOutcome, Behind, Checkpoint, CheckpointWriter, StatusRow, StatusWriter,
    StoreError,
};

/// Writes each row to `mirror`, then to `primary`; the outcome is the primary's.
pub struct MirroredStatusWriter {
    mirror: Arc<dyn StatusWriter>,
    primary: Arc<dyn StatusWriter>,
}

impl MirroredStatusWriter {
    pub fn new(mirror: Arc<dyn StatusWriter>, primary: Arc<dyn StatusWriter>) -> Self {
        Self { mirror, primary }
    }
}

#[async_trait]
impl StatusWriter for MirroredStatusWriter {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        self.mirror.apply(row.clone()).await?;
        self.primary.apply(row).await
    }
}

/// Marks every checkpoint with the table its batches were mirrored into, so a follower can
/// tell from OPLOG alone when the processor started mirroring each shard.
pub struct MirrorMarkedCheckpoints {
    inner: Arc<dyn CheckpointWriter>,
    mirror: String,
}

impl MirrorMarkedCheckpoints {
    pub fn new(inner: Arc<dyn CheckpointWriter>, mirror: impl Into<String>) -> Self {
        Self {
            inner,
            mirror: mirror.into(),
        }
    }
}

#[async_trait]
impl CheckpointWriter for MirrorMarkedCheckpoints {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        let marked = Checkpoint {
            mirrored_into: Some(self.mirror.clone()),
            ..checkpoint.clone()
        };
        self.inner.advance(&marked).await
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        self.inner.note_behind(behind).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::adapters::faults::RefusesRows;
    use crate::adapters::memory::MemoryStatusStore;
    use crate::domain::{SequenceNumber, VersionKey};
    use crate::ports::StatusReader;

    fn row(id: &str) -> StatusRow {
        StatusRow {
            id: id.into(),
            status: "shipped".into(),
            timestamp: "t".into(),
            data: None,
            received_at: "r".into(),
            shard_id: "s".into(),
            sequence_number: SequenceNumber::parse("7").unwrap(),
            version: VersionKey("7".into()),
            updated_at: "u".into(),
        }
    }

    #[tokio::test]
    async fn the_mirror_is_written_first_and_a_failure_there_leaves_status_alone() {
        let mirror = Arc::new(MemoryStatusStore::default());
        let status = Arc::new(MemoryStatusStore::default());
        let writer = MirroredStatusWriter::new(mirror.clone(), status.clone());
        assert_eq!(writer.apply(row("a")).await.unwrap(), ApplyOutcome::Applied);
        assert!(mirror.get("a").await.unwrap().is_some());
        assert!(status.get("a").await.unwrap().is_some());

        let refusing = RefusesRows {
            inner: MemoryStatusStore::default(),
            refuse: |_| true,
        };
        let failing = MirroredStatusWriter::new(Arc::new(refusing), status.clone());
        assert!(failing.apply(row("b")).await.is_err());
        assert_eq!(
            status.get("b").await.unwrap(),
            None,
            "STATUS never ahead of the mirror"
        );
    }
}
