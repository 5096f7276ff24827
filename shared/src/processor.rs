//! One batch of one shard: decode, dead-letter poison, coalesce, apply with bounded
//! concurrency, settle, checkpoint. DynamoDB calls per batch: one per distinct id, one per
//! poison record, one for the checkpoint; no more.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use crate::domain::{
    coalesce, decode_record, settle, Clock, Limits, PoisonReason, SequenceNumber, Version,
    VersionedEvent,
};
use crate::ports::*;
use crate::telemetry::BatchReport;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessorSettings {
    pub limits: Limits,
    /// Conditional writes in flight at once.
    pub write_concurrency: usize,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            write_concurrency: crate::domain::limits::DEFAULT_WRITE_CONCURRENCY,
        }
    }
}

pub struct Processor {
    status: Arc<dyn StatusStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    settings: ProcessorSettings,
    clock: Arc<dyn Clock>,
}

/// What Lambda is told, and what was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The sequence number to report in `batchItemFailures`; `None` when the batch succeeded.
    pub failure: Option<String>,
    pub report: BatchReport,
}

enum Write {
    DeadLetter {
        letter: DeadLetter,
        sequence: Option<SequenceNumber>,
    },
    Status {
        row: StatusRow,
        lowest_sequence: SequenceNumber,
    },
}

enum WriteResult {
    DeadLettered,
    Applied,
    Stale,
    Failed {
        sequence: Option<SequenceNumber>,
        error: StoreError,
    },
}

/// The STATUS row an event becomes; `updated_at` is the batch's time, formatted once.
pub fn status_row(newest: VersionedEvent, shard_id: &str, updated_at: &str) -> StatusRow {
    let VersionedEvent { event, version } = newest;
    StatusRow {
        version: version.key(),
        sequence_number: version.sequence.as_str().to_owned(),
        id: event.id,
        status: event.status,
        timestamp: event.timestamp,
        data: event.data.map(|d| String::from(Box::<str>::from(d))),
        received_at: event.received_at.to_rfc3339(),
        shard_id: shard_id.to_owned(),
        updated_at: updated_at.to_owned(),
    }
}

impl Processor {
    pub fn new(
        status: Arc<dyn StatusStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        dead_letters: Arc<dyn DeadLetterStore>,
        settings: ProcessorSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            status,
            checkpoints,
            dead_letters,
            settings,
            clock,
        }
    }

    /// The same processor writing its checkpoints to `checkpoints` instead.
    pub fn with_checkpoints(&self, checkpoints: Arc<dyn CheckpointStore>) -> Self {
        Self {
            checkpoints,
            status: Arc::clone(&self.status),
            dead_letters: Arc::clone(&self.dead_letters),
            settings: self.settings,
            clock: Arc::clone(&self.clock),
        }
    }

    /// Processes one batch of one shard, records in shard order. Never fails as a whole: what
    /// could not be written is reported as the batch item failure, so Lambda retries from there.
    pub async fn process_batch(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        let started = Instant::now();
        let now = self.clock.now();
        // The batch's time as text, formatted once: dead letters, STATUS rows and OPLOG share it.
        let now_text = now.to_rfc3339();
        let mut report = BatchReport {
            shard_id: shard_id.to_owned(),
            records: records.len(),
            oldest_record_age_ms: records
                .iter()
                .filter_map(|r| r.approximate_arrival)
                .min()
                .map(|arrival| now.millis_since(arrival)),
            ..BatchReport::default()
        };

        // 1. Decode; what can never be applied becomes a dead letter.
        let mut sequences = Vec::with_capacity(records.len());
        let mut decoded = Vec::with_capacity(records.len());
        let mut writes = Vec::new();
        for record in records {
            let sequence = SequenceNumber::parse(&record.sequence_number);
            let decoded_event = match &sequence {
                Ok(seq) => {
                    decode_record(&record.data, &self.settings.limits).map(|event| VersionedEvent {
                        version: Version::new(event.event_time, seq.clone()),
                        event,
                    })
                }
                Err(e) => Err(PoisonReason::BadSequenceNumber(e.to_string())),
            };
            match decoded_event {
                Ok(event) => decoded.push(event),
                Err(reason) => writes.push(Write::DeadLetter {
                    letter: DeadLetter {
                        shard_id: shard_id.to_owned(),
                        sequence_number: record.sequence_number.clone(),
                        partition_key: record.partition_key.clone(),
                        raw: record.data.clone(),
                        reason: reason.to_string(),
                        dead_lettered_at: now_text.clone(),
                    },
                    sequence: sequence.clone().ok(),
                }),
            }
            if let Ok(seq) = sequence {
                sequences.push(seq);
            }
        }

        // 2. Coalesce: one write per distinct id.
        let groups = coalesce(decoded);
        report.distinct_ids = groups.len();
        writes.extend(groups.into_iter().map(|group| Write::Status {
            lowest_sequence: group.lowest_sequence,
            row: status_row(group.newest, shard_id, &now_text),
        }));

        // 3. Apply, many in flight at once.
        let results: Vec<WriteResult> = stream::iter(writes)
            .map(|write| self.write(write))
            .buffer_unordered(self.settings.write_concurrency.max(1))
            .collect()
            .await;
        let mut failed = Vec::new();
        for result in results {
            match result {
                WriteResult::DeadLettered => report.dead_lettered += 1,
                WriteResult::Applied => report.applied += 1,
                WriteResult::Stale => report.stale += 1,
                WriteResult::Failed { sequence, error } => {
                    report.failed += 1;
                    report.last_error = Some(error.to_string());
                    // A record with no valid sequence number cannot be reported to Lambda; it
                    // is counted and logged, and Kinesis never produces one.
                    failed.extend(sequence);
                }
            }
        }

        // 4. Settle: report the lowest failed record; checkpoint only what is fully applied.
        let settlement = settle(&sequences, &failed);
        if let Some(checkpoint) = &settlement.checkpoint {
            let arrival = records
                .iter()
                .find(|r| r.sequence_number == checkpoint.as_str())
                .and_then(|r| r.approximate_arrival);
            let advance = self
                .checkpoints
                .advance(&Checkpoint {
                    shard_id: shard_id.to_owned(),
                    sequence_number: checkpoint.clone(),
                    updated_at: now_text.clone(),
                    records_applied: settlement.records_covered as u64,
                    lag_ms: arrival.map_or(0, |a| now.millis_since(a)),
                })
                .await;
            match advance {
                Ok(_) => report.checkpoint = Some(checkpoint.as_str().to_owned()),
                // STATUS already holds the writes; a checkpoint left behind only means a replay
                // that changes nothing, so the batch still succeeds.
                Err(e) => report.checkpoint_error = Some(e.to_string()),
            }
        }
        report.reported_failure = settlement
            .report_failure
            .as_ref()
            .map(|s| s.as_str().to_owned());
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        BatchOutcome {
            failure: report.reported_failure.clone(),
            report,
        }
    }

    async fn write(&self, write: Write) -> WriteResult {
        match write {
            Write::DeadLetter { letter, sequence } => match self.dead_letters.put(&letter).await {
                Ok(()) => WriteResult::DeadLettered,
                Err(error) => WriteResult::Failed { sequence, error },
            },
            Write::Status {
                row,
                lowest_sequence,
            } => match self.status.apply(row).await {
                Ok(ApplyOutcome::Applied) => WriteResult::Applied,
                Ok(ApplyOutcome::Stale) => WriteResult::Stale,
                Err(error) => WriteResult::Failed {
                    sequence: Some(lowest_sequence),
                    error,
                },
            },
        }
    }
}
