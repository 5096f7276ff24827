//! A Kinesis stream in memory: routing by MD5 of the partition key into shard hash-key ranges,
//! increasing sequence numbers, closed parent shards after a split, Kinesis's size limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use md5::{Digest, Md5};

use crate::domain::limits::{
    MAX_BATCH_EVENTS, MAX_GET_RECORDS, MAX_ID_CHARS, MAX_PUT_RECORDS_BYTES, MAX_RECORD_BYTES,
};
use crate::domain::{Clock, SequenceNumber, SystemClock};
use crate::ports::*;

use super::lock;

/// The 128-bit hash key Kinesis routes a partition key by.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

pub(super) struct MemShard {
    info: ShardInfo,
    pub(super) starting_hash_key: u128,
    pub(super) ending_hash_key: u128,
    /// The records kept, oldest first; positions in iterators count from the shard's first
    /// record ever, so they stay valid when the oldest are trimmed.
    records: Vec<StreamRecord>,
    /// How many records were trimmed from the front.
    trimmed: usize,
}

pub(super) struct StreamState {
    pub(super) shards: Vec<MemShard>,
    next_sequence: u128,
}

/// A Kinesis stream in memory.
pub struct MemoryStream {
    pub(super) state: Mutex<StreamState>,
    put_calls: AtomicU64,
    put_many_calls: AtomicU64,
    get_records_calls: AtomicU64,
}

/// Kinesis's name of the stream's `index`th shard.
pub fn shard_name(index: usize) -> String {
    format!("shardId-{index:012}")
}

/// Contiguous hash-key ranges of (almost) equal width covering 0..=u128::MAX, as CreateStream
/// makes for `shard_count` shards.
pub fn even_hash_ranges(shard_count: usize) -> Vec<(u128, u128)> {
    let count = shard_count.max(1) as u128;
    let step = u128::MAX / count;
    (0..count)
        .map(|i| {
            let start = if i == 0 { 0 } else { i * step + 1 };
            let end = if i + 1 == count {
                u128::MAX
            } else {
                (i + 1) * step
            };
            (start, end)
        })
        .collect()
}

/// The number in a sequence number this stream wrote (`4959` and a 52-digit count), or the
/// whole number of any other (compared as numbers all the same).
pub fn sequence_count(sequence: &SequenceNumber) -> Option<u128> {
    let digits = sequence.as_str();
    digits
        .strip_prefix("4959")
        .filter(|rest| rest.len() == 52)
        .unwrap_or(digits)
        .parse::<u128>()
        .ok()
}

/// The sequence number of the stream's `count`th record, shaped like Kinesis's 56 digits.
pub fn sequence_number_of(count: u128) -> Result<SequenceNumber, StreamError> {
    SequenceNumber::parse(&format!("4959{count:052}"))
        .map_err(|e| StreamError::Unavailable(format!("sequence number {count}: {e}")))
}

impl MemoryStream {
    /// A stream of `shard_count` shards splitting the hash-key space evenly, as CreateStream does.
    pub fn new(shard_count: usize) -> Self {
        let shards = even_hash_ranges(shard_count)
            .into_iter()
            .enumerate()
            .map(|(i, (starting_hash_key, ending_hash_key))| MemShard {
                info: ShardInfo {
                    shard_id: shard_name(i),
                    parent_shard_id: None,
                    adjacent_parent_shard_id: None,
                    open: true,
                },
                starting_hash_key,
                ending_hash_key,
                records: Vec::new(),
                trimmed: 0,
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
            .position(|s| s.info.shard_id == shard_id && s.info.open)
            .ok_or_else(|| StreamError::NotFound(format!("open shard {shard_id}")))?;
        let (start, end) = {
            let parent = &mut state.shards[index];
            parent.info.open = false;
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
                    open: true,
                },
                starting_hash_key: lo,
                ending_hash_key: hi,
                records: Vec::new(),
                trimmed: 0,
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

    /// Drops the shard's records up to and including `through`, as Kinesis drops records past
    /// their retention: `serve` calls it with the checkpoint every consumer has passed, so memory
    /// holds only what is still to be consumed. Returns how many were dropped.
    pub fn trim_through(&self, shard_id: &str, through: &SequenceNumber) -> usize {
        let mut state = lock(&self.state);
        let Some(shard) = state
            .shards
            .iter_mut()
            .find(|s| s.info.shard_id == shard_id)
        else {
            return 0;
        };
        let drop = shard
            .records
            .partition_point(|r| r.sequence_number <= *through);
        shard.records.drain(..drop);
        shard.trimmed += drop;
        drop
    }

    /// Records held across all shards (for tests and `serve`'s memory figures).
    pub fn retained_records(&self) -> usize {
        lock(&self.state)
            .shards
            .iter()
            .map(|s| s.records.len())
            .sum()
    }

    /// Makes every record put from now on numbered after `sequence` (a stream restarted over an
    /// archive: new records must not take the numbers, and so the archive keys, of old ones).
    pub fn continue_after(&self, sequence: &SequenceNumber) {
        let count = sequence_count(sequence).unwrap_or(u128::MAX - 1);
        let mut state = lock(&self.state);
        state.next_sequence = state.next_sequence.max(count.saturating_add(1));
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
            .find(|s| s.info.open && s.starting_hash_key <= hash && hash <= s.ending_hash_key)
            .ok_or_else(|| StreamError::Unavailable("no open shard covers the hash key".into()))?;
        // Shaped like Kinesis's 56-digit numbers, and increasing across the whole stream.
        let sequence_number = sequence_number_of(sequence)?;
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

/// Kinesis's bounds on one PutRecords request: 1 to 500 records, 5 MiB in all, each record
/// valid. Like Kinesis, a request with an invalid entry is refused whole: nothing is appended.
pub fn validate_put_records(records: &[OutgoingRecord]) -> Result<(), StreamError> {
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
    records.iter().try_for_each(validate_record)
}

/// Kinesis's bounds on one record: a partition key of 1 to 256 characters, 1 MiB in all.
pub fn validate_record(record: &OutgoingRecord) -> Result<(), StreamError> {
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
impl StreamWriter for MemoryStream {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        self.append(record)
    }

    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        self.put_many_calls.fetch_add(1, Ordering::Relaxed);
        validate_put_records(records)?;
        records
            .iter()
            .try_fold(Vec::with_capacity(records.len()), |mut results, r| {
                results.push(PutEntryResult::Accepted(self.append(r)?));
                Ok(results)
            })
    }
}

#[async_trait]
impl ShardReader for MemoryStream {
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
        let kept = match start {
            StartPosition::TrimHorizon => 0,
            StartPosition::AtSequence(at) => {
                shard.records.partition_point(|r| r.sequence_number < *at)
            }
            StartPosition::AfterSequence(after) => shard
                .records
                .partition_point(|r| r.sequence_number <= *after),
        };
        let position = shard.trimmed + kept;
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
        // An iterator into trimmed records reads on from the oldest kept one, as Kinesis does
        // from its trim horizon.
        let start = position.saturating_sub(shard.trimmed);
        let end = shard
            .records
            .len()
            .min(start.saturating_add(limit.clamp(1, MAX_GET_RECORDS)));
        let records = shard.records.get(start..end).unwrap_or_default().to_vec();
        let next_iterator = if !shard.info.open && end >= shard.records.len() {
            None
        } else {
            Some(format!("{index}:{}", shard.trimmed + end))
        };
        Ok(RecordsPage {
            records,
            next_iterator,
            millis_behind_latest: Some(0),
        })
    }
}
