//! Consumers of the stream and the checkpoint they earn.
//!
//! A [`Consumer`] applies one batch of one shard and answers where it failed and how far it is
//! safe to checkpoint; it never writes OPLOG itself. The loop that drives it owns the checkpoint:
//! the processor Lambda's handler and the `serve` poller ([`crate::run::esm`]) write it (both through
//! [`CheckpointedConsumer`]), replay ([`crate::run::replay`]) deliberately does not. A second consumer of
//! the stream (an archiver, another view) implements [`Consumer`] and gets a loop with its own
//! [`CheckpointWriter`].

pub mod archiver;
pub mod notifier;
pub mod processor;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::domain::progress::ConsumerName;
use crate::domain::{settle, EventTime, SequenceNumber};
use crate::ports::{
    AdvanceOutcome, Behind, Checkpoint, CheckpointReader, CheckpointWriter, ShardProgress,
    StoreError, StreamRecord,
};
use crate::telemetry::BatchReport;

/// What the mapping is told, what may be checkpointed, and what was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The record to report in `batchItemFailures` (the mapping resumes there); `None` when
    /// the batch succeeded.
    pub failure: Option<SequenceNumber>,
    /// The checkpoint the batch earned: every record of the shard up to it is applied. `None`
    /// when nothing in the batch may be claimed.
    pub checkpoint: Option<Checkpoint>,
    /// When the batch was processed (RFC 3339), for OPLOG's record of a shard falling behind.
    pub processed_at: String,
    pub report: BatchReport,
}

impl BatchOutcome {
    /// The outcome of a batch whose records at `failed` (any order, duplicates allowed) could not
    /// be applied: the lowest is reported, and the checkpoint covers only what lies below it
    /// ([`crate::domain::settle`]).
    pub fn settled(
        shard_id: &str,
        records: &[StreamRecord],
        failed: &[SequenceNumber],
        now: EventTime,
        now_text: String,
        mut report: BatchReport,
    ) -> Self {
        let settlement = settle(records.iter().map(|r| &r.sequence_number), failed);
        let checkpoint = settlement.checkpoint.map(|sequence_number| {
            let arrival = records
                .iter()
                .find(|r| r.sequence_number == sequence_number)
                .and_then(|r| r.approximate_arrival);
            Checkpoint {
                shard_id: shard_id.to_owned(),
                sequence_number,
                updated_at: now_text.clone(),
                records_applied: settlement.records_covered as u64,
                lag_ms: arrival.map_or(0, |a| now.millis_since(a)),
                mirrored_into: None,
            }
        });
        report.reported_failure = settlement
            .report_failure
            .as_ref()
            .map(|s| s.as_str().to_owned());
        BatchOutcome {
            failure: settlement.report_failure,
            checkpoint,
            processed_at: now_text,
            report,
        }
    }
}

#[async_trait]
pub trait Consumer: Send + Sync {
    /// Applies one batch of one shard, records in shard order. Never fails as a whole: what could
    /// not be applied is the outcome's `failure`.
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome;
}

/// Writes the checkpoint a batch earned and reports what happened: the checkpoint when OPLOG
/// moved to it, `checkpoint_already_past` when OPLOG was already there or further (a redelivered
/// batch), or the error. The report never names a checkpoint that was not written. A failed write does not fail the batch: its
/// effects are already in place, so the checkpoint only stays behind (never ahead) until the
/// shard's next batch moves it.
async fn commit_checkpoint(checkpoints: &dyn CheckpointWriter, outcome: &mut BatchOutcome) {
    let Some(checkpoint) = &outcome.checkpoint else {
        return;
    };
    let started = Instant::now();
    match checkpoints.advance(checkpoint).await {
        Ok(AdvanceOutcome::Advanced) => {
            outcome.report.checkpoint = Some(checkpoint.sequence_number.as_str().to_owned());
        }
        Ok(AdvanceOutcome::AlreadyPast) => outcome.report.checkpoint_already_past = true,
        Err(e) => outcome.report.checkpoint_error = Some(e.to_string()),
    }
    outcome.report.duration_ms += started.elapsed().as_secs_f64() * 1000.0;
}

/// One consumer's checkpoints: what its loop writes after each batch and reads to resume.
#[derive(Clone)]
pub struct Checkpoints {
    pub writer: Arc<dyn CheckpointWriter>,
    pub reader: Arc<dyn CheckpointReader>,
}

/// A consumer and the OPLOG it checkpoints into: one batch the way a consumer loop runs it
/// (the Lambda handler, the `serve` poller, the tests that stand in for either).
pub struct CheckpointedConsumer {
    consumer: Arc<dyn Consumer>,
    checkpoints: Arc<dyn CheckpointWriter>,
}

impl CheckpointedConsumer {
    pub fn new(consumer: Arc<dyn Consumer>, checkpoints: Arc<dyn CheckpointWriter>) -> Self {
        Self {
            consumer,
            checkpoints,
        }
    }

    /// Applies the batch, then writes the checkpoint it earned; when the batch could not be
    /// applied in full, also records that the shard is behind (what `GET /shards` calls stuck
    /// once it lasts). Records are never lost to that write failing: it is only a report.
    pub async fn run_batch(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        let mut outcome = self.consumer.consume(shard_id, records).await;
        commit_checkpoint(self.checkpoints.as_ref(), &mut outcome).await;
        if let (Some(_), Some(last)) = (&outcome.failure, records.last()) {
            let behind = Behind {
                shard_id: shard_id.to_owned(),
                sequence_number: last.sequence_number.clone(),
                since: outcome.processed_at.clone(),
                at: outcome.processed_at.clone(),
            };
            if let Err(e) = self.checkpoints.note_behind(&behind).await {
                tracing::warn!(shard_id, error = %e, "could not record that the shard is behind");
            }
        }
        outcome
    }
}

/// One consumer's view of OPLOG: its own checkpoints, by plain shard id, over the table every
/// consumer shares (keys from [`ConsumerName::oplog_key`]).
pub struct ConsumerCheckpoints<T> {
    oplog: T,
    consumer: ConsumerName,
}

impl<T> ConsumerCheckpoints<T> {
    pub fn new(oplog: T, consumer: ConsumerName) -> Self {
        Self { oplog, consumer }
    }

    fn own(&self, mut progress: ShardProgress) -> Option<ShardProgress> {
        let shard = self.consumer.shard_of(&progress.shard_id)?.to_owned();
        if let Some(checkpoint) = &mut progress.checkpoint {
            checkpoint.shard_id.clone_from(&shard);
        }
        if let Some(behind) = &mut progress.behind {
            behind.shard_id.clone_from(&shard);
        }
        progress.shard_id = shard;
        Some(progress)
    }
}

#[async_trait]
impl<T: CheckpointWriter> CheckpointWriter for ConsumerCheckpoints<T> {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        let scoped = Checkpoint {
            shard_id: self.consumer.oplog_key(&checkpoint.shard_id),
            ..checkpoint.clone()
        };
        self.oplog.advance(&scoped).await
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        let scoped = Behind {
            shard_id: self.consumer.oplog_key(&behind.shard_id),
            ..behind.clone()
        };
        self.oplog.note_behind(&scoped).await
    }
}

#[async_trait]
impl<T: CheckpointReader> CheckpointReader for ConsumerCheckpoints<T> {
    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        let checkpoint = self.oplog.get(&self.consumer.oplog_key(shard_id)).await?;
        Ok(checkpoint.map(|c| Checkpoint {
            shard_id: shard_id.to_owned(),
            ..c
        }))
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self
            .progress()
            .await?
            .into_iter()
            .filter_map(|p| p.checkpoint)
            .collect())
    }

    async fn progress(&self) -> Result<Vec<ShardProgress>, StoreError> {
        let mut rows: Vec<_> = self
            .oplog
            .progress()
            .await?
            .into_iter()
            .filter_map(|p| self.own(p))
            .collect();
        rows.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::adapters::Adapters;
    use crate::domain::{Event, EventTime, FixedClock};
    use crate::ports::{OutgoingRecord, ShardReader, StartPosition, StreamWriter};

    /// A redelivered batch earns a checkpoint OPLOG already holds: the report says nothing was
    /// written instead of naming it as if it had been.
    #[tokio::test]
    async fn the_report_names_only_the_checkpoint_written() {
        let adapters = Adapters::memory(1);
        let now = EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let event = Event {
            id: "a".into(),
            status: "s".into(),
            timestamp: now.to_rfc3339(),
            event_time: now,
            data: None,
            received_at: now,
        };
        let record = OutgoingRecord {
            partition_key: "a".into(),
            data: event.encode().unwrap().into(),
        };
        let ack = adapters.stream_writer().put(&record).await.unwrap();
        let reader = adapters.shard_reader();
        let iterator = reader
            .shard_iterator(&ack.shard_id, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        let records = reader.get_records(&iterator, 10).await.unwrap().records;
        let processor = adapters.processor(Default::default(), Arc::new(FixedClock(now)));
        let consumer = CheckpointedConsumer::new(Arc::new(processor), adapters.checkpoint_writer());

        let first = consumer.run_batch(&ack.shard_id, &records).await.report;
        assert_eq!(
            first.checkpoint.as_deref(),
            Some(ack.sequence_number.as_str())
        );
        assert!(!first.checkpoint_already_past);
        let again = consumer.run_batch(&ack.shard_id, &records).await.report;
        assert_eq!(again.checkpoint, None);
        assert!(again.checkpoint_already_past);
    }
}
