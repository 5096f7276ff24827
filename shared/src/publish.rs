//! Putting events on the stream: 202 only after Kinesis acknowledged, retrying only what failed.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::limits::{MAX_BATCH_EVENTS, MAX_PUT_RECORDS_BYTES};
use crate::ports::{OutgoingRecord, PutAck, PutEntryResult, StreamError, StreamWriter};

/// Exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 25 ms doubling to at most 1 s: worst case ~1.6 s of waiting, far inside
    /// API Gateway's 29 s integration timeout, while riding out a throttled second on a shard.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): uniform in [0, min(max, base·2^(retry-1))].
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Why an event was not accepted by the stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Kinesis kept throttling through every retry: the client should retry later.
    #[error("the stream is throttling: {0}")]
    Throttled(String),
    /// Kinesis could not be reached or failed: the client should retry later.
    #[error("the stream is unavailable: {0}")]
    Unavailable(String),
}

impl From<StreamError> for PublishError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Throttled(m) => PublishError::Throttled(m),
            other => PublishError::Unavailable(other.to_string()),
        }
    }
}

fn retryable(e: &StreamError) -> bool {
    matches!(e, StreamError::Throttled(_) | StreamError::Unavailable(_))
}

/// Puts records on the stream with retries.
pub struct Publisher {
    stream: Arc<dyn StreamWriter>,
    retry: RetryPolicy,
}

impl Publisher {
    pub fn new(stream: Arc<dyn StreamWriter>, retry: RetryPolicy) -> Self {
        Self { stream, retry }
    }

    /// One PutRecord, retried while Kinesis throttles or is unreachable.
    pub async fn publish(&self, record: &OutgoingRecord) -> Result<PutAck, PublishError> {
        let mut attempt = 1;
        loop {
            match self.stream.put(record).await {
                Ok(ack) => return Ok(ack),
                Err(e) if retryable(&e) && attempt < self.retry.max_attempts => {
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// PutRecords in calls of at most 500 entries and 5 MiB, retrying only the entries that
    /// failed. Results come back in the order of `records`.
    pub async fn publish_all(
        &self,
        records: &[OutgoingRecord],
    ) -> Vec<Result<PutAck, PublishError>> {
        let mut results: Vec<Option<Result<PutAck, PublishError>>> = vec![None; records.len()];
        for chunk in chunks(records) {
            self.publish_chunk(records, chunk, &mut results).await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PublishError::Unavailable("not sent".into()))))
            .collect()
    }

    async fn publish_chunk(
        &self,
        records: &[OutgoingRecord],
        mut pending: Vec<usize>,
        results: &mut [Option<Result<PutAck, PublishError>>],
    ) {
        let mut attempt = 1;
        loop {
            let batch: Vec<OutgoingRecord> = pending.iter().map(|&i| records[i].clone()).collect();
            let mut still_pending = Vec::new();
            match self.stream.put_many(&batch).await {
                Ok(entries) => {
                    for (&index, entry) in pending.iter().zip(entries) {
                        match entry {
                            PutEntryResult::Accepted(ack) => results[index] = Some(Ok(ack)),
                            PutEntryResult::Rejected { throttled, message } => {
                                results[index] = Some(Err(if throttled {
                                    PublishError::Throttled(message)
                                } else {
                                    PublishError::Unavailable(message)
                                }));
                                still_pending.push(index);
                            }
                        }
                    }
                }
                Err(e) => {
                    let retry_call = retryable(&e);
                    let error = PublishError::from(e);
                    for &index in &pending {
                        results[index] = Some(Err(error.clone()));
                    }
                    if !retry_call {
                        return;
                    }
                    still_pending = pending;
                }
            }
            if still_pending.is_empty() || attempt >= self.retry.max_attempts {
                return;
            }
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            attempt += 1;
            pending = still_pending;
        }
    }
}

/// Splits record indices into PutRecords calls of at most 500 entries and 5 MiB, in order.
fn chunks(records: &[OutgoingRecord]) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (index, record) in records.iter().enumerate() {
        if !current.is_empty()
            && (current.len() == MAX_BATCH_EVENTS || bytes + record.size() > MAX_PUT_RECORDS_BYTES)
        {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += record.size();
        current.push(index);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::faults::{Faults, Faulty};
    use crate::adapters::memory::MemoryStream;
    use crate::ports::ShardReader;
    use bytes::Bytes;

    fn record(key: &str, size: usize) -> OutgoingRecord {
        OutgoingRecord {
            partition_key: key.into(),
            data: Bytes::from(vec![b'x'; size]),
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 50,
            base_delay: Duration::from_micros(10),
            max_delay: Duration::from_micros(100),
        }
    }

    #[test]
    fn chunks_respect_count_and_size() {
        let many: Vec<_> = (0..1001).map(|i| record(&i.to_string(), 10)).collect();
        let sizes: Vec<usize> = chunks(&many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 1]);
        let big: Vec<_> = (0..12).map(|i| record(&i.to_string(), 1_000_000)).collect();
        for chunk in chunks(&big) {
            assert!(chunk.iter().map(|&i| big[i].size()).sum::<usize>() <= MAX_PUT_RECORDS_BYTES);
        }
        assert_eq!(chunks(&big).iter().map(Vec::len).sum::<usize>(), 12);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            assert!(policy.backoff(retry) <= policy.max_delay);
        }
        assert!(policy.backoff(1) <= policy.base_delay);
    }

    #[tokio::test]
    async fn retries_only_the_failed_entries_until_all_are_accepted() {
        let memory = Arc::new(MemoryStream::new(2));
        let faults = Faults::new(7);
        faults.set_failure_rate(0.3);
        let stream = Faulty::new(memory.clone(), &faults);
        let publisher = Publisher::new(Arc::new(stream), quick());
        let records: Vec<_> = (0..300).map(|i| record(&format!("id-{i}"), 20)).collect();
        let results = publisher.publish_all(&records).await;
        assert!(results.iter().all(Result::is_ok));
        assert!(faults.injected() > 0);
        // Every record is on the stream exactly once: failed entries were never sent, and
        // accepted ones were not sent again.
        let mut total = 0;
        for shard in memory.list_shards().await.unwrap() {
            let it = memory
                .shard_iterator(&shard.shard_id, &crate::ports::StartPosition::TrimHorizon)
                .await
                .unwrap();
            total += memory.get_records(&it, 10_000).await.unwrap().records.len();
        }
        assert_eq!(total, 300);
    }

    #[tokio::test]
    async fn reports_throttled_entries_after_the_last_attempt() {
        let faults = Faults::new(1);
        faults.set_down(true);
        let stream = Faulty::new(MemoryStream::new(1), &faults);
        let publisher = Publisher::new(
            Arc::new(stream),
            RetryPolicy {
                max_attempts: 3,
                ..quick()
            },
        );
        let results = publisher
            .publish_all(&[record("a", 1), record("b", 1)])
            .await;
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(PublishError::Throttled(_)))));
        assert!(matches!(
            publisher.publish(&record("a", 1)).await,
            Err(PublishError::Throttled(_))
        ));
    }
}
