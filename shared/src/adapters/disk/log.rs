//! The stream on disk: per shard, records in sequence-number order in one redb file, appended by
//! one writer thread in group commits, read by the consumers' loops like Kinesis's shards.
//!
//! Durability: an append is acknowledged only after the commit that holds it returned, and a
//! commit returns only after redb's fsync (`Durability::Immediate`, its default). Appends that
//! arrive while a commit is under way wait for the next one and share it (group commit), so
//! concurrent posts pay for one fsync together, not one each.
//!
//! Numbering: the stream's `count`th record is `4959` and `count` in 52 digits, as in
//! [`MemoryStream`](crate::adapters::memory::MemoryStream), counted across shards and continued
//! from the highest number in the file when it is opened again, so a number is never given
//! twice, crash or not (a commit that did not complete acknowledged nothing; its numbers are
//! skipped, never reused).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::worker::Worker;
use crate::adapters::memory::{
    even_hash_ranges, hash_key, sequence_count, sequence_number_of, shard_name,
    validate_put_records, validate_record,
};
use crate::domain::limits::MAX_GET_RECORDS;
use crate::domain::{Clock, EventTime, SequenceNumber, SystemClock};
use crate::ports::*;

/// (shard index, record number) → arrival time, partition key and data.
const RECORDS: TableDefinition<(u32, u128), &[u8]> = TableDefinition::new("records");
/// "shards" → the shard count the file was created with.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Pages of the log redb may keep in memory. The consumers read the log's tail just after it
/// is written, so a small cache serves them; redb's default (1 GiB) would let memory grow with
/// the history until it is reached.
const LOG_CACHE_BYTES: usize = 16 << 20;
/// Writes queued for the writer thread before `put` waits for room (backpressure).
const QUEUE: usize = 1024;
/// Writes one commit takes at most, so one commit's latency stays bounded under load.
const MAX_GROUP: usize = 512;

/// Records to append to their shards (by index), and where their acknowledgements go.
struct Write {
    records: Vec<(u32, OutgoingRecord)>,
    reply: oneshot::Sender<Result<Vec<PutAck>, StreamError>>,
}

/// A stream of a fixed number of shards in `DIR/log.redb`.
pub struct DiskLog {
    db: Arc<Database>,
    path: PathBuf,
    ranges: Vec<(u128, u128)>,
    next: Arc<Mutex<u128>>,
    writer: Worker<Write>,
}

fn failed(path: &Path, e: impl std::fmt::Display) -> String {
    format!("the log {}: {e}", path.display())
}

impl DiskLog {
    /// Opens (or creates) the log in `dir` with `shards` shards. A log created with another
    /// shard count is refused: moving ids between shards would break each shard's order per id.
    pub fn open(dir: &Path, shards: usize) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let path = dir.join("log.redb");
        let db = Database::builder()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(&path)
            .map_err(|e| format!("the log {}", super::open_failed(&path, e)))?;
        let wanted = shards.max(1) as u64;
        let txn = db.begin_write().map_err(|e| failed(&path, e))?;
        let mut next = 1u128;
        {
            let mut meta = txn.open_table(META).map_err(|e| failed(&path, e))?;
            let stored = meta
                .get("shards")
                .map_err(|e| failed(&path, e))?
                .map(|v| v.value());
            match stored {
                Some(count) if count != wanted => {
                    return Err(format!(
                        "the log {} has {count} shards; start with --shards {count} (or another \
                         --data-dir)",
                        path.display()
                    ))
                }
                Some(_) => {}
                None => {
                    meta.insert("shards", wanted)
                        .map_err(|e| failed(&path, e))?;
                }
            }
            let records = txn.open_table(RECORDS).map_err(|e| failed(&path, e))?;
            for shard in 0..wanted as u32 {
                let newest = records
                    .range((shard, 0)..=(shard, u128::MAX))
                    .map_err(|e| failed(&path, e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| failed(&path, e))?;
                if let Some((key, _)) = newest {
                    next = next.max(key.value().1.saturating_add(1));
                }
            }
        }
        txn.commit().map_err(|e| failed(&path, e))?;
        let db = Arc::new(db);
        let next = Arc::new(Mutex::new(next));
        let writer = Writer {
            db: db.clone(),
            path: path.clone(),
            next: next.clone(),
            shard_names: (0..wanted as usize).map(shard_name).collect(),
        };
        let writer = Worker::start("tidemark-log", QUEUE, move |queue| writer.run(queue))
            .map_err(|e| failed(&path, e))?;
        Ok(Self {
            db,
            path,
            ranges: even_hash_ranges(wanted as usize),
            next,
            writer,
        })
    }

    /// Opens the log `serve` keeps in `dir`, with the shard count it was created with.
    pub fn open_existing(dir: &Path) -> Result<Self, String> {
        let path = dir.join("log.redb");
        if !path.exists() {
            return Err(format!(
                "{} does not exist: is {} a `tidemark serve` data directory?",
                path.display(),
                dir.display()
            ));
        }
        let shards = {
            let db = Database::builder()
                .set_cache_size(LOG_CACHE_BYTES)
                .open(&path)
                .map_err(|e| format!("the log {}", super::open_failed(&path, e)))?;
            let txn = db.begin_read().map_err(|e| failed(&path, e))?;
            let meta = txn.open_table(META).map_err(|e| failed(&path, e))?;
            let shards = meta.get("shards").map_err(|e| failed(&path, e))?;
            shards.map_or(1, |count| count.value())
        };
        Self::open(dir, shards as usize)
    }

    /// Numbers every record appended from now on after `sequence` (a log started beside an
    /// archive an older `serve` wrote: its records' numbers must not be given again).
    pub fn continue_after(&self, sequence: &SequenceNumber) {
        let count = sequence_count(sequence).unwrap_or(u128::MAX - 1);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *next = (*next).max(count.saturating_add(1));
    }

    fn shard_of(&self, partition_key: &str) -> u32 {
        let hash = hash_key(partition_key);
        self.ranges
            .iter()
            .position(|(start, end)| *start <= hash && hash <= *end)
            .unwrap_or(0) as u32
    }

    async fn append(
        &self,
        records: Vec<(u32, OutgoingRecord)>,
    ) -> Result<Vec<PutAck>, StreamError> {
        let (reply, answer) = oneshot::channel();
        let gone =
            || StreamError::Unavailable(format!("the log {} is closed", self.path.display()));
        self.writer
            .send(Write { records, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StreamError {
        StreamError::Unavailable(failed(&self.path, e))
    }
}

/// The one thread that writes the file: takes what is queued, commits it, answers everyone.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    next: Arc<Mutex<u128>>,
    shard_names: Vec<String>,
}

impl Writer {
    fn run(self, mut queue: mpsc::Receiver<Write>) {
        while let Some(first) = queue.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(write) => group.push(write),
                    Err(_) => break,
                }
            }
            let outcome = self.commit(&group);
            for (index, write) in group.into_iter().enumerate() {
                let _ = write.reply.send(match &outcome {
                    Ok(acks) => acks
                        .get(index)
                        .cloned()
                        .ok_or_else(|| StreamError::Unavailable("no answer".into())),
                    Err(e) => Err(StreamError::Unavailable(e.clone())),
                });
            }
        }
    }

    /// One transaction for the whole group: all of it is durable when this returns `Ok`, none
    /// of it otherwise.
    fn commit(&self, group: &[Write]) -> Result<Vec<Vec<PutAck>>, String> {
        let fail = |e: redb::Error| failed(&self.path, super::explain(e));
        let mut txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        // The allocator's state is saved with each commit, meant to spare opening the file after
        // a crash a repair walk over all of it (measured: BENCHMARKS.md, restart after kill -9).
        txn.set_quick_repair(true);
        let mut answers = Vec::with_capacity(group.len());
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let arrival = SystemClock.now();
            for write in group {
                let mut acks = Vec::with_capacity(write.records.len());
                for (shard, record) in &write.records {
                    let count = *next;
                    *next += 1;
                    let body = encode(record, arrival);
                    records
                        .insert((*shard, count), body.as_slice())
                        .map_err(|e| fail(e.into()))?;
                    acks.push(PutAck {
                        shard_id: self.shard_names[*shard as usize].clone(),
                        sequence_number: sequence_number_of(count)
                            .map_err(|e| failed(&self.path, e))?,
                    });
                }
                answers.push(acks);
            }
        }
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(answers)
    }
}

/// Arrival time (unix nanoseconds, 16 bytes), the partition key's length (2 bytes) and the key,
/// then the data.
fn encode(record: &OutgoingRecord, arrival: EventTime) -> Vec<u8> {
    let key = record.partition_key.as_bytes();
    let mut body = Vec::with_capacity(18 + key.len() + record.data.len());
    body.extend_from_slice(&arrival.unix_nanos().to_le_bytes());
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(&record.data);
    body
}

fn decode(count: u128, body: &[u8]) -> Result<StreamRecord, String> {
    let short = || format!("record {count} is cut short");
    let nanos = i128::from_le_bytes(
        body.get(..16)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    let length = u16::from_le_bytes(
        body.get(16..18)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    ) as usize;
    let key = body.get(18..18 + length).ok_or_else(short)?;
    Ok(StreamRecord {
        sequence_number: sequence_number_of(count).map_err(|e| e.to_string())?,
        partition_key: String::from_utf8_lossy(key).into_owned(),
        data: Bytes::copy_from_slice(body.get(18 + length..).unwrap_or_default()),
        approximate_arrival: Some(EventTime::from_unix_nanos(nanos)),
    })
}

fn parse_iterator(iterator: &str) -> Result<(u32, u128), StreamError> {
    let invalid = || StreamError::Invalid(format!("not a shard iterator: {iterator}"));
    let (shard, after) = iterator.split_once(':').ok_or_else(invalid)?;
    Ok((
        shard.parse().map_err(|_| invalid())?,
        after.parse().map_err(|_| invalid())?,
    ))
}

#[async_trait]
impl StreamWriter for DiskLog {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        validate_record(record)?;
        let shard = self.shard_of(&record.partition_key);
        let mut acks = self.append(vec![(shard, record.clone())]).await?;
        acks.pop()
            .ok_or_else(|| StreamError::Unavailable("the log acknowledged nothing".into()))
    }

    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        validate_put_records(records)?;
        let routed = records
            .iter()
            .map(|r| (self.shard_of(&r.partition_key), r.clone()))
            .collect();
        let acks = self.append(routed).await?;
        Ok(acks.into_iter().map(PutEntryResult::Accepted).collect())
    }
}

#[async_trait]
impl ShardReader for DiskLog {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        Ok((0..self.ranges.len())
            .map(|index| ShardInfo {
                shard_id: shard_name(index),
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
        let index = (0..self.ranges.len())
            .find(|i| shard_name(*i) == shard_id)
            .ok_or_else(|| StreamError::NotFound(format!("shard {shard_id}")))?;
        let count = |sequence: &SequenceNumber| {
            sequence_count(sequence).ok_or_else(|| {
                StreamError::Invalid(format!("{sequence} is not a sequence number of this log"))
            })
        };
        let after = match start {
            StartPosition::TrimHorizon => 0,
            StartPosition::AtSequence(at) => count(at)?.saturating_sub(1),
            StartPosition::AfterSequence(after) => count(after)?,
        };
        Ok(format!("{index}:{after}"))
    }

    async fn get_records(&self, iterator: &str, limit: usize) -> Result<RecordsPage, StreamError> {
        let (shard, after) = parse_iterator(iterator)?;
        if shard as usize >= self.ranges.len() {
            return Err(StreamError::Invalid(format!(
                "no shard behind iterator {iterator}"
            )));
        }
        let txn = self.db.begin_read().map_err(|e| self.unavailable(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.unavailable(e))?;
        let mut records = Vec::new();
        let mut last = after;
        let first = after.saturating_add(1);
        for entry in table
            .range((shard, first)..=(shard, u128::MAX))
            .map_err(|e| self.unavailable(e))?
            .take(limit.clamp(1, MAX_GET_RECORDS))
        {
            let (key, body) = entry.map_err(|e| self.unavailable(e))?;
            let count = key.value().1;
            records.push(decode(count, body.value()).map_err(|e| self.unavailable(e))?);
            last = count;
        }
        Ok(RecordsPage {
            records,
            next_iterator: Some(format!("{shard}:{last}")),
            millis_behind_latest: Some(0),
        })
    }
}
