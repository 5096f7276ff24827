//! The archiver: the stream's second consumer. Each batch of a shard becomes one archive object
//! ([`crate::domain::archive`]), written under a key fixed by the batch's first record, so a
//! redelivered batch replaces its object; then each decodable record becomes a HISTORY entry,
//! keyed by (id, version), so a redelivered batch rewrites the same entries. Only after both does
//! the batch earn its checkpoint (written by the consumer loop, as for the processor), so every
//! record up to the archiver's checkpoint is archived, and failing here never holds STATUS back:
//! the processor has its own checkpoint.
//!
//! A record the processor would dead-letter is archived (the archive keeps every record as it
//! was on the stream) but has no history entry.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::consumers::processor::status_row;
use crate::consumers::{BatchOutcome, Consumer};
use crate::domain::archive::{encode_object, object_key, ArchivedRecord};
use crate::domain::{decode_log_record, Clock, Limits, Version, VersionedEvent};
use crate::ports::{ArchiveWriter, Checkpoint, HistoryWriter, StreamRecord};
use crate::telemetry::BatchReport;

pub struct Archiver {
    /// `None`: HISTORY only (`serve --data-dir` restoring it from the archive it reads).
    archive: Option<Arc<dyn ArchiveWriter>>,
    /// `None` when the stack keeps no per-id history (the archive only).
    history: Option<Arc<dyn HistoryWriter>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl Archiver {
    pub fn new(
        archive: Arc<dyn ArchiveWriter>,
        history: Option<Arc<dyn HistoryWriter>>,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            archive: Some(archive),
            history,
            limits,
            clock,
        }
    }

    /// Writes HISTORY only, from records that are already archived.
    pub fn history_only(
        history: Arc<dyn HistoryWriter>,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            archive: None,
            history: Some(history),
            limits,
            clock,
        }
    }

    /// The object a batch becomes: its key and gzip bytes.
    pub fn object(shard_id: &str, records: &[StreamRecord]) -> Option<(String, Bytes)> {
        let first = records.first()?;
        let archived: Vec<ArchivedRecord> = records
            .iter()
            .map(|r| ArchivedRecord {
                shard_id: shard_id.to_owned(),
                sequence_number: r.sequence_number.clone(),
                partition_key: r.partition_key.clone(),
                approximate_arrival: r.approximate_arrival,
                data: r.data.clone(),
            })
            .collect();
        // Writing into a Vec cannot fail.
        let body = encode_object(&archived).ok()?;
        Some((
            object_key(shard_id, &first.sequence_number, first.approximate_arrival),
            body.into(),
        ))
    }

    async fn archive_batch(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        let started = Instant::now();
        let now = self.clock.now();
        let now_text = now.to_rfc3339();
        let mut report = BatchReport::for_batch(shard_id, records, now);
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return BatchOutcome {
                failure: None,
                checkpoint: None,
                processed_at: now_text,
                report,
            };
        };
        let failed = |mut report: BatchReport, error: String| {
            report.failed = records.len();
            report.last_error = Some(error);
            report.reported_failure = Some(first.sequence_number.as_str().to_owned());
            report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            BatchOutcome {
                // The whole batch again: its object is replaced and its entries rewritten.
                failure: Some(first.sequence_number.clone()),
                checkpoint: None,
                processed_at: now_text.clone(),
                report,
            }
        };

        if let Some(archive) = &self.archive {
            let Some((key, body)) = Self::object(shard_id, records) else {
                return failed(report, "encoding the archive object failed".into());
            };
            if let Err(e) = archive.put(&key, body).await {
                return failed(report, format!("archiving {key}: {e}"));
            }
        }

        if let Some(history) = &self.history {
            let entries: Vec<_> = records
                .iter()
                .filter_map(|record| {
                    let event =
                        decode_log_record(&record.data, record.approximate_arrival, &self.limits)
                            .ok()?;
                    let version = Version::new(event.event_time, record.sequence_number.clone());
                    Some(status_row(
                        VersionedEvent { event, version },
                        shard_id,
                        &now_text,
                    ))
                })
                .collect();
            // Poison: archived as it was, never part of an id's history.
            report.dead_lettered = records.len() - entries.len();
            match history.put_many(entries).await {
                Ok(write) => {
                    report.applied = write.written;
                    for (id, sequence_number) in write.refused {
                        tracing::warn!(
                            shard_id, id, %sequence_number,
                            "HISTORY refused this event for good (over 400 KB); the archive keeps it"
                        );
                    }
                }
                Err(e) => return failed(report, format!("writing HISTORY: {e}")),
            }
        }

        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        BatchOutcome {
            failure: None,
            checkpoint: Some(Checkpoint {
                shard_id: shard_id.to_owned(),
                sequence_number: last.sequence_number.clone(),
                updated_at: now_text.clone(),
                records_applied: records.len() as u64,
                lag_ms: last.approximate_arrival.map_or(0, |a| now.millis_since(a)),
                mirrored_into: None,
            }),
            processed_at: now_text,
            report,
        }
    }
}

#[async_trait]
impl Consumer for Archiver {
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        self.archive_batch(shard_id, records).await
    }
}
