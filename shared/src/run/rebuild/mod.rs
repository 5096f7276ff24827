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
use crate::domain::snapshot::{SnapshotError, SnapshotManifest};
use crate::domain::{EventTime, SequenceNumber};
use crate::ports::{ShardReader, StartPosition, StoreError, StreamError, StreamRecord};
use crate::run::shard_pages::ShardPages;

mod archive;
pub mod follow;
pub use archive::{rebuild_from_archive, ArchiveKeys, ArchiveRebuild, OnObject, SaveProgress};

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
mod tests;
