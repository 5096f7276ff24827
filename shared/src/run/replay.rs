//! Replaying a range of one shard: what an operator does with a message from the event source
//! mapping's on-failure queue, which names a shard and the sequence range it gave up on.
//!
//! The range is read back from the stream (it stays there for the stream's retention) and runs
//! through the same consumer (the [`crate::consumers::processor::Processor`]) with its original sequence numbers, so versions are exactly
//! what they would have been: newer rows are left alone, older ones are brought forward, and
//! poison goes to DEADLETTER. OPLOG is never written (this loop owns the checkpoint and leaves
//! it alone): the shard's checkpoint has already moved past a given-up range, and moving it to
//! the range's end could otherwise claim records in between that were never applied.

use super::shard_pages::ShardPages;
use crate::consumers::Consumer;
use crate::domain::SequenceNumber;
use crate::ports::{ShardReader, StartPosition, StreamError};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: usize,
    pub applied: usize,
    pub stale: usize,
    pub dead_lettered: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading shard {shard_id}: {source}")]
    Stream {
        shard_id: String,
        source: StreamError,
    },
    #[error("the range starts after it ends ({from} > {to})")]
    EmptyRange {
        from: SequenceNumber,
        to: SequenceNumber,
    },
    #[error("record {sequence_number} could not be applied (see the log); replay again from it")]
    Failed { sequence_number: SequenceNumber },
}

/// Re-applies the records of `shard_id` from `from` to `to`, both included, through `consumer`.
pub async fn replay_range(
    stream: &dyn ShardReader,
    consumer: &dyn Consumer,
    shard_id: &str,
    from: &SequenceNumber,
    to: &SequenceNumber,
) -> Result<ReplayReport, ReplayError> {
    if from > to {
        return Err(ReplayError::EmptyRange {
            from: from.clone(),
            to: to.clone(),
        });
    }
    let stream_error = |source| ReplayError::Stream {
        shard_id: shard_id.to_owned(),
        source,
    };
    let mut pages = ShardPages::open(stream, shard_id, &StartPosition::AtSequence(from.clone()))
        .await
        .map_err(stream_error)?;
    let mut report = ReplayReport::default();
    while let Some(records) = pages.next().await.map_err(stream_error)? {
        // A shard's records come in sequence order: the range ends at the first one past `to`.
        let page_records = records.len();
        let in_range: Vec<_> = records
            .into_iter()
            .take_while(|record| &record.sequence_number <= to)
            .collect();
        if !in_range.is_empty() {
            let outcome = consumer.consume(shard_id, &in_range).await;
            report.records += in_range.len();
            report.applied += outcome.report.applied;
            report.stale += outcome.report.stale;
            report.dead_lettered += outcome.report.dead_lettered;
            if let Some(sequence_number) = outcome.failure {
                return Err(ReplayError::Failed { sequence_number });
            }
        }
        if in_range.len() < page_records {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapters::memory::MemoryBackend;
    use crate::adapters::Adapters;
    use crate::consumers::processor::{Processor, ProcessorSettings};
    use crate::consumers::CheckpointedConsumer;
    use crate::domain::SystemClock;
    use crate::ports::{CheckpointReader, DeadLetterReader, PutAck, RecordsPage, StreamRecord};
    use crate::run::shard_pages::THROTTLED_READ_ATTEMPTS;

    struct Setup {
        memory: MemoryBackend,
        processor: Arc<Processor>,
        /// The same processor run as the mapping runs it: its checkpoints written.
        mapping: CheckpointedConsumer,
    }

    impl Setup {
        async fn replay(
            &self,
            shard: &str,
            from: &PutAck,
            to: &PutAck,
        ) -> Result<ReplayReport, ReplayError> {
            let (from, to) = (&from.sequence_number, &to.sequence_number);
            replay_range(
                self.memory.stream.as_ref(),
                self.processor.as_ref(),
                shard,
                from,
                to,
            )
            .await
        }
    }

    fn setup() -> Setup {
        let adapters = Adapters::memory(1);
        let processor =
            Arc::new(adapters.processor(ProcessorSettings::default(), Arc::new(SystemClock)));
        Setup {
            memory: adapters.memory_backend().expect("in memory").clone(),
            mapping: CheckpointedConsumer::new(processor.clone(), adapters.checkpoint_writer()),
            processor,
        }
    }

    fn put(
        stream: &crate::adapters::memory::MemoryStream,
        id: &str,
        status: &str,
        minute: u32,
    ) -> PutAck {
        let body = format!(
            r#"{{"id":"{id}","status":"{status}","timestamp":"2026-11-22T10:{minute:02}:00Z","received_at":"2026-11-22T11:00:00Z"}}"#
        );
        stream.put_raw(id, body.into()).expect("in-memory put")
    }

    async fn read_all(
        stream: &crate::adapters::memory::MemoryStream,
        shard: &str,
    ) -> Vec<StreamRecord> {
        let iterator = stream
            .shard_iterator(shard, &StartPosition::TrimHorizon)
            .await
            .expect("iterator");
        stream
            .get_records(&iterator, 10_000)
            .await
            .expect("records")
            .records
    }

    /// The mapping gave up on the middle of a shard and the next batch moved OPLOG past it;
    /// replaying the range from the on-failure message applies exactly what was missing,
    /// leaves newer rows and OPLOG alone, and dead-letters the poison in it.
    #[tokio::test]
    async fn replay_applies_a_given_up_range_without_touching_oplog() {
        let s = setup();
        put(&s.memory.stream, "a", "created", 0);
        let first = put(&s.memory.stream, "b", "created", 1);
        put(&s.memory.stream, "a", "shipped", 5);
        s.memory
            .stream
            .put_raw("poison", "not an event".into())
            .expect("put");
        let last = put(&s.memory.stream, "c", "created", 2);
        put(&s.memory.stream, "a", "delivered", 9);
        let shard = first.shard_id.clone();
        let records = read_all(&s.memory.stream, &shard).await;
        assert_eq!(records.len(), 6);

        // Given up: records 1..=4 (b, a shipped, poison, c); applied: the first and the last.
        s.mapping.run_batch(&shard, &records[..1]).await;
        s.mapping.run_batch(&shard, &records[5..]).await;
        let oplog_before = s.memory.checkpoints.get(&shard).await.expect("get");
        assert_eq!(
            s.memory.status.snapshot().len(),
            1,
            "only a is applied so far"
        );

        let report = s.replay(&shard, &first, &last).await.expect("replay");
        assert_eq!(report.records, 4, "exactly the range, both ends included");
        assert_eq!(report.dead_lettered, 1);
        let rows = s.memory.status.snapshot();
        assert_eq!(
            rows["a"].status, "delivered",
            "a newer row is never replaced"
        );
        assert_eq!(rows["b"].status, "created");
        assert_eq!(rows["c"].status, "created");
        assert_eq!(s.memory.dead_letters.list().await.expect("list").len(), 1);
        assert_eq!(
            s.memory.checkpoints.get(&shard).await.expect("get"),
            oplog_before,
            "replay never writes OPLOG"
        );

        // Replaying again changes nothing.
        let before = s.memory.status.snapshot();
        let again = s.replay(&shard, &first, &last).await.expect("replay");
        assert_eq!(again.applied, 0);
        assert_eq!(s.memory.status.snapshot(), before);
    }

    /// A range ahead of the checkpoint must not drag OPLOG over the unapplied records before it.
    #[tokio::test]
    async fn replay_ahead_of_the_checkpoint_leaves_it_where_it_is() {
        let s = setup();
        put(&s.memory.stream, "a", "created", 0);
        put(&s.memory.stream, "b", "created", 1);
        let ahead = put(&s.memory.stream, "c", "created", 2);
        let shard = ahead.shard_id.clone();
        let records = read_all(&s.memory.stream, &shard).await;
        s.mapping.run_batch(&shard, &records[..1]).await;
        let oplog_before = s.memory.checkpoints.get(&shard).await.expect("get");

        s.replay(&shard, &ahead, &ahead).await.expect("replay");
        assert_eq!(s.memory.status.snapshot()["c"].status, "created");
        assert!(!s.memory.status.snapshot().contains_key("b"));
        assert_eq!(
            s.memory.checkpoints.get(&shard).await.expect("get"),
            oplog_before
        );
    }

    #[tokio::test]
    async fn a_range_that_ends_before_it_starts_is_refused() {
        let s = setup();
        let first = put(&s.memory.stream, "a", "created", 0);
        let second = put(&s.memory.stream, "a", "shipped", 1);
        let err = s
            .replay(&first.shard_id, &second, &first)
            .await
            .expect_err("refused");
        assert!(matches!(err, ReplayError::EmptyRange { .. }), "{err}");
    }

    /// Pages of at most two records, and every other read throttled (or every one).
    struct Throttling<'a> {
        inner: &'a dyn ShardReader,
        reads: std::sync::atomic::AtomicUsize,
        always: bool,
    }

    #[async_trait::async_trait]
    impl ShardReader for Throttling<'_> {
        async fn list_shards(&self) -> Result<Vec<crate::ports::ShardInfo>, StreamError> {
            self.inner.list_shards().await
        }

        async fn shard_iterator(
            &self,
            shard_id: &str,
            start: &StartPosition,
        ) -> Result<String, StreamError> {
            self.inner.shard_iterator(shard_id, start).await
        }

        async fn get_records(
            &self,
            iterator: &str,
            _limit: usize,
        ) -> Result<RecordsPage, StreamError> {
            let read = self
                .reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.always || read.is_multiple_of(2) {
                return Err(StreamError::Throttled(
                    "ProvisionedThroughputExceeded".into(),
                ));
            }
            self.inner.get_records(iterator, 2).await
        }
    }

    /// Replay and rebuild share the shard's reads with the live mappings: a throttle is waited
    /// out, page after page, and only one that never ends is an error.
    #[tokio::test(start_paused = true)]
    async fn shard_pages_wait_out_throttles_and_read_every_record_in_order() {
        let s = setup();
        let acks: Vec<PutAck> = (0..5)
            .map(|minute| put(&s.memory.stream, "a", "created", minute))
            .collect();
        let shard = acks[0].shard_id.clone();
        let throttling = Throttling {
            inner: s.memory.stream.as_ref(),
            reads: Default::default(),
            always: false,
        };
        let mut pages = ShardPages::open(&throttling, &shard, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        let mut read = Vec::new();
        while let Some(records) = pages.next().await.unwrap() {
            assert!(records.len() <= 2);
            read.extend(records.into_iter().map(|r| r.sequence_number));
        }
        let written: Vec<SequenceNumber> = acks.into_iter().map(|a| a.sequence_number).collect();
        assert_eq!(read, written);

        let always = Throttling {
            inner: s.memory.stream.as_ref(),
            reads: Default::default(),
            always: true,
        };
        let mut pages = ShardPages::open(&always, &shard, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        assert!(matches!(pages.next().await, Err(StreamError::Throttled(_))));
        assert_eq!(
            always.reads.load(std::sync::atomic::Ordering::Relaxed),
            THROTTLED_READ_ATTEMPTS as usize,
            "tried as often as the bound says, then gave up"
        );
    }
}
