//! Emptying one view in the tables, with its consumer's checkpoints: what a local rebuild
//! (`tidemark rebuild --data-dir`) starts from. With no checkpoint the consumer reads the log
//! from its start, so a view emptied with its checkpoints is made again from the whole log by
//! the next `serve`; one loaded from a snapshot with checkpoints at the snapshot's positions,
//! from the log after them.

use super::tables::{DiskTables, OPLOG, STATUS};
use crate::domain::progress::ConsumerName;
use crate::ports::StoreError;

/// A view kept in the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskView {
    /// STATUS, written by the processor.
    Status,
    /// The status view's entries, counters and lists, written by its consumer.
    StatusView,
}

impl DiskView {
    /// The consumer whose checkpoints say how far the view is applied.
    pub fn consumer(self) -> ConsumerName {
        match self {
            Self::Status => ConsumerName::PROCESSOR,
            Self::StatusView => ConsumerName::STATUS_VIEW,
        }
    }
}

impl DiskTables {
    /// Empties `view` and removes its consumer's checkpoints, in one durable commit: the view
    /// and its checkpoints go together, so no checkpoint is left claiming rows that are gone.
    pub async fn reset(&self, view: DiskView) -> Result<(), StoreError> {
        let consumer = view.consumer();
        self.write_durably(move |txn| {
            match view {
                DiskView::Status => {
                    txn.delete_table(STATUS)?;
                    txn.open_table(STATUS)?;
                }
                DiskView::StatusView => super::view::recreate_tables(txn)?,
            }
            let mut oplog = txn.open_table(OPLOG)?;
            oplog.retain(|key, _| consumer.shard_of(key).is_none())?;
            Ok(())
        })
        .await
    }
}
