//! Ports: what the pipeline needs from a stream and from its tables, one trait per
//! capability (writing the stream, reading a shard, reading or writing each table), so that what a
//! function or a test double needs is visible in its types and nothing implements a method it
//! never serves. Each has a real AWS adapter and an in-memory adapter with the same semantics;
//! [`crate::adapters::Adapters`] builds them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::digest::sha256_hex;
use crate::domain::idempotency::IdempotencyRecord;
use crate::domain::limits::{MAX_DEAD_LETTER_RAW_BYTES, MAX_DEAD_LETTER_REASON_CHARS};
use crate::domain::{EventTime, SequenceNumber, VersionKey};

mod archive;
mod changes;
mod progress;
mod status_view;
pub use archive::*;
pub use changes::*;
pub use status_view::*;

/// A record to put on the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub partition_key: String,
    pub data: Bytes,
}

impl OutgoingRecord {
    /// What the record counts against Kinesis's per-record and per-call size limits.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// Kinesis's acknowledgement: the record is durable at this position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutAck {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
}

/// One entry of a PutRecords answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutEntryResult {
    Accepted(PutAck),
    Rejected { throttled: bool, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub adjacent_parent_shard_id: Option<String>,
    /// Takes new records; a closed shard (the parent of a split or merge) is only read to its end.
    pub open: bool,
}

/// Where to start reading a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    TrimHorizon,
    AtSequence(SequenceNumber),
    AfterSequence(SequenceNumber),
}

/// A record read from a shard, as Lambda's event source mapping hands it to the processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    pub sequence_number: SequenceNumber,
    pub partition_key: String,
    pub data: Bytes,
    pub approximate_arrival: Option<EventTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordsPage {
    pub records: Vec<StreamRecord>,
    /// `None` once a closed shard (after a split or merge) has been read to its end.
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream throttled: {0}")]
    Throttled(String),
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("rejected by the stream: {0}")]
    Invalid(String),
    #[error("stream unavailable: {0}")]
    Unavailable(String),
}

/// Writing the partitioned log: what ingest needs.
#[async_trait]
pub trait StreamWriter: Send + Sync {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError>;
    /// One PutRecords call: at most 500 entries and 5 MiB; results in request order.
    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError>;
}

/// Reading the log shard by shard: what a consumer loop (the mapping emulator, replay) needs.
#[async_trait]
pub trait ShardReader: Send + Sync {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError>;
    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError>;
    async fn get_records(&self, iterator: &str, limit: usize) -> Result<RecordsPage, StreamError>;
}

/// A STATUS row: the newest event for an id and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRow {
    pub id: String,
    pub status: String,
    pub timestamp: String,
    /// Compact JSON object text.
    pub data: Option<String>,
    pub received_at: String,
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    /// Compared bytewise by the conditional write: a row replaces another only with a greater key.
    pub version: VersionKey,
    pub updated_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The row was absent or older: it now holds this event.
    Applied,
    /// The stored row is as new or newer: nothing changed. The normal outcome of redelivery.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store throttled: {0}")]
    Throttled(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A refusal no retry can fix and that would refuse any item: a missing table, a corrupt
    /// row. Retried like an outage, since only an operator can fix it and no record is at fault.
    #[error("store rejected the request: {0}")]
    Rejected(String),
    /// A refusal of this one item that no retry can fix (DynamoDB: over the 400 KB item limit).
    /// The record it came from is poison: the processor sets it aside instead of retrying.
    #[error("store refused this item: {0}")]
    ItemRejected(String),
}

/// Writing STATUS: what the processor needs.
#[async_trait]
pub trait StatusWriter: Send + Sync {
    /// Writes the row only if the id is absent or its stored version is lower. Takes the row by
    /// value so adapters move its strings instead of copying them.
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError>;
}

/// Reading STATUS (strongly consistent): what the query routes need.
#[async_trait]
pub trait StatusReader: Send + Sync {
    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError>;
}

/// One page of STATUS, by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusPage {
    pub rows: Vec<StatusRow>,
    /// Where the next page starts (pass it back); `None` after the last page.
    pub next: Option<String>,
}

/// Reading all of STATUS, page by page: what `tidemark verify` compares.
#[async_trait]
pub trait StatusScanner: Send + Sync {
    /// The page after `start` (a previous page's `next`); the first page with `None`.
    async fn scan_page(&self, start: Option<&str>) -> Result<StatusPage, StoreError>;
}

/// How far a shard has been applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    pub updated_at: String,
    /// Records covered by checkpoints of this shard so far (a running total in the store; the
    /// amount of one advance when passed to `advance`).
    pub records_applied: u64,
    /// Age of the checkpointed record when it was checkpointed.
    pub lag_ms: u64,
    /// A second STATUS table every batch up to this checkpoint was also applied to, first
    /// (during a switch to a rebuilt table: [`crate::run::rebuild::follow`]); `None` otherwise.
    pub mirrored_into: Option<String>,
}

/// A batch the consumer could not apply in full: the shard holds records up to
/// `sequence_number` past its checkpoint. `since` is the first such batch since the checkpoint
/// last moved (the store keeps the earliest; moving the checkpoint clears it), `at` the latest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    pub since: String,
    pub at: String,
}

/// What OPLOG knows of one shard: its checkpoint, if it has one yet, and whether the consumer is
/// behind (a batch it could not apply in full).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardProgress {
    pub shard_id: String,
    pub checkpoint: Option<Checkpoint>,
    pub behind: Option<Behind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvanceOutcome {
    Advanced,
    /// The stored checkpoint is already at or past this one; nothing changed.
    AlreadyPast,
}

/// Moving OPLOG: what a consumer loop does after a batch (see [`crate::consumers`]).
#[async_trait]
pub trait CheckpointWriter: Send + Sync {
    /// Moves the shard's checkpoint forward; never backwards. Moving it clears `Behind::since`.
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError>;
    /// Records that a batch could not be applied in full (see [`Behind`]); keeps the earliest
    /// `since` until the checkpoint moves.
    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError>;
}

/// Reading OPLOG: where a shard resumes, and `GET /shards`.
#[async_trait]
pub trait CheckpointReader: Send + Sync {
    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Every checkpoint, by shard id.
    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError>;
    /// Every shard OPLOG knows, with its checkpoint and whether it is behind, by shard id.
    async fn progress(&self) -> Result<Vec<ShardProgress>, StoreError>;
}

/// A record that can never be applied, kept with its raw bytes and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    pub partition_key: String,
    /// The record's bytes, or their first `MAX_DEAD_LETTER_RAW_BYTES` when longer.
    pub raw: Bytes,
    /// The record's full size in bytes.
    pub raw_size: usize,
    /// Hex SHA-256 of the full bytes, when `raw` had to be cut.
    pub raw_sha256: Option<String>,
    pub reason: String,
    pub dead_lettered_at: String,
    /// Unix seconds after which DynamoDB's TTL may delete the item; `None` keeps it.
    pub expires_at: Option<i64>,
}

impl DeadLetter {
    /// A dead letter that always fits a DynamoDB item: raw bytes past
    /// `MAX_DEAD_LETTER_RAW_BYTES` are cut (their size and SHA-256 kept), and the reason is cut
    /// to `MAX_DEAD_LETTER_REASON_CHARS`.
    pub fn new(
        shard_id: &str,
        record: &StreamRecord,
        reason: &str,
        dead_lettered_at: &str,
    ) -> Self {
        let data = &record.data;
        let (raw, raw_sha256) = if data.len() > MAX_DEAD_LETTER_RAW_BYTES {
            (
                data.slice(..MAX_DEAD_LETTER_RAW_BYTES),
                Some(sha256_hex(data)),
            )
        } else {
            (data.clone(), None)
        };
        let reason = match reason.char_indices().nth(MAX_DEAD_LETTER_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &reason[..cut]),
            None => reason.to_owned(),
        };
        Self {
            shard_id: shard_id.to_owned(),
            sequence_number: record.sequence_number.clone(),
            partition_key: record.partition_key.clone(),
            raw,
            raw_size: data.len(),
            raw_sha256,
            reason,
            dead_lettered_at: dead_lettered_at.to_owned(),
            expires_at: None,
        }
    }
}

/// Setting a record aside: what the processor needs.
#[async_trait]
pub trait DeadLetterWriter: Send + Sync {
    /// Idempotent: the key is (shard, sequence number).
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError>;
}

/// Reading DEADLETTER: what an operator (and the tests) look at.
#[async_trait]
pub trait DeadLetterReader: Send + Sync {
    async fn list(&self) -> Result<Vec<DeadLetter>, StoreError>;
}

/// Idempotency keys: what ingest needs to answer a retried request once (see
/// [`crate::domain::idempotency`] for the life of a key). Every write is conditional, so two
/// concurrent requests with one key can never both claim it.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Writes `record` (in progress) if its key is free: absent, or held by a record that expired
    /// before `now`. Otherwise writes nothing and returns the record holding the key.
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Moves an in-progress key's lease to `lease_until_ms`, only if its lease is still
    /// `expected_lease_ms` (its holder's lease ran out and nobody else took it over).
    async fn take_over(
        &self,
        key: &str,
        expected_lease_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Stores the answer, only if the key is still in progress under `lease_ms` (ours).
    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError>;
    /// Frees the key (its put failed), only if it is still in progress under `lease_ms`.
    async fn release(&self, key: &str, lease_ms: i64) -> Result<bool, StoreError>;
}

/// A shared adapter is an adapter too (`Arc<MemoryStatusStore>`, `Arc<dyn StatusWriter>`).
macro_rules! forward_arc {
    ($trait:ident { $($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl<T: $trait + ?Sized> $trait for Arc<T> {
            $(async fn $method(&self, $($arg: $ty),*) -> $ret { (**self).$method($($arg),*).await })*
        }
    };
}

forward_arc!(StreamWriter {
    put(record: &OutgoingRecord) -> Result<PutAck, StreamError>;
    put_many(records: &[OutgoingRecord]) -> Result<Vec<PutEntryResult>, StreamError>;
});
forward_arc!(ShardReader {
    list_shards() -> Result<Vec<ShardInfo>, StreamError>;
    shard_iterator(shard_id: &str, start: &StartPosition) -> Result<String, StreamError>;
    get_records(iterator: &str, limit: usize) -> Result<RecordsPage, StreamError>;
});
forward_arc!(StatusWriter { apply(row: StatusRow) -> Result<ApplyOutcome, StoreError>; });
forward_arc!(StatusReader { get(id: &str) -> Result<Option<StatusRow>, StoreError>; });
forward_arc!(StatusScanner { scan_page(start: Option<&str>) -> Result<StatusPage, StoreError>; });
forward_arc!(CheckpointWriter {
    advance(checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError>;
    note_behind(behind: &Behind) -> Result<(), StoreError>;
});
forward_arc!(CheckpointReader {
    get(shard_id: &str) -> Result<Option<Checkpoint>, StoreError>;
    list() -> Result<Vec<Checkpoint>, StoreError>;
    progress() -> Result<Vec<ShardProgress>, StoreError>;
});
forward_arc!(DeadLetterWriter { put(letter: &DeadLetter) -> Result<(), StoreError>; });
forward_arc!(DeadLetterReader { list() -> Result<Vec<DeadLetter>, StoreError>; });
forward_arc!(ArchiveWriter { put(key: &str, body: Bytes) -> Result<(), StoreError>; });
forward_arc!(ArchiveReader {
    list(start_after: Option<&str>) -> Result<ArchivePage, StoreError>;
    get(key: &str) -> Result<Bytes, StoreError>;
});
forward_arc!(HistoryWriter {
    put_many(entries: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError>;
});
forward_arc!(HistoryReader {
    page(id: &str, before: Option<&VersionKey>, limit: usize) -> Result<HistoryPage, StoreError>;
});
forward_arc!(IdempotencyStore {
    claim(record: &IdempotencyRecord, now: EventTime) -> Result<Option<IdempotencyRecord>, StoreError>;
    take_over(key: &str, expected_lease_ms: i64, lease_until_ms: i64) -> Result<bool, StoreError>;
    complete(key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError>;
    release(key: &str, lease_ms: i64) -> Result<bool, StoreError>;
});

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: Vec<u8>) -> StreamRecord {
        StreamRecord {
            sequence_number: SequenceNumber::parse("7").unwrap(),
            partition_key: "k".into(),
            data: Bytes::from(data),
            approximate_arrival: None,
        }
    }

    /// A dead letter always fits a DynamoDB item, and says what it cut.
    #[test]
    fn dead_letters_are_bounded() {
        let small = DeadLetter::new("s", &record(b"garbage".to_vec()), "undecodable", "t");
        assert_eq!((small.raw.as_ref(), small.raw_size), (&b"garbage"[..], 7));
        assert_eq!(small.raw_sha256, None);

        let huge = vec![b'x'; 1024 * 1024];
        let letter = DeadLetter::new("s", &record(huge.clone()), &"é".repeat(10_000), "t");
        assert_eq!(letter.raw.len(), MAX_DEAD_LETTER_RAW_BYTES);
        assert_eq!(letter.raw_size, huge.len());
        use sha2::{Digest, Sha256};
        let expected: String = Sha256::digest(&huge)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(letter.raw_sha256, Some(expected));
        assert_eq!(
            letter.reason.chars().count(),
            MAX_DEAD_LETTER_REASON_CHARS + 1
        );
        assert!(letter.reason.ends_with('…'));
    }
}
