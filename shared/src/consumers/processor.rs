//! One batch of one shard: decode, dead-letter poison, coalesce, apply with bounded
//! concurrency, settle. DynamoDB calls per batch: one per distinct id and one per poison record;
//! the consumer loop adds one for the checkpoint the batch earned ([`crate::consumers`]).

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use async_trait::async_trait;

use crate::consumers::{BatchOutcome, Consumer};
use crate::domain::{
    coalesce, decode_log_record, Clock, EventTime, Limits, SequenceNumber, Version, VersionedEvent,
};
use crate::ports::*;
use crate::telemetry::BatchReport;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessorSettings {
    pub limits: Limits,
    /// Conditional writes in flight at once.
    pub write_concurrency: usize,
    /// How long DEADLETTER keeps an item (DynamoDB TTL); `None` keeps it.
    pub dead_letter_ttl: Option<std::time::Duration>,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            write_concurrency: crate::domain::limits::DEFAULT_WRITE_CONCURRENCY,
            dead_letter_ttl: None,
        }
    }
}

/// The STATUS projection: what it writes is STATUS and DEADLETTER, never OPLOG; where it is safe
/// to checkpoint is in its answer, for the consumer loop to write.
pub struct Processor {
    status: Arc<dyn StatusWriter>,
    dead_letters: Arc<dyn DeadLetterWriter>,
    settings: ProcessorSettings,
    clock: Arc<dyn Clock>,
}

enum Write {
    DeadLetter(DeadLetter),
    Status {
        row: StatusRow,
        lowest_sequence: SequenceNumber,
    },
}

enum WriteResult {
    DeadLettered,
    Applied,
    Stale,
    /// STATUS refused an id's newest record(s) for good: they were dead-lettered, and the id's
    /// next newest record in the batch applied (or was stale), or none was left.
    SetAside {
        dead_lettered: usize,
        then: Option<ApplyOutcome>,
    },
    Failed {
        sequence: SequenceNumber,
        error: StoreError,
    },
}

/// The STATUS row an event becomes; `updated_at` is the batch's time, formatted once.
pub fn status_row(newest: VersionedEvent, shard_id: &str, updated_at: &str) -> StatusRow {
    let VersionedEvent { event, version } = newest;
    StatusRow {
        version: version.key(),
        sequence_number: version.sequence,
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
    /// Usually built by [`crate::adapters::Adapters::processor`].
    pub fn new(
        status: Arc<dyn StatusWriter>,
        dead_letters: Arc<dyn DeadLetterWriter>,
        settings: ProcessorSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            status,
            dead_letters,
            settings,
            clock,
        }
    }

    /// Processes one batch of one shard, records in shard order. Never fails as a whole: what
    /// could not be written is reported as the batch item failure, so Lambda retries from there,
    /// and the checkpoint in the answer covers only what is reflected in STATUS.
    pub async fn process_batch(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        let started = Instant::now();
        let now = self.clock.now();
        // The batch's time as text, formatted once: dead letters, STATUS rows and OPLOG share it.
        let now_text = now.to_rfc3339();
        let mut report = BatchReport::for_batch(shard_id, records, now);

        // 1. Decode; what can never be applied becomes a dead letter.
        let mut decoded = Vec::with_capacity(records.len());
        let mut writes = Vec::new();
        for record in records {
            match decode_log_record(
                &record.data,
                record.approximate_arrival,
                &self.settings.limits,
            ) {
                Ok(event) => decoded.push(VersionedEvent {
                    version: Version::new(event.event_time, record.sequence_number.clone()),
                    event,
                }),
                Err(reason) => writes.push(Write::DeadLetter(self.dead_letter(
                    shard_id,
                    record,
                    &reason.to_string(),
                    now,
                    &now_text,
                ))),
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
        let batch = BatchContext {
            shard_id,
            records,
            now,
            now_text: &now_text,
        };
        let results: Vec<WriteResult> = stream::iter(writes)
            .map(|write| self.write(write, &batch))
            .buffer_unordered(self.settings.write_concurrency.max(1))
            .collect()
            .await;
        let mut failed = Vec::new();
        for result in results {
            match result {
                WriteResult::DeadLettered => report.dead_lettered += 1,
                WriteResult::Applied => report.applied += 1,
                WriteResult::Stale => report.stale += 1,
                WriteResult::SetAside {
                    dead_lettered,
                    then,
                } => {
                    report.dead_lettered += dead_lettered;
                    match then {
                        Some(ApplyOutcome::Applied) => report.applied += 1,
                        Some(ApplyOutcome::Stale) => report.stale += 1,
                        None => {}
                    }
                }
                WriteResult::Failed { sequence, error } => {
                    report.failed += 1;
                    report.last_error = Some(error.to_string());
                    failed.push(sequence);
                }
            }
        }

        // 4. Settle: report the lowest failed record; checkpoint only what is fully applied.
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        BatchOutcome::settled(shard_id, records, &failed, now, now_text, report)
    }

    fn dead_letter(
        &self,
        shard_id: &str,
        record: &StreamRecord,
        reason: &str,
        now: EventTime,
        now_text: &str,
    ) -> DeadLetter {
        let mut letter = DeadLetter::new(shard_id, record, reason, now_text);
        letter.expires_at = self
            .settings
            .dead_letter_ttl
            .map(|ttl| now.saturating_add(ttl).unix_millis() / 1000);
        letter
    }

    async fn write(&self, write: Write, batch: &BatchContext<'_>) -> WriteResult {
        match write {
            Write::DeadLetter(letter) => match self.dead_letters.put(&letter).await {
                Ok(()) => WriteResult::DeadLettered,
                Err(error) => WriteResult::Failed {
                    sequence: letter.sequence_number,
                    error,
                },
            },
            Write::Status {
                row,
                lowest_sequence,
            } => match self.status.apply(row).await {
                Ok(ApplyOutcome::Applied) => WriteResult::Applied,
                Ok(ApplyOutcome::Stale) => WriteResult::Stale,
                Err(StoreError::ItemRejected(reason)) => {
                    self.set_aside(lowest_sequence, reason, batch).await
                }
                Err(error) => WriteResult::Failed {
                    sequence: lowest_sequence,
                    error,
                },
            },
        }
    }

    /// STATUS refused an id's newest record in this batch for good (its row would be too large):
    /// that record is poison. Dead-letter it and apply the id's next newest record of the batch
    /// instead, and so on, so the row holds the newest record that can be applied. Rare, so the
    /// id's records are found again by decoding, rather than kept for every id on the way in.
    async fn set_aside(
        &self,
        lowest_sequence: SequenceNumber,
        mut reason: String,
        batch: &BatchContext<'_>,
    ) -> WriteResult {
        let limits = &self.settings.limits;
        let records: &[StreamRecord] = batch.records;
        let decoded = |record: &'_ StreamRecord| -> Option<VersionedEvent> {
            decode_log_record(&record.data, record.approximate_arrival, limits)
                .ok()
                .map(|event| VersionedEvent {
                    version: Version::new(event.event_time, record.sequence_number.clone()),
                    event,
                })
        };
        let Some(id) = records
            .iter()
            .find(|r| r.sequence_number == lowest_sequence)
            .and_then(decoded)
            .map(|v| v.event.id)
        else {
            return WriteResult::Failed {
                sequence: lowest_sequence,
                error: StoreError::ItemRejected(reason),
            };
        };
        // The id's records, newest first: the first is the one just refused.
        let mut candidates: Vec<(&StreamRecord, VersionedEvent)> = records
            .iter()
            .filter_map(|record| decoded(record).map(|v| (record, v)))
            .filter(|(_, v)| v.event.id == id)
            .collect();
        candidates.sort_by(|a, b| b.1.version.cmp(&a.1.version));
        let mut dead_lettered = 0;
        for (i, (record, candidate)) in candidates.into_iter().enumerate() {
            if i > 0 {
                let row = status_row(candidate, batch.shard_id, batch.now_text);
                match self.status.apply(row).await {
                    Ok(outcome) => {
                        return WriteResult::SetAside {
                            dead_lettered,
                            then: Some(outcome),
                        }
                    }
                    Err(StoreError::ItemRejected(next_reason)) => reason = next_reason,
                    Err(error) => {
                        return WriteResult::Failed {
                            sequence: lowest_sequence,
                            error,
                        }
                    }
                }
            }
            let letter = self.dead_letter(
                batch.shard_id,
                record,
                &format!("STATUS refused the row for good: {reason}"),
                batch.now,
                batch.now_text,
            );
            if let Err(error) = self.dead_letters.put(&letter).await {
                return WriteResult::Failed {
                    sequence: lowest_sequence,
                    error,
                };
            }
            dead_lettered += 1;
        }
        WriteResult::SetAside {
            dead_lettered,
            then: None,
        }
    }
}

/// What a write needs to know about its batch when it has to fall back.
struct BatchContext<'a> {
    shard_id: &'a str,
    records: &'a [StreamRecord],
    now: EventTime,
    now_text: &'a str,
}

#[async_trait]
impl Consumer for Processor {
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        self.process_batch(shard_id, records).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::adapters::Adapters;
    use crate::domain::{EventTime, FixedClock, SequenceNumber};
    use crate::ports::DeadLetterReader;

    /// With a TTL configured, a dead letter carries when it may be deleted; without, none.
    #[tokio::test]
    async fn dead_letters_expire_only_when_a_ttl_is_set() {
        let now = EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let poison = StreamRecord {
            sequence_number: SequenceNumber::parse("1").unwrap(),
            partition_key: "k".into(),
            data: bytes::Bytes::from_static(b"not an event"),
            approximate_arrival: None,
        };
        for (ttl, expected) in [
            (None, None),
            (
                Some(std::time::Duration::from_secs(86_400)),
                Some(now.unix_millis() / 1000 + 86_400),
            ),
        ] {
            let adapters = Adapters::memory(1);
            let settings = ProcessorSettings {
                dead_letter_ttl: ttl,
                ..ProcessorSettings::default()
            };
            let processor = adapters.processor(settings, Arc::new(FixedClock(now)));
            let outcome = processor
                .process_batch("s", std::slice::from_ref(&poison))
                .await;
            assert_eq!(outcome.report.dead_lettered, 1);
            let letters = adapters.dead_letter_reader().list().await.unwrap();
            assert_eq!(letters[0].expires_at, expected);
        }
    }
}
