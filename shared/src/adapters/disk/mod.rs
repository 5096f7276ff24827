//! Adapters on an embedded storage engine, for `tidemark serve --data-dir`: what must outlive a
//! crash of the process, on disk in one file per kind.
//!
//! The engine is redb (pure Rust, one file, ACID transactions on a copy-on-write B-tree, each
//! commit made durable with fsync before it returns). Why it and not another engine:
//! `docs/serve.md#what-serve-keeps` and BENCHMARKS.md ("serve --data-dir").
//!
//! [`DiskLog`] is the stream: a 202 is answered only once the event's record is committed to
//! it, so no acknowledged event can be lost by a crash, and its sequence numbers continue from
//! the file, so none is ever given twice. It also keeps the checkpoints a restart resumes from
//! ([`CheckpointJournal`]).

mod log;

pub use log::DiskLog;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::progress::ConsumerName;
use crate::domain::SequenceNumber;
use crate::ports::{AdvanceOutcome, Behind, Checkpoint, CheckpointWriter, StoreError};

/// Where a consumer's checkpoints are also written, durably, before they count: what a restarted
/// `serve` resumes from. Keyed by OPLOG key (`ConsumerName::oplog_key`).
#[async_trait]
pub trait CheckpointJournal: Send + Sync {
    /// Keeps `sequence` as `key`'s checkpoint once it is past the one kept (never backwards).
    async fn record(&self, key: &str, sequence: &SequenceNumber) -> Result<(), StoreError>;
    /// Every checkpoint kept, by key.
    fn load(&self) -> Result<Vec<(String, SequenceNumber)>, StoreError>;
}

/// A consumer's checkpoint writer that writes each checkpoint to a [`CheckpointJournal`] first:
/// a checkpoint counts (is in OPLOG) only once it is durable, so a restart never resumes past a
/// record whose effects were lost.
pub struct JournaledCheckpoints {
    inner: Arc<dyn CheckpointWriter>,
    journal: Arc<dyn CheckpointJournal>,
    consumer: ConsumerName,
}

impl JournaledCheckpoints {
    pub fn new(
        inner: Arc<dyn CheckpointWriter>,
        journal: Arc<dyn CheckpointJournal>,
        consumer: ConsumerName,
    ) -> Self {
        Self {
            inner,
            journal,
            consumer,
        }
    }
}

#[async_trait]
impl CheckpointWriter for JournaledCheckpoints {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        let key = self.consumer.oplog_key(&checkpoint.shard_id);
        self.journal
            .record(&key, &checkpoint.sequence_number)
            .await?;
        self.inner.advance(checkpoint).await
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        self.inner.note_behind(behind).await
    }
}
