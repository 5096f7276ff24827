//! The rebuild's own tests: the stream half, resuming, and the archive's paging.
#![allow(clippy::unwrap_used)]
use std::sync::Arc;

use super::*;
use crate::adapters::faults::{Faults, Faulty};
use crate::adapters::memory::{MemoryBackend, MemoryStatusStore};
use crate::adapters::Adapters;
use crate::consumers::processor::Processor;
use crate::consumers::CheckpointedConsumer;
use crate::domain::{Event, EventTime, SystemClock};
use crate::ports::{ArchivePage, ArchiveReader, OutgoingRecord, StreamWriter};
use crate::run::verify::verify;

/// A rebuild that keeps its progress in memory only.
async fn rebuild_unsaved(
    stream: &dyn ShardReader,
    consumer: &dyn Consumer,
    progress: &mut RebuildProgress,
) -> Result<RebuildReport, RebuildError> {
    rebuild(
        stream,
        consumer,
        TimeWindow::default(),
        progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
}

async fn put(memory: &MemoryBackend, id: &str, status: &str, second: u32) {
    let time = EventTime::parse_rfc3339(&format!("2024-05-01T12:00:{second:02}Z")).unwrap();
    let event = Event {
        id: id.into(),
        status: status.into(),
        timestamp: time.to_rfc3339(),
        event_time: time,
        data: None,
        received_at: time,
    };
    let data = event.encode().unwrap();
    memory
        .stream
        .put(&OutgoingRecord {
            partition_key: id.into(),
            data: data.into(),
        })
        .await
        .unwrap();
}

/// The live pipeline applies everything; a rebuild into an empty table, interrupted by a
/// failing write and resumed from its saved progress, ends equal to it, poison set aside.
#[tokio::test]
async fn an_interrupted_rebuild_resumes_and_equals_the_live_table() {
    let memory = MemoryBackend::new(3);
    for i in 0..200u32 {
        // Out of order within each id: the newest is not the last put.
        put(
            &memory,
            &format!("id-{}", i % 37),
            &format!("s{i}"),
            (i * 7) % 60,
        )
        .await;
    }
    memory
        .stream
        .put_raw("poison", b"not an event".to_vec().into())
        .unwrap();
    // The live table: the mapping's way, batches of 7 through the checkpointed processor.
    let live = Adapters::in_memory(memory.clone());
    let live_consumer = CheckpointedConsumer::new(
        Arc::new(live.processor(Default::default(), Arc::new(SystemClock))),
        live.checkpoint_writer(),
    );
    for shard in memory.stream.list_shards().await.unwrap() {
        let it = memory
            .stream
            .shard_iterator(&shard.shard_id, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        let records = memory
            .stream
            .get_records(&it, 10_000)
            .await
            .unwrap()
            .records;
        for batch in records.chunks(7) {
            let outcome = live_consumer.run_batch(&shard.shard_id, batch).await;
            assert_eq!(outcome.failure, None);
        }
    }
    let none = RebuildProgress::default();

    let rebuilt = Arc::new(MemoryStatusStore::default());
    let faults = Faults::new(4);
    faults.set_failure_rate(0.3);
    let rebuilt_adapters =
        Adapters::memory(1).with_status_writer(Arc::new(Faulty::new(rebuilt.clone(), &faults)));
    let processor: Processor =
        rebuilt_adapters.processor(Default::default(), Arc::new(SystemClock));
    let mut progress = none;
    let mut saved = Vec::new();
    let mut attempts = 0;
    let report = loop {
        attempts += 1;
        match rebuild(
            memory.stream.as_ref(),
            &processor,
            TimeWindow::default(),
            &mut progress,
            |p| {
                saved.push(p.clone());
                Ok(())
            },
            |_, _| {},
        )
        .await
        {
            Ok(report) => break report,
            Err(RebuildError::Failed { .. }) if attempts < 100 => faults.set_failure_rate(
                // Fewer failures each time, so the test ends.
                0.3 / f64::from(attempts),
            ),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(attempts > 1, "the rebuild was interrupted at least once");
    assert!(!saved.is_empty());
    assert_eq!(report.shards, 3);
    let difference = verify(memory.status.as_ref(), rebuilt.as_ref(), 10)
        .await
        .unwrap();
    assert_eq!(difference.difference_count, 0, "{difference:?}");
    assert_eq!(difference.expected_rows, 37);
    let set_aside = rebuilt_adapters
        .memory_backend()
        .unwrap()
        .dead_letters
        .sequence_numbers();
    assert_eq!(set_aside.len(), 1, "the poison record");
    // Started again when done, it reads nothing new.
    let again = rebuild_unsaved(memory.stream.as_ref(), &processor, &mut progress)
        .await
        .unwrap();
    assert_eq!(again.records, 0);
}

/// Lists `keys` two at a time; with `stalls`, answers an empty page that claims more.
struct PagedKeys {
    keys: Vec<String>,
    stalls: bool,
}

#[async_trait::async_trait]
impl ArchiveReader for PagedKeys {
    async fn list(&self, start_after: Option<&str>) -> Result<ArchivePage, StoreError> {
        if self.stalls {
            return Ok(ArchivePage {
                keys: Vec::new(),
                more: true,
            });
        }
        let mut after = self
            .keys
            .iter()
            .filter(|key| start_after.is_none_or(|start| key.as_str() > start));
        let keys: Vec<String> = after.by_ref().take(2).cloned().collect();
        Ok(ArchivePage {
            more: after.next().is_some(),
            keys,
        })
    }

    async fn get(&self, _key: &str) -> Result<bytes::Bytes, StoreError> {
        unreachable!("only listed")
    }
}

async fn walk(
    archive: &dyn ArchiveReader,
    start_after: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut keys = ArchiveKeys::after(archive, start_after.map(str::to_owned));
    let mut walked = Vec::new();
    while let Some(key) = keys.next().await? {
        walked.push(key);
    }
    Ok(walked)
}

#[tokio::test]
async fn archive_keys_walks_every_page_in_order_and_refuses_an_endless_listing() {
    let keys: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    let archive = PagedKeys {
        keys: keys.clone(),
        stalls: false,
    };
    assert_eq!(walk(&archive, None).await.unwrap(), keys);
    assert_eq!(walk(&archive, Some("b")).await.unwrap(), keys[2..]);
    assert_eq!(
        walk(&archive, Some("e")).await.unwrap(),
        Vec::<String>::new()
    );
    let stalling = PagedKeys { keys, stalls: true };
    assert!(matches!(
        walk(&stalling, None).await,
        Err(StoreError::Rejected(_))
    ));
}
