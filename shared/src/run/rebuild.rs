//! Rebuilding STATUS (`tidemark rebuild`): every archived record ([`rebuild_from_archive`]), then
//! every record the stream still holds ([`rebuild`]), through a consumer (the processor, writing
//! into a fresh STATUS table). Versions come from the records themselves, so the rebuilt table
//! holds what the live one would hold had it applied the same records, whatever order they are
//! read in and however often: the archive and the stream overlap by design (a record is on both
//! until the stream's retention drops it), and applying a record twice changes nothing.
//!
//! Resumable: after each object or page the position is saved ([`RebuildProgress`]), and a
//! rebuild started again with it continues after that; re-applying is a no-op anyway.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consumers::Consumer;
use crate::domain::archive::{decode_object, hour_prefix};
use crate::domain::limits::MAX_BATCH_SPAN;
use crate::domain::snapshot::{SnapshotError, SnapshotManifest, SNAPSHOT_PREFIX};
use crate::domain::{EventTime, SequenceNumber};
use crate::ports::{
    ArchiveReader, ShardReader, StartPosition, StoreError, StreamError, StreamRecord,
};
use crate::run::shard_pages::ShardPages;

/// How far a rebuild got: the last archive object applied, and each shard's last record read
/// from the stream, as text (a JSON file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after: Option<String>,
    #[serde(default)]
    pub shards: BTreeMap<String, String>,
    /// The snapshot this rebuild started from, once its rows are loaded (a resumed rebuild does
    /// not load them again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl RebuildProgress {
    /// Where a rebuild from `snapshot` starts: the archive from its `archive_from`, each shard
    /// of the stream after its position. Its rows are not loaded yet.
    pub fn after_snapshot(snapshot: &SnapshotManifest) -> Result<Self, SnapshotError> {
        snapshot.positions()?;
        Ok(Self {
            archive_after: Some(snapshot.archive_from.clone()).filter(|from| !from.is_empty()),
            shards: snapshot.positions.clone(),
            snapshot: None,
        })
    }
}

/// Which records a rebuild applies, by approximate arrival time: `[from, until)`. Records
/// without an arrival time are applied only when neither bound is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub from: Option<EventTime>,
    pub until: Option<EventTime>,
}

impl TimeWindow {
    pub fn contains(&self, arrival: Option<EventTime>) -> bool {
        match arrival {
            None => self.from.is_none() && self.until.is_none(),
            Some(t) => {
                self.from.is_none_or(|from| t >= from) && self.until.is_none_or(|until| t < until)
            }
        }
    }
}

/// An archive object that could not be read: reported, never silently skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptObject {
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub shards: usize,
    pub objects: usize,
    pub records: usize,
    pub applied: usize,
    pub stale: usize,
    pub set_aside: usize,
    pub corrupt_objects: Vec<CorruptObject>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading shard {shard_id}: {source}")]
    Stream {
        shard_id: String,
        source: StreamError,
    },
    #[error("the saved position of {shard_id} is not a sequence number: {text:?}")]
    Progress { shard_id: String, text: String },
    #[error(
        "record {sequence_number} of {shard_id} could not be applied (see the log); run the \
         rebuild again with the same state to continue from it"
    )]
    Failed {
        shard_id: String,
        sequence_number: SequenceNumber,
    },
    #[error("saving the rebuild's progress failed: {0}")]
    Save(String),
    #[error("reading the archive: {0}")]
    Archive(StoreError),
}

/// Runs `records` of `shard_id` through `consumer` and counts them; a record it could not apply
/// stops the rebuild there (the saved progress is before it).
async fn apply(
    consumer: &dyn Consumer,
    shard_id: &str,
    records: &[StreamRecord],
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let outcome = consumer.consume(shard_id, records).await;
    report.records += records.len();
    report.applied += outcome.report.applied;
    report.stale += outcome.report.stale;
    report.set_aside += outcome.report.dead_lettered;
    match outcome.failure {
        Some(sequence_number) => Err(RebuildError::Failed {
            shard_id: shard_id.to_owned(),
            sequence_number,
        }),
        None => Ok(()),
    }
}

/// Every archive key after a starting key, in key order (time order), listed a page at a time
/// as it is needed: how a rebuild, and the tests, walk the archive.
pub struct ArchiveKeys<'a> {
    archive: &'a dyn ArchiveReader,
    start_after: Option<String>,
    page: std::vec::IntoIter<String>,
    more: bool,
}

impl<'a> ArchiveKeys<'a> {
    /// Keys after `start_after`, or from the first without one.
    pub fn after(archive: &'a dyn ArchiveReader, start_after: Option<String>) -> Self {
        Self {
            archive,
            start_after,
            page: Vec::new().into_iter(),
            more: true,
        }
    }

    /// The next key; `None` after the last.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        loop {
            if let Some(key) = self.page.next() {
                self.start_after = Some(key.clone());
                return Ok(Some(key));
            }
            if !self.more {
                return Ok(None);
            }
            let page = self.archive.list(self.start_after.as_deref()).await?;
            // Asking again would get the same page forever, and stopping would skip the rest
            // unsaid: neither S3 (listing without a delimiter) nor the memory archive answers
            // this, so it is an error.
            if page.keys.is_empty() && page.more {
                return Err(StoreError::Rejected(format!(
                    "the archive listed no keys after {:?} yet said there are more",
                    self.start_after
                )));
            }
            self.more = page.more;
            self.page = page.keys.into_iter();
        }
    }
}

/// Saves a rebuild's progress; an error stops the rebuild.
pub type SaveProgress<'a> = Box<dyn FnMut(&RebuildProgress) -> Result<(), String> + 'a>;
/// Hears of every object read: its key and the records read so far.
pub type OnObject<'a> = Box<dyn FnMut(&str, usize) + 'a>;

/// What a rebuild from the archive reads, what it feeds, and whom it tells.
pub struct ArchiveRebuild<'a> {
    pub archive: &'a dyn ArchiveReader,
    /// The view being rebuilt (the processor for STATUS, the status view, …).
    pub consumer: &'a dyn Consumer,
    /// Only records that arrived inside it; everything by default.
    pub window: TimeWindow,
    /// Called with the progress after every object, to save it; an error stops the rebuild.
    pub save: SaveProgress<'a>,
    /// Called after every object with its key and the records read so far.
    pub on_object: OnObject<'a>,
    /// Each shard's position in a snapshot: records at or before it are skipped (the snapshot
    /// reflects them). Empty: every record.
    pub after_positions: BTreeMap<String, SequenceNumber>,
}

impl<'a> ArchiveRebuild<'a> {
    /// Every record of `archive` through `consumer`, saving nothing, telling no one.
    pub fn new(archive: &'a dyn ArchiveReader, consumer: &'a dyn Consumer) -> Self {
        Self {
            archive,
            consumer,
            window: TimeWindow::default(),
            save: Box::new(|_| Ok(())),
            on_object: Box::new(|_, _| {}),
            after_positions: BTreeMap::new(),
        }
    }

    /// Skips every record a snapshot with these positions reflects.
    pub fn after_positions(mut self, positions: BTreeMap<String, SequenceNumber>) -> Self {
        self.after_positions = positions;
        self
    }

    pub fn window(mut self, window: TimeWindow) -> Self {
        self.window = window;
        self
    }

    pub fn saving(mut self, save: impl FnMut(&RebuildProgress) -> Result<(), String> + 'a) -> Self {
        self.save = Box::new(save);
        self
    }

    pub fn reporting(mut self, on_object: impl FnMut(&str, usize) + 'a) -> Self {
        self.on_object = Box::new(on_object);
        self
    }
}

/// Applies every archived record (in the window) through the consumer, object by object in key
/// order (time order), starting after `progress.archive_after`. An object that cannot be read
/// is listed in the report with its key and reason, and the rebuild goes on.
pub async fn rebuild_from_archive(
    options: ArchiveRebuild<'_>,
    progress: &mut RebuildProgress,
) -> Result<RebuildReport, RebuildError> {
    let ArchiveRebuild {
        archive,
        consumer,
        window,
        mut save,
        mut on_object,
        after_positions,
    } = options;
    let mut report = RebuildReport::default();
    // Objects are filed under their first record's hour: one that starts before `from` can
    // still hold records after it, up to the longest a batch can span.
    let first_hour = window
        .from
        .map(|from| hour_prefix(Some(from.saturating_sub(MAX_BATCH_SPAN))));
    let last_hour = window.until.map(|until| hour_prefix(Some(until)));
    let mut keys = ArchiveKeys::after(archive, progress.archive_after.clone().max(first_hour));
    while let Some(key) = keys.next().await.map_err(RebuildError::Archive)? {
        // Snapshots sort after every archive object: the archive ends where they begin.
        if key.starts_with(SNAPSHOT_PREFIX) {
            break;
        }
        if last_hour
            .as_deref()
            .is_some_and(|last| key.as_str() > last && !key.starts_with(last))
        {
            break;
        }
        let decoded = match archive.get(&key).await {
            Ok(body) => decode_object(&body).map_err(|e| e.to_string()),
            Err(StoreError::ItemRejected(reason)) => Err(reason),
            Err(e) => return Err(RebuildError::Archive(e)),
        };
        match decoded {
            Err(reason) => report.corrupt_objects.push(CorruptObject {
                key: key.clone(),
                reason,
            }),
            Ok(records) => {
                let mut by_shard: BTreeMap<String, Vec<StreamRecord>> = BTreeMap::new();
                let after_snapshot = |r: &crate::domain::archive::ArchivedRecord| {
                    after_positions
                        .get(&r.shard_id)
                        .is_none_or(|position| r.sequence_number > *position)
                };
                for record in records
                    .into_iter()
                    .filter(|r| window.contains(r.approximate_arrival) && after_snapshot(r))
                {
                    by_shard
                        .entry(record.shard_id)
                        .or_default()
                        .push(StreamRecord {
                            sequence_number: record.sequence_number,
                            partition_key: record.partition_key,
                            data: record.data,
                            approximate_arrival: record.approximate_arrival,
                        });
                }
                for (shard_id, records) in by_shard {
                    apply(consumer, &shard_id, &records, &mut report).await?;
                }
            }
        }
        report.objects += 1;
        on_object(&key, report.records);
        progress.archive_after = Some(key);
        save(progress).map_err(RebuildError::Save)?;
    }
    Ok(report)
}

/// Rebuilds through `consumer`, starting each shard after its position in `progress` (from the
/// oldest record without one), and calls `save` with the progress after every page and `on_page`
/// with each page's shard and size (a progress bar).
pub async fn rebuild(
    stream: &dyn ShardReader,
    consumer: &dyn Consumer,
    window: TimeWindow,
    progress: &mut RebuildProgress,
    mut save: impl FnMut(&RebuildProgress) -> Result<(), String>,
    mut on_page: impl FnMut(&str, usize),
) -> Result<RebuildReport, RebuildError> {
    let shards = stream
        .list_shards()
        .await
        .map_err(|source| RebuildError::Stream {
            shard_id: "(listing shards)".into(),
            source,
        })?;
    let mut report = RebuildReport {
        shards: shards.len(),
        ..RebuildReport::default()
    };
    for shard in shards {
        let shard_id = shard.shard_id;
        let stream_error = |source| RebuildError::Stream {
            shard_id: shard_id.clone(),
            source,
        };
        let start = match progress.shards.get(&shard_id) {
            Some(text) => {
                StartPosition::AfterSequence(SequenceNumber::parse(text).map_err(|_| {
                    RebuildError::Progress {
                        shard_id: shard_id.clone(),
                        text: text.clone(),
                    }
                })?)
            }
            None => StartPosition::TrimHorizon,
        };
        let mut pages = ShardPages::open(stream, &shard_id, &start)
            .await
            .map_err(stream_error)?;
        while let Some(records) = pages.next().await.map_err(stream_error)? {
            let read = records.len();
            let last = records
                .last()
                .map(|r| r.sequence_number.as_str().to_owned());
            let in_window: Vec<StreamRecord> = records
                .into_iter()
                .filter(|r| window.contains(r.approximate_arrival))
                .collect();
            apply(consumer, &shard_id, &in_window, &mut report).await?;
            if let Some(last) = last {
                progress.shards.insert(shard_id.clone(), last);
            }
            save(progress).map_err(RebuildError::Save)?;
            on_page(&shard_id, read);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::adapters::faults::{Faults, Faulty};
    use crate::adapters::memory::{MemoryBackend, MemoryStatusStore};
    use crate::adapters::Adapters;
    use crate::consumers::processor::Processor;
    use crate::consumers::CheckpointedConsumer;
    use crate::domain::{Event, EventTime, SystemClock};
    use crate::ports::{ArchivePage, OutgoingRecord, StreamWriter};
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
}
