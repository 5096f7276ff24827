//! In-memory adapters with the semantics of the real services ([`MemoryStream`] for Kinesis,
//! the tables for DynamoDB), and [`MemoryBackend`]: one stream and the tables that
//! [`super::Adapters::in_memory`] serves and tests inspect.

use std::sync::{Arc, Mutex, MutexGuard};

mod archive;
mod changes;
mod status_view;
mod stream;
pub(crate) mod tables;

pub use archive::{MemoryArchive, MemoryHistoryStore};
pub use changes::{MemoryChangeBus, MemoryChangeFeed, DEFAULT_FEED_CAPACITY};
pub use status_view::MemoryStatusView;
pub use stream::{
    even_hash_ranges, hash_key, sequence_count, sequence_number_of, shard_name,
    validate_put_records, validate_record, MemoryStream,
};
pub use tables::{
    MemoryCheckpointStore, MemoryDeadLetterStore, MemoryIdempotencyStore, MemoryStatusStore,
};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the state consistent, so the data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The state of an in-memory pipeline, kept typed so tests and benchmarks can inspect it (rows,
/// call counts) and split shards. Cloning shares it: a pipeline restarted over a clone resumes
/// from its OPLOG, as one restarted against AWS does.
#[derive(Clone)]
pub struct MemoryBackend {
    pub stream: Arc<MemoryStream>,
    pub status: Arc<MemoryStatusStore>,
    pub checkpoints: Arc<MemoryCheckpointStore>,
    pub dead_letters: Arc<MemoryDeadLetterStore>,
    pub idempotency: Arc<MemoryIdempotencyStore>,
    pub archive: Arc<MemoryArchive>,
    pub history: Arc<MemoryHistoryStore>,
    pub status_view: Arc<MemoryStatusView>,
}

impl MemoryBackend {
    /// An empty stream of `shards` shards and empty tables.
    pub fn new(shards: usize) -> Self {
        Self {
            stream: Arc::new(MemoryStream::new(shards)),
            status: Arc::default(),
            checkpoints: Arc::default(),
            dead_letters: Arc::default(),
            idempotency: Arc::default(),
            archive: Arc::default(),
            history: Arc::default(),
            status_view: Arc::default(),
        }
    }

    /// As [`Self::new`], with STATUS keeping a change feed of the newest `capacity` changes
    /// (`GET /changes`). Off by default: it costs a copy of every change.
    pub fn with_change_feed(mut self, capacity: usize) -> Self {
        self.status = Arc::new(MemoryStatusStore::with_change_feed(Arc::new(
            MemoryChangeFeed::new(capacity),
        )));
        self
    }

    /// As [`Self::new`], with the archive kept in (and first read from) `directory`.
    pub fn with_archive(mut self, archive: MemoryArchive) -> Self {
        self.archive = Arc::new(archive);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::stream::shard_name;
    use super::*;
    use crate::domain::limits::MAX_BATCH_EVENTS;
    use crate::ports::*;

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
        assert!(a.sequence_number < b.sequence_number);
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
        let seq = |i: usize| acks[i].sequence_number.clone();
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

    /// Trimming drops what was consumed and keeps iterators handed out before it valid.
    #[tokio::test]
    async fn trimming_keeps_iterators_and_positions() {
        let stream = MemoryStream::new(1);
        let shard = "shardId-000000000000";
        let mut acks = Vec::new();
        for _ in 0..6 {
            acks.push(stream.put(&record("k")).await.unwrap());
        }
        let seq = |i: usize| acks[i].sequence_number.clone();
        let first = stream
            .get_records(
                &stream
                    .shard_iterator(shard, &StartPosition::TrimHorizon)
                    .await
                    .unwrap(),
                2,
            )
            .await
            .unwrap();
        let held = first.next_iterator.unwrap(); // at record 2
        assert_eq!(stream.trim_through(shard, &seq(3)), 4);
        assert_eq!(stream.retained_records(), 2);
        // An iterator into trimmed records reads on from the oldest kept one.
        let page = stream.get_records(&held, 10).await.unwrap();
        assert_eq!(page.records[0].sequence_number, seq(4));
        // Positions after the trim still count from the shard's start.
        let after = stream
            .shard_iterator(shard, &StartPosition::AfterSequence(seq(4)))
            .await
            .unwrap();
        let page = stream.get_records(&after, 10).await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].sequence_number, seq(5));
        let next = page.next_iterator.unwrap();
        let newest = stream.put(&record("k")).await.unwrap();
        let page = stream.get_records(&next, 10).await.unwrap();
        assert_eq!(page.records[0].sequence_number, newest.sequence_number);
        let horizon = stream
            .shard_iterator(shard, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        assert_eq!(
            stream.get_records(&horizon, 10).await.unwrap().records[0].sequence_number,
            seq(4)
        );
        assert_eq!(
            stream.trim_through(shard, &seq(1)),
            0,
            "trimming is idempotent"
        );
    }
}
