//! Lambda's Kafka event (Amazon MSK and self-managed Apache Kafka) into the consumers' batches.
//!
//! The mapping: a topic-partition is a shard (its id is the event's key for it, `topic-N`), a
//! record's sequence number is its offset and partition together
//! ([`tidemark::domain::partition::sequence_of`]: it grows with the offset, as sequence numbers
//! do within a shard, and is unique in the topic), the record key is the partition key, the
//! record's timestamp its arrival. One invocation may carry several topic-partitions: each is one batch, run through
//! the consumer on its own and checkpointed on its own, as one Kinesis shard's batch is.
//!
//! The event's shape is read by the types here rather than `aws_lambda_events`' `KafkaEvent`:
//! that one reads `timestamp` (integer milliseconds) through an `f64` and truncates, so
//! `…960020` became `10:06:00.019` in the fixture's test, and it panics on a fractional value.
//! An arrival time is a plain event's time (below), so it must be exact.
//!
//! Partial failures are reported the way the Kafka event source mapping reads them with
//! `ReportBatchItemFailures` on (docs/kafka.md): `{"batchItemFailures": [{"itemIdentifier":
//! {"partition": "topic-N", "offset": N}}]}`, the lowest failed offset of each topic-partition
//! that did not finish; the mapping resumes that partition there.

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tidemark::consumers::BatchOutcome;
use tidemark::domain::partition::{offset_of, sequence_of};
use tidemark::domain::EventTime;
use tidemark::ports::StreamRecord;
use tidemark::telemetry::BatchReport;

/// What an MSK or self-managed Kafka event source mapping sends: records by topic-partition.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEvent {
    #[serde(default)]
    pub event_source: Option<String>,
    /// `topic-N` → that partition's records, in offset order.
    #[serde(default)]
    pub records: HashMap<String, Vec<KafkaRecord>>,
}

/// One record; `key` and `value` are base64, either may be absent or null (a tombstone has no
/// value). Headers and the timestamp's type are not read.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRecord {
    #[serde(default)]
    pub topic: Option<String>,
    pub partition: i64,
    pub offset: i64,
    /// Milliseconds since the epoch: when the producer (CREATE_TIME) or the broker
    /// (LOG_APPEND_TIME) stamped it.
    pub timestamp: i64,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// A Kafka event Lambda could not have sent: the invocation fails loudly, as for Kinesis.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidKafkaEvent {
    #[error(
        "record {index} of {partition} has a negative offset {offset}, or a partition number \
         outside 0 to 99,999"
    )]
    Offset {
        partition: String,
        index: usize,
        offset: i64,
    },
    #[error("record {index} of {partition} is of topic-partition {actual}")]
    Partition {
        partition: String,
        index: usize,
        actual: String,
    },
    #[error(
        "record {index} of {partition} has offset {offset}, not after the one before it \
         ({previous}): a partition's records come in offset order"
    )]
    Order {
        partition: String,
        index: usize,
        offset: i64,
        previous: i64,
    },
}

/// Where the mapping resumes a partition: its key in the event and the offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KafkaItemIdentifier {
    pub partition: String,
    pub offset: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchItemFailure {
    pub item_identifier: KafkaItemIdentifier,
}

/// The answer to the Kafka event source mapping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEventResponse {
    pub batch_item_failures: Vec<KafkaBatchItemFailure>,
}

fn decode_base64(text: Option<&str>) -> Option<Vec<u8>> {
    text.and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
}

/// Record `index` of `partition` as a stream record. A value that is absent (a tombstone) or
/// not base64 is kept as it came, so the consumer sets it aside as undecodable, never guessed at.
fn stream_record(
    partition: &str,
    index: usize,
    record: KafkaRecord,
) -> Result<StreamRecord, InvalidKafkaEvent> {
    let sequence_number =
        sequence_of(record.partition, record.offset).ok_or_else(|| InvalidKafkaEvent::Offset {
            partition: partition.to_owned(),
            index,
            offset: record.offset,
        })?;
    let data = decode_base64(record.value.as_deref())
        .unwrap_or_else(|| record.value.unwrap_or_default().into_bytes());
    let partition_key = decode_base64(record.key.as_deref())
        .map(|key| String::from_utf8_lossy(&key).into_owned())
        .unwrap_or_default();
    Ok(StreamRecord {
        sequence_number,
        partition_key,
        data: data.into(),
        approximate_arrival: Some(EventTime::from_unix_nanos(
            i128::from(record.timestamp) * 1_000_000,
        )),
    })
}

/// Every topic-partition's batch, in offset order, by topic-partition name.
pub fn partition_batches(
    event: KafkaEvent,
) -> Result<Vec<(String, Vec<StreamRecord>)>, InvalidKafkaEvent> {
    let mut partitions: Vec<(String, Vec<KafkaRecord>)> = event.records.into_iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(&b.0));
    partitions
        .into_iter()
        .filter(|(_, records)| !records.is_empty())
        .map(|(partition, records)| {
            let mut previous: Option<i64> = None;
            for (index, record) in records.iter().enumerate() {
                if record.offset < 0 {
                    return Err(InvalidKafkaEvent::Offset {
                        partition,
                        index,
                        offset: record.offset,
                    });
                }
                if let Some(topic) = &record.topic {
                    let actual = format!("{topic}-{}", record.partition);
                    if actual != partition {
                        return Err(InvalidKafkaEvent::Partition {
                            partition,
                            index,
                            actual,
                        });
                    }
                }
                if let Some(previous) = previous.filter(|p| record.offset <= *p) {
                    return Err(InvalidKafkaEvent::Order {
                        partition,
                        index,
                        offset: record.offset,
                        previous,
                    });
                }
                previous = Some(record.offset);
            }
            let records = records
                .into_iter()
                .enumerate()
                .map(|(index, record)| stream_record(&partition, index, record))
                .collect::<Result<_, _>>()?;
            Ok((partition, records))
        })
        .collect()
}

/// The answer for each partition's outcome, and their reports.
pub fn response(outcomes: Vec<(String, BatchOutcome)>) -> (KafkaEventResponse, Vec<BatchReport>) {
    let mut response = KafkaEventResponse::default();
    let mut reports = Vec::with_capacity(outcomes.len());
    for (partition, outcome) in outcomes {
        if let Some(failed) = outcome.failure {
            // One of this batch's own records: its sequence number came from an offset.
            let offset = offset_of(&failed).unwrap_or(i64::MAX);
            response.batch_item_failures.push(KafkaBatchItemFailure {
                item_identifier: KafkaItemIdentifier { partition, offset },
            });
        }
        reports.push(outcome.report);
    }
    (response, reports)
}
