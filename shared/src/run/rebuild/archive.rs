//! The archive half of a rebuild: every archived object after a key, in key (time) order,
//! each record through the consumer unless a snapshot already reflects it.

use std::collections::BTreeMap;

use super::{apply, CorruptObject, RebuildError, RebuildProgress, RebuildReport, TimeWindow};
use crate::consumers::Consumer;
use crate::domain::archive::{decode_object, hour_prefix};
use crate::domain::limits::MAX_BATCH_SPAN;
use crate::domain::snapshot::SNAPSHOT_PREFIX;
use crate::domain::SequenceNumber;
use crate::ports::{ArchiveReader, StoreError, StreamRecord};

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
