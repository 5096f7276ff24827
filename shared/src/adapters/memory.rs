//! In-memory adapters with the semantics of the real services: Kinesis routing by MD5 of the
//! partition key into shard hash-key ranges, increasing sequence numbers per shard, closed
//! parent shards after a split; conditional STATUS and OPLOG writes that compare exactly what
//! the DynamoDB conditions compare. Each counts its calls, so tests and benchmarks can check
//! the write economy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use md5::{Digest, Md5};

use crate::domain::limits::{
    MAX_BATCH_EVENTS, MAX_GET_RECORDS, MAX_ID_CHARS, MAX_PUT_RECORDS_BYTES, MAX_RECORD_BYTES,
};
use crate::domain::{Clock, SequenceNumber, SystemClock};
use crate::ports::*;

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the state consistent, so the data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The 128-bit hash key Kinesis routes a partition key by.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

struct MemShard {
    info: ShardInfo,
    starting_hash_key: u128,
    ending_hash_key: u128,
    open: bool,
    records: Vec<StreamRecord>,
}

struct StreamState {
    shards: Vec<MemShard>,
    next_sequence: u128,
}

/// A Kinesis stream in memory.
pub struct MemoryStream {
    state: Mutex<StreamState>,
    put_calls: AtomicU64,
    put_many_calls: AtomicU64,
    get_records_calls: AtomicU64,
}

fn shard_name(index: usize) -> String {
    format!("shardId-{index:012}")
}

impl MemoryStream {
    /// A stream of `shard_count` shards splitting the hash-key space evenly, as CreateStream does.
    pub fn new(shard_count: usize) -> Self {
        let shard_count = shard_count.max(1) as u128;
        // Contiguous ranges of (almost) equal width covering 0..=u128::MAX, as CreateStream makes.
        let step = u128::MAX / shard_count;
        let shards = (0..shard_count)
            .map(|i| MemShard {
                info: ShardInfo {
                    shard_id: shard_name(i as usize),
                    parent_shard_id: None,
                    adjacent_parent_shard_id: None,
                },
                starting_hash_key: if i == 0 { 0 } else { i * step + 1 },
                ending_hash_key: if i + 1 == shard_count {
                    u128::MAX
                } else {
                    (i + 1) * step
                },
                open: true,
                records: Vec::new(),
            })
            .collect();
        Self {
            state: Mutex::new(StreamState {
                shards,
                next_sequence: 1,
            }),
            put_calls: AtomicU64::new(0),
            put_many_calls: AtomicU64::new(0),
            get_records_calls: AtomicU64::new(0),
        }
    }

    /// Splits an open shard in two at the middle of its hash-key range, as SplitShard does: the
    /// parent closes (readable to its end) and two children take new records.
    pub fn split_shard(&self, shard_id: &str) -> Result<(String, String), StreamError> {
        let mut state = lock(&self.state);
        let index = state
            .shards
            .iter()
            .position(|s| s.info.shard_id == shard_id && s.open)
            .ok_or_else(|| StreamError::NotFound(format!("open shard {shard_id}")))?;
        let (start, end) = {
            let parent = &mut state.shards[index];
            parent.open = false;
            (parent.starting_hash_key, parent.ending_hash_key)
        };
        let middle = start + (end - start) / 2;
        let mut children = Vec::new();
        for (lo, hi) in [(start, middle), (middle + 1, end)] {
            let id = shard_name(state.shards.len());
            state.shards.push(MemShard {
                info: ShardInfo {
                    shard_id: id.clone(),
                    parent_shard_id: Some(shard_id.to_owned()),
                    adjacent_parent_shard_id: None,
                },
                starting_hash_key: lo,
                ending_hash_key: hi,
                open: true,
                records: Vec::new(),
            });
            children.push(id);
        }
        Ok((children[0].clone(), children[1].clone()))
    }

    pub fn put_calls(&self) -> u64 {
        self.put_calls.load(Ordering::Relaxed)
    }

    pub fn put_many_calls(&self) -> u64 {
        self.put_many_calls.load(Ordering::Relaxed)
    }

    pub fn get_records_calls(&self) -> u64 {
        self.get_records_calls.load(Ordering::Relaxed)
    }

    /// Appends a record without the ingest API, as a foreign producer would (used to put poison).
    pub fn put_raw(&self, partition_key: &str, data: bytes::Bytes) -> Result<PutAck, StreamError> {
        self.append(&OutgoingRecord {
            partition_key: partition_key.to_owned(),
            data,
        })
    }

    fn append(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        validate_record(record)?;
        let hash = hash_key(&record.partition_key);
        let mut state = lock(&self.state);
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let shard = state
            .shards
            .iter_mut()
            .find(|s| s.open && s.starting_hash_key <= hash && hash <= s.ending_hash_key)
            .ok_or_else(|| StreamError::Unavailable("no open shard covers the hash key".into()))?;
        // Shaped like Kinesis's 56-digit numbers, and increasing across the whole stream.
        let sequence_number = format!("4959{sequence:052}");
        shard.records.push(StreamRecord {
            sequence_number: sequence_number.clone(),
            partition_key: record.partition_key.clone(),
            data: record.data.clone(),
            approximate_arrival: Some(SystemClock.now()),
        });
        Ok(PutAck {
            shard_id: shard.info.shard_id.clone(),
            sequence_number,
        })
    }
}

fn validate_record(record: &OutgoingRecord) -> Result<(), StreamError> {
    let key_chars = record.partition_key.chars().count();
    if key_chars == 0 || key_chars > MAX_ID_CHARS {
        return Err(StreamError::Invalid(format!(
            "partition key must be 1 to {MAX_ID_CHARS} characters"
        )));
    }
    if record.size() > MAX_RECORD_BYTES {
        return Err(StreamError::Invalid(format!(
            "record is {} bytes, more than {MAX_RECORD_BYTES}",
            record.size()
        )));
    }
    Ok(())
}

fn parse_iterator(iterator: &str) -> Result<(usize, usize), StreamError> {
    let (shard, position) = iterator
        .split_once(':')
        .ok_or_else(|| StreamError::Invalid(format!("not a shard iterator: {iterator}")))?;
    match (shard.parse(), position.parse()) {
        (Ok(s), Ok(p)) => Ok((s, p)),
        _ => Err(StreamError::Invalid(format!(
            "not a shard iterator: {iterator}"
        ))),
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        self.append(record)
    }

    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        self.put_many_calls.fetch_add(1, Ordering::Relaxed);
        if records.is_empty() || records.len() > MAX_BATCH_EVENTS {
            return Err(StreamError::Invalid(format!(
                "PutRecords takes 1 to {MAX_BATCH_EVENTS} records, got {}",
                records.len()
            )));
        }
        let total: usize = records.iter().map(OutgoingRecord::size).sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(StreamError::Invalid(format!(
                "PutRecords request is {total} bytes, more than {MAX_PUT_RECORDS_BYTES}"
            )));
        }
        records
            .iter()
            .try_fold(Vec::with_capacity(records.len()), |mut results, r| {
                results.push(PutEntryResult::Accepted(self.append(r)?));
                Ok(results)
            })
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        Ok(lock(&self.state)
            .shards
            .iter()
            .map(|s| s.info.clone())
            .collect())
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        let state = lock(&self.state);
        let (index, shard) = state
            .shards
            .iter()
            .enumerate()
            .find(|(_, s)| s.info.shard_id == shard_id)
            .ok_or_else(|| StreamError::NotFound(format!("shard {shard_id}")))?;
        let position = match start {
            StartPosition::TrimHorizon => 0,
            StartPosition::AtSequence(at) => {
                shard.records.partition_point(|r| sequence_of(r) < *at)
            }
            StartPosition::AfterSequence(after) => {
                shard.records.partition_point(|r| sequence_of(r) <= *after)
            }
        };
        Ok(format!("{index}:{position}"))
    }

    async fn get_records(&self, iterator: &str, limit: usize) -> Result<RecordsPage, StreamError> {
        self.get_records_calls.fetch_add(1, Ordering::Relaxed);
        let (index, position) = parse_iterator(iterator)?;
        let state = lock(&self.state);
        let shard = state
            .shards
            .get(index)
            .ok_or_else(|| StreamError::Invalid(format!("no shard behind iterator {iterator}")))?;
        let end = shard
            .records
            .len()
            .min(position.saturating_add(limit.clamp(1, MAX_GET_RECORDS)));
        let records = shard
            .records
            .get(position..end)
            .unwrap_or_default()
            .to_vec();
        let next_iterator = if !shard.open && end >= shard.records.len() {
            None
        } else {
            Some(format!("{index}:{end}"))
        };
        Ok(RecordsPage {
            records,
            next_iterator,
            millis_behind_latest: Some(0),
        })
    }
}

fn sequence_of(record: &StreamRecord) -> SequenceNumber {
    // Records in a MemoryStream always carry the numbers `append` made.
    SequenceNumber::parse(&record.sequence_number).unwrap_or_else(|_| {
        SequenceNumber::parse("0").unwrap_or_else(|_| unreachable!("\"0\" is a sequence number"))
    })
}

/// STATUS in memory: the conditional write compares version keys bytewise, as DynamoDB does.
#[derive(Default)]
pub struct MemoryStatusStore {
    rows: Mutex<HashMap<String, StatusRow>>,
    apply_calls: AtomicU64,
}

impl MemoryStatusStore {
    pub fn apply_calls(&self) -> u64 {
        self.apply_calls.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> HashMap<String, StatusRow> {
        lock(&self.rows).clone()
    }
}

#[async_trait]
impl StatusStore for MemoryStatusStore {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        self.apply_calls.fetch_add(1, Ordering::Relaxed);
        let mut rows = lock(&self.rows);
        match rows.get_mut(&row.id) {
            Some(stored) if stored.version >= row.version => Ok(ApplyOutcome::Stale),
            Some(stored) => {
                *stored = row;
                Ok(ApplyOutcome::Applied)
            }
            None => {
                rows.insert(row.id.clone(), row);
                Ok(ApplyOutcome::Applied)
            }
        }
    }

    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError> {
        Ok(lock(&self.rows).get(id).cloned())
    }
}

/// OPLOG in memory: moves forward only, accumulating `records_applied`.
#[derive(Default)]
pub struct MemoryCheckpointStore {
    rows: Mutex<BTreeMap<String, Checkpoint>>,
    advance_calls: AtomicU64,
}

impl MemoryCheckpointStore {
    pub fn advance_calls(&self) -> u64 {
        self.advance_calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        self.advance_calls.fetch_add(1, Ordering::Relaxed);
        let mut rows = lock(&self.rows);
        match rows.get_mut(&checkpoint.shard_id) {
            Some(stored) if stored.sequence_number >= checkpoint.sequence_number => {
                Ok(AdvanceOutcome::AlreadyPast)
            }
            Some(stored) => {
                let total = stored.records_applied + checkpoint.records_applied;
                *stored = Checkpoint {
                    records_applied: total,
                    ..checkpoint.clone()
                };
                Ok(AdvanceOutcome::Advanced)
            }
            None => {
                rows.insert(checkpoint.shard_id.clone(), checkpoint.clone());
                Ok(AdvanceOutcome::Advanced)
            }
        }
    }

    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(lock(&self.rows).get(shard_id).cloned())
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(lock(&self.rows).values().cloned().collect())
    }
}

/// DEADLETTER in memory, keyed by (shard, sequence number).
#[derive(Default)]
pub struct MemoryDeadLetterStore {
    letters: Mutex<BTreeMap<(String, String), DeadLetter>>,
    put_calls: AtomicU64,
}

impl MemoryDeadLetterStore {
    pub fn put_calls(&self) -> u64 {
        self.put_calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetterStore {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        lock(&self.letters).insert(
            (letter.shard_id.clone(), letter.sequence_number.clone()),
            letter.clone(),
        );
        Ok(())
    }

    async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(lock(&self.letters).values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> OutgoingRecord {
        OutgoingRecord {
            partition_key: key.into(),
            data: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn routes_by_md5_into_contiguous_ranges() {
        let stream = MemoryStream::new(4);
        {
            let state = lock(&stream.state);
            assert_eq!(state.shards[0].starting_hash_key, 0);
            assert_eq!(state.shards[3].ending_hash_key, u128::MAX);
            for pair in state.shards.windows(2) {
                assert_eq!(pair[0].ending_hash_key + 1, pair[1].starting_hash_key);
            }
        }
        // The same key always lands on the same shard, with increasing sequence numbers.
        let a = stream.put(&record("order-1")).await.unwrap();
        let b = stream.put(&record("order-1")).await.unwrap();
        assert_eq!(a.shard_id, b.shard_id);
        assert!(
            SequenceNumber::parse(&a.sequence_number).unwrap()
                < SequenceNumber::parse(&b.sequence_number).unwrap()
        );
        let expected = hash_key("order-1") / (u128::MAX / 4);
        assert_eq!(a.shard_id, shard_name(expected.min(3) as usize));
    }

    #[tokio::test]
    async fn split_closes_the_parent_after_its_records() {
        let stream = MemoryStream::new(1);
        stream.put(&record("x")).await.unwrap();
        let (left, right) = stream.split_shard("shardId-000000000000").unwrap();
        let it = stream
            .shard_iterator("shardId-000000000000", &StartPosition::TrimHorizon)
            .await
            .unwrap();
        let page = stream.get_records(&it, 100).await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.next_iterator, None);
        let after = stream.put(&record("x")).await.unwrap();
        assert!(after.shard_id == left || after.shard_id == right);
        let shards = stream.list_shards().await.unwrap();
        assert_eq!(shards.len(), 3);
        assert_eq!(
            shards[1].parent_shard_id.as_deref(),
            Some("shardId-000000000000")
        );
    }

    #[tokio::test]
    async fn put_many_enforces_kinesis_limits() {
        let stream = MemoryStream::new(1);
        assert!(stream.put_many(&[]).await.is_err());
        let too_many = vec![record("a"); MAX_BATCH_EVENTS + 1];
        assert!(matches!(
            stream.put_many(&too_many).await,
            Err(StreamError::Invalid(_))
        ));
        let ok = vec![record("a"); MAX_BATCH_EVENTS];
        assert_eq!(stream.put_many(&ok).await.unwrap().len(), MAX_BATCH_EVENTS);
        assert!(matches!(
            stream.put(&record("")).await,
            Err(StreamError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn iterators_position_by_sequence_number() {
        let stream = MemoryStream::new(1);
        let mut acks = Vec::new();
        for _ in 0..5 {
            acks.push(stream.put(&record("k")).await.unwrap());
        }
        let seq = |i: usize| SequenceNumber::parse(&acks[i].sequence_number).unwrap();
        let at = stream
            .shard_iterator("shardId-000000000000", &StartPosition::AtSequence(seq(2)))
            .await
            .unwrap();
        let page = stream.get_records(&at, 100).await.unwrap();
        assert_eq!(page.records[0].sequence_number, acks[2].sequence_number);
        let after = stream
            .shard_iterator(
                "shardId-000000000000",
                &StartPosition::AfterSequence(seq(2)),
            )
            .await
            .unwrap();
        let page = stream.get_records(&after, 1).await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].sequence_number, acks[3].sequence_number);
        assert!(
            page.next_iterator.is_some(),
            "an open shard always has a next iterator"
        );
    }
}
