//! Kafka as the log (`serve --log kafka://HOST:PORT/TOPIC`): the stream ports over one topic.
//!
//! A partition is a shard (`TOPIC-N`, the name Lambda's Kafka event gives it); a record's
//! sequence number is its offset and partition together, as the consumers' Lambda makes it
//! ([`crate::domain::partition::sequence_of`]), so a token or a row names the same record
//! whichever way it was read. Writing: each event goes to its id's partition as Kafka's default
//! partitioner picks it ([`crate::domain::partition`]), acknowledged by every in-sync replica
//! (`acks=all`, what the client sends), so a `202` means the broker has it. Reading: Fetch from
//! an offset; the high watermark in the answer says whether the reader is at the tip (the
//! ListOffsets "latest" answer is not used: Tansu, the test broker, gets it wrong after
//! multi-record batches, ../shared/KAFKA.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;

use crate::domain::partition::{offset_of, partition_of, sequence_of, MAX_PARTITIONS};
use crate::domain::{EventTime, SequenceNumber};
use crate::ports::{
    OutgoingRecord, PutAck, PutEntryResult, RecordsPage, ShardInfo, ShardReader, StartPosition,
    StreamError, StreamRecord, StreamWriter,
};

/// Bytes one Fetch asks for at most: a full batch of 1 MB records would not fit anyway, and a
/// page is cut to the asked number of records after.
const FETCH_MAX_BYTES: i32 = 4 * 1024 * 1024;

/// How long a Fetch may wait for data. Not 0: Tansu answers a Fetch that may not wait, on a
/// partition with nothing new, with no topic at all, which the client rightly refuses (measured:
/// 0 ms fails, 1 ms and 50 ms answer an empty page). The mapping's own idle pause does the
/// waiting, so one millisecond is enough.
const FETCH_MAX_WAIT_MS: i32 = 1;

/// How long the client retries a call (connecting, producing, fetching) before it gives up and
/// the error reaches the caller: the ingest answers 503 rather than hold a request open, the
/// mapping retries the read itself, and a broker that never answers stops `serve` at start-up
/// with its reason instead of retrying forever (the client's default has no deadline).
const RETRY_DEADLINE: Duration = Duration::from_secs(10);
/// Connecting is several calls (metadata, topics, perhaps creating the topic), each retried.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Where a topic lives: `kafka://HOST:PORT/TOPIC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaTopic {
    pub bootstrap: String,
    pub topic: String,
}

impl KafkaTopic {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| format!("{url:?} is not kafka://HOST:PORT/TOPIC"))?;
        let (bootstrap, topic) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?} names no topic: kafka://HOST:PORT/TOPIC"))?;
        let valid_topic = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if bootstrap.is_empty() || !bootstrap.contains(':') {
            return Err(format!("{url:?}: the broker must be HOST:PORT"));
        }
        if !valid_topic {
            return Err(format!(
                "{url:?}: a topic is 1 to 249 letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(Self {
            bootstrap: bootstrap.to_owned(),
            topic: topic.to_owned(),
        })
    }
}

/// One topic as the stream: a client per partition, made at start-up and shared.
pub struct KafkaLog {
    topic: String,
    partitions: Vec<Arc<PartitionClient>>,
}

fn unavailable(e: impl std::fmt::Display) -> StreamError {
    StreamError::Unavailable(e.to_string())
}

impl KafkaLog {
    /// Connects, creating the topic with `partitions` partitions if it does not exist (an
    /// existing topic keeps its own count).
    pub async fn connect(topic: &KafkaTopic, partitions: u32) -> Result<Self, StreamError> {
        // rskafka waits for an answer as long as the connection stays open: a broker that
        // accepts and then says nothing would hold `serve`'s start-up for ever.
        tokio::time::timeout(CONNECT_DEADLINE, Self::connect_unbounded(topic, partitions))
            .await
            .unwrap_or_else(|_| {
                Err(StreamError::Unavailable(format!(
                    "the Kafka broker at {} did not answer within {} s",
                    topic.bootstrap,
                    CONNECT_DEADLINE.as_secs()
                )))
            })
    }

    async fn connect_unbounded(topic: &KafkaTopic, partitions: u32) -> Result<Self, StreamError> {
        let client: Client = ClientBuilder::new(vec![topic.bootstrap.clone()])
            .client_id("tidemark")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
                deadline: Some(RETRY_DEADLINE),
            })
            .build()
            .await
            .map_err(|e| unavailable(format!("connecting to {}: {e}", topic.bootstrap)))?;
        let existing = client
            .list_topics()
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|t| t.name == topic.topic);
        let count = match existing {
            Some(t) if t.partitions.len() as i64 > MAX_PARTITIONS => {
                return Err(StreamError::Invalid(format!(
                    "topic {} has {} partitions; Tidemark reads at most {MAX_PARTITIONS}",
                    topic.topic,
                    t.partitions.len()
                )))
            }
            Some(t) => t.partitions.len() as i32,
            None => {
                let wanted =
                    i32::try_from(i64::from(partitions.max(1)).min(MAX_PARTITIONS)).unwrap_or(1);
                client
                    .controller_client()
                    .map_err(unavailable)?
                    .create_topic(&topic.topic, wanted, 1, 5_000)
                    .await
                    .map_err(|e| unavailable(format!("creating topic {}: {e}", topic.topic)))?;
                wanted
            }
        };
        let mut clients = Vec::with_capacity(count as usize);
        for partition in 0..count {
            let client = client
                .partition_client(&topic.topic, partition, UnknownTopicHandling::Retry)
                .await
                .map_err(unavailable)?;
            clients.push(Arc::new(client));
        }
        Ok(Self {
            topic: topic.topic.clone(),
            partitions: clients,
        })
    }

    fn shard_id(&self, partition: usize) -> String {
        format!("{}-{partition}", self.topic)
    }

    /// The partition a shard id names.
    fn partition(&self, shard_id: &str) -> Result<usize, StreamError> {
        shard_id
            .strip_prefix(&self.topic)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < self.partitions.len())
            .ok_or_else(|| StreamError::NotFound(format!("no partition {shard_id:?}")))
    }

    fn partition_for(&self, key: &str) -> usize {
        partition_of(key.as_bytes(), self.partitions.len() as u32) as usize
    }

    async fn produce(
        &self,
        partition: usize,
        records: &[&OutgoingRecord],
    ) -> Result<Vec<PutAck>, StreamError> {
        // The broker keeps the producer's time (CREATE_TIME): it is each record's arrival.
        let millis = crate::domain::Clock::now(&crate::domain::SystemClock).unix_millis();
        let now = rskafka::chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
        let batch = records
            .iter()
            .map(|r| Record {
                key: Some(r.partition_key.as_bytes().to_vec()),
                value: Some(r.data.to_vec()),
                headers: BTreeMap::new(),
                timestamp: now,
            })
            .collect();
        let offsets =
            within_deadline(self.partitions[partition].produce(batch, Compression::NoCompression))
                .await?;
        offsets
            .into_iter()
            .map(|offset| {
                Ok(PutAck {
                    shard_id: self.shard_id(partition),
                    sequence_number: offset_sequence(partition, offset)?,
                })
            })
            .collect()
    }
}

/// A call to the broker, bounded: the client's retry deadline does not cover a request the
/// broker never answers (measured: Tansu stopped reading some connections under 32 concurrent
/// single-event posts, and those posts would have waited forever). Past the deadline the caller
/// gets an error: the ingest answers 503, a reader tries again.
async fn within_deadline<T>(
    call: impl std::future::Future<Output = rskafka::client::error::Result<T>>,
) -> Result<T, StreamError> {
    match tokio::time::timeout(RETRY_DEADLINE, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StreamError::Unavailable(format!(
            "the Kafka broker did not answer within {} s",
            RETRY_DEADLINE.as_secs()
        ))),
    }
}

fn offset_sequence(partition: usize, offset: i64) -> Result<SequenceNumber, StreamError> {
    sequence_of(partition as i64, offset).ok_or_else(|| {
        StreamError::Invalid(format!(
            "offset {offset} of partition {partition} has no sequence number"
        ))
    })
}

/// An iterator is the partition and the next offset to read: `N:OFFSET`.
fn iterator(partition: usize, offset: i64) -> String {
    format!("{partition}:{offset}")
}

fn parse_iterator(text: &str) -> Result<(usize, i64), StreamError> {
    text.split_once(':')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        .ok_or_else(|| StreamError::Invalid(format!("{text:?} is not a Kafka iterator")))
}

#[async_trait]
impl StreamWriter for KafkaLog {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        let partition = self.partition_for(&record.partition_key);
        self.produce(partition, &[record])
            .await?
            .pop()
            .ok_or_else(|| StreamError::Invalid("the broker acknowledged nothing".into()))
    }

    /// One produce request per partition, all at once; a partition's failure fails only its
    /// own entries, which are answered as throttled so the caller may resend them.
    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        let mut by_partition: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, record) in records.iter().enumerate() {
            by_partition
                .entry(self.partition_for(&record.partition_key))
                .or_default()
                .push(index);
        }
        let produced = futures::future::join_all(by_partition.iter().map(|(p, indexes)| {
            let batch: Vec<&OutgoingRecord> = indexes.iter().map(|i| &records[*i]).collect();
            async move { self.produce(*p, &batch).await }
        }))
        .await;
        let mut results: Vec<Option<PutEntryResult>> = vec![None; records.len()];
        for ((_, indexes), outcome) in by_partition.iter().zip(produced) {
            match outcome {
                Ok(acks) if acks.len() == indexes.len() => {
                    for (index, ack) in indexes.iter().zip(acks) {
                        results[*index] = Some(PutEntryResult::Accepted(ack));
                    }
                }
                other => {
                    let message = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "the broker acknowledged a different number of records".into(),
                    };
                    for index in indexes {
                        results[*index] = Some(PutEntryResult::Rejected {
                            throttled: true,
                            message: message.clone(),
                        });
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(PutEntryResult::Rejected {
                    throttled: true,
                    message: "not sent".into(),
                })
            })
            .collect())
    }
}

#[async_trait]
impl ShardReader for KafkaLog {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        Ok((0..self.partitions.len())
            .map(|p| ShardInfo {
                shard_id: self.shard_id(p),
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                open: true,
            })
            .collect())
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        let partition = self.partition(shard_id)?;
        let offset = |n: &SequenceNumber| {
            offset_of(n)
                .map_err(|_| StreamError::Invalid(format!("{} is not an offset", n.as_str())))
        };
        let next = match start {
            StartPosition::TrimHorizon => {
                within_deadline(self.partitions[partition].get_offset(OffsetAt::Earliest)).await?
            }
            StartPosition::AtSequence(n) => offset(n)?,
            StartPosition::AfterSequence(n) => offset(n)?.saturating_add(1),
        };
        Ok(iterator(partition, next))
    }

    async fn get_records(
        &self,
        iterator_text: &str,
        limit: usize,
    ) -> Result<RecordsPage, StreamError> {
        let (partition, offset) = parse_iterator(iterator_text)?;
        let client = self
            .partitions
            .get(partition)
            .ok_or_else(|| StreamError::NotFound(format!("no partition {partition}")))?;
        let (fetched, high_watermark) =
            within_deadline(client.fetch_records(offset, 1..FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS))
                .await?;
        let mut records = Vec::with_capacity(fetched.len().min(limit));
        let mut next = offset;
        for fetched in fetched
            .into_iter()
            .filter(|r| r.offset >= offset)
            .take(limit)
        {
            next = fetched.offset + 1;
            records.push(StreamRecord {
                sequence_number: offset_sequence(partition, fetched.offset)?,
                partition_key: fetched
                    .record
                    .key
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .unwrap_or_default(),
                data: Bytes::from(fetched.record.value.unwrap_or_default()),
                approximate_arrival: fetched
                    .record
                    .timestamp
                    .timestamp_nanos_opt()
                    .map(|nanos| EventTime::from_unix_nanos(nanos.into())),
            });
        }
        Ok(RecordsPage {
            records,
            next_iterator: Some(iterator(partition, next)),
            // How far behind the tip, in records rather than milliseconds: only "at the tip"
            // (zero) is read from it.
            millis_behind_latest: Some(high_watermark.saturating_sub(next).max(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_the_broker_never_answers_ends_unavailable_at_the_deadline() {
        let never = std::future::pending::<rskafka::client::error::Result<()>>();
        match within_deadline(never).await {
            Err(StreamError::Unavailable(reason)) => {
                assert!(reason.contains("did not answer within 10 s"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn a_topic_url_names_a_broker_and_a_topic() {
        assert_eq!(
            KafkaTopic::parse("kafka://127.0.0.1:19092/tidemark-events"),
            Ok(KafkaTopic {
                bootstrap: "127.0.0.1:19092".into(),
                topic: "tidemark-events".into()
            })
        );
        for bad in [
            "http://127.0.0.1:19092/t",
            "kafka://127.0.0.1:19092",
            "kafka://127.0.0.1:19092/",
            "kafka:///t",
            "kafka://host/t",
            "kafka://h:1/a b",
        ] {
            assert!(KafkaTopic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn iterators_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_iterator(&iterator(3, 41)), Ok((3, 41)));
        assert!(parse_iterator("shardId-0").is_err());
    }
}
