//! The stream on Kinesis Data Streams.

use async_trait::async_trait;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use aws_sdk_kinesis::Client;
use bytes::Bytes;

use super::sdk::{classify, Failure};
use crate::domain::{EventTime, SequenceNumber};
use crate::ports::*;

/// A Kinesis stream, by name, through a client built once at start-up.
#[derive(Clone)]
pub struct KinesisStream {
    client: Client,
    stream_name: String,
}

impl KinesisStream {
    pub fn new(client: Client, stream_name: impl Into<String>) -> Self {
        Self {
            client,
            stream_name: stream_name.into(),
        }
    }
}

/// The broad mapping every operation shares, by error code (as in the DynamoDB adapter); the
/// expired iterator, which decides what the reader does next, is checked with the typed check.
fn stream_error(failure: Failure) -> StreamError {
    match failure {
        Failure::Throttled(m) => StreamError::Throttled(m),
        Failure::Service { code, message } => match code.as_str() {
            "ResourceNotFoundException" => StreamError::NotFound(message),
            "InvalidArgumentException" | "ValidationException" => StreamError::Invalid(message),
            _ => StreamError::Unavailable(message),
        },
        Failure::Unreachable(m) => StreamError::Unavailable(m),
    }
}

/// Kinesis's own sequence numbers always parse; one that does not is an answer we cannot trust.
fn sequence(text: &str) -> Result<SequenceNumber, StreamError> {
    SequenceNumber::parse(text)
        .map_err(|e| StreamError::Unavailable(format!("Kinesis answered with {e}: {text:?}")))
}

fn to_event_time(t: &aws_sdk_kinesis::primitives::DateTime) -> Option<EventTime> {
    let nanos = i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos());
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(EventTime::from_offset_date_time)
}

#[async_trait]
impl StreamWriter for KinesisStream {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        let output = self
            .client
            .put_record()
            .stream_name(&self.stream_name)
            .partition_key(&record.partition_key)
            .data(Blob::new(record.data.to_vec()))
            .send()
            .await
            .map_err(|e| stream_error(classify(&e)))?;
        Ok(PutAck {
            shard_id: output.shard_id().to_owned(),
            sequence_number: sequence(output.sequence_number())?,
        })
    }

    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .data(Blob::new(r.data.to_vec()))
                    .build()
                    .map_err(|e| StreamError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .put_records()
            .stream_name(&self.stream_name)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| stream_error(classify(&e)))?;
        output
            .records()
            .iter()
            .map(|entry| {
                Ok(
                    match (
                        entry.shard_id(),
                        entry.sequence_number(),
                        entry.error_code(),
                    ) {
                        (Some(shard_id), Some(sequence_number), None) => {
                            PutEntryResult::Accepted(PutAck {
                                shard_id: shard_id.to_owned(),
                                sequence_number: sequence(sequence_number)?,
                            })
                        }
                        (_, _, code) => PutEntryResult::Rejected {
                            throttled: code == Some("ProvisionedThroughputExceededException"),
                            message: format!(
                                "{}: {}",
                                code.unwrap_or("UnknownError"),
                                entry.error_message().unwrap_or_default()
                            ),
                        },
                    },
                )
            })
            .collect()
    }
}

#[async_trait]
impl ShardReader for KinesisStream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // ListShards takes either the stream name or a continuation token, not both.
            let request = match &next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream_name),
            };
            let output = request
                .send()
                .await
                .map_err(|e| stream_error(classify(&e)))?;
            shards.extend(output.shards().iter().map(|s| {
                ShardInfo {
                    shard_id: s.shard_id().to_owned(),
                    parent_shard_id: s.parent_shard_id().map(str::to_owned),
                    adjacent_parent_shard_id: s.adjacent_parent_shard_id().map(str::to_owned),
                    open: s
                        .sequence_number_range()
                        .is_none_or(|range| range.ending_sequence_number().is_none()),
                }
            }));
            match output.next_token() {
                Some(token) => next_token = Some(token.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream_name)
            .shard_id(shard_id);
        let request = match start {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::AtSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq.as_str()),
            StartPosition::AfterSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq.as_str()),
        };
        let output = request
            .send()
            .await
            .map_err(|e| stream_error(classify(&e)))?;
        output
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| StreamError::Unavailable(format!("no iterator returned for {shard_id}")))
    }

    async fn get_records(&self, iterator: &str, limit: usize) -> Result<RecordsPage, StreamError> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(
                i32::try_from(limit.clamp(1, crate::domain::limits::MAX_GET_RECORDS)).unwrap_or(1),
            )
            .send()
            .await
            .map_err(|e| {
                // Typed where the SDK models it: an expired iterator is re-read, not an outage.
                if e.as_service_error()
                    .is_some_and(GetRecordsError::is_expired_iterator_exception)
                {
                    StreamError::ExpiredIterator
                } else {
                    stream_error(classify(&e))
                }
            })?;
        Ok(RecordsPage {
            records: output
                .records()
                .iter()
                .map(|r| {
                    Ok(StreamRecord {
                        sequence_number: sequence(r.sequence_number())?,
                        partition_key: r.partition_key().unwrap_or_default().to_owned(),
                        data: Bytes::copy_from_slice(r.data().as_ref()),
                        approximate_arrival: r
                            .approximate_arrival_timestamp()
                            .and_then(to_event_time),
                    })
                })
                .collect::<Result<_, StreamError>>()?,
            next_iterator: output.next_shard_iterator().map(str::to_owned),
            millis_behind_latest: output.millis_behind_latest(),
        })
    }
}
