//! Snapshots of `serve`'s data directory: the views in `DIR/tables.redb` into `DIR/archive`
//! under `snapshots/<view>/`, in the format and by the rule of the stack's snapshots
//! (`tidemark::run::snapshot`: the view's consumer's checkpoints first, then its rows, so the
//! snapshot plus every record after those positions makes the view again). Taken by a running
//! `serve` every `--snapshot-interval-secs` (it holds the tables' file), or by `tidemark snapshot
//! --data-dir` while it is stopped. `tidemark rebuild --data-dir` loads one, and the next `serve`
//! applies only the log after its positions: the log on disk keeps every record, so a rebuild
//! there reads the snapshot and the log's tail, never the archive.

use std::path::{Path, PathBuf};

use tidemark::adapters::disk::{on_disk, DiskLog, DiskTables, DiskView};
use tidemark::adapters::memory::{MemoryArchive, MemoryBackend};
use tidemark::domain::snapshot::SnapshotManifest;
use tidemark::domain::{Clock, SystemClock};
use tidemark::ports::{ArchivePruner, ArchiveReader, ArchiveWriter};
use tidemark::run::snapshot::{
    prune_snapshots, take_snapshot, SnapshotSource, StatusRows, StatusViewEntries, STATUS,
    STATUS_VIEW,
};

use super::*;

/// The views a data directory's snapshots are of.
pub const LOCAL_VIEWS: [DiskView; 2] = [DiskView::Status, DiskView::StatusView];

/// Its snapshots' folder under `snapshots/` in the archive.
pub fn snapshots_of(view: DiskView) -> &'static str {
    match view {
        DiskView::Status => STATUS,
        DiskView::StatusView => STATUS_VIEW,
    }
}

/// How a running `serve` takes snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSchedule {
    pub every: Duration,
    /// The newest kept of each view; older ones are deleted after each new one.
    pub keep: usize,
}

/// An archive snapshots are written to, listed in and pruned from.
pub trait SnapshotArchive: ArchiveReader + ArchiveWriter + ArchivePruner {}
impl<T: ArchiveReader + ArchiveWriter + ArchivePruner> SnapshotArchive for T {}

/// Takes a snapshot of `view` from `adapters` (`serve`'s tables or the stack's) into `archive`:
/// the view's consumer's checkpoints, the stream's shards, the rows.
pub async fn snapshot_view(
    adapters: &Adapters,
    archive: &dyn SnapshotArchive,
    view: DiskView,
) -> Result<SnapshotManifest, String> {
    let shards = adapters
        .shard_reader()
        .list_shards()
        .await
        .map_err(|e| format!("listing the stream's shards: {e}"))?
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    let checkpoints = adapters.checkpoints_of(view.consumer()).reader;
    let (status, status_view) = (adapters.status_scanner(), adapters.status_view_scanner());
    let (status_rows, entries) = (
        StatusRows(status.as_ref()),
        StatusViewEntries(status_view.as_ref()),
    );
    let source = SnapshotSource {
        checkpoints: checkpoints.as_ref(),
        shards,
        rows: match view {
            DiskView::Status => &status_rows,
            DiskView::StatusView => &entries,
        },
        archive,
    };
    let suffix = format!("{:04x}", fastrand::u16(..));
    take_snapshot(source, SystemClock.now(), &suffix)
        .await
        .map_err(|e| e.to_string())
}

/// Keeps the newest `keep` usable snapshots of `view`; the ids deleted.
pub async fn keep_newest(
    archive: &dyn SnapshotArchive,
    view: DiskView,
    keep: usize,
) -> Result<Vec<String>, String> {
    prune_snapshots(archive, archive, snapshots_of(view), keep)
        .await
        .map_err(|e| e.to_string())
}

/// While `serve` runs: a snapshot of every view each `schedule.every`, until `shutdown`. A
/// failed one is logged and tried again at the next turn; it changes nothing already kept.
pub(super) async fn take_snapshots(
    adapters: Adapters,
    archive: Arc<MemoryArchive>,
    schedule: SnapshotSchedule,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(schedule.every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        for view in LOCAL_VIEWS {
            let taken = match snapshot_view(&adapters, archive.as_ref(), view).await {
                Ok(manifest) => manifest,
                Err(e) => {
                    tracing::warn!(view = snapshots_of(view), error = %e,
                        "snapshot failed; the next one is tried at the next turn");
                    continue;
                }
            };
            tracing::info!(view = snapshots_of(view), id = %taken.id, rows = taken.rows,
                "snapshot taken");
            if let Err(e) = keep_newest(archive.as_ref(), view, schedule.keep).await {
                tracing::warn!(view = snapshots_of(view), error = %e,
                    "pruning older snapshots failed; tried again after the next one");
            }
        }
    }
}

/// A data directory opened while no `serve` runs on it (each file is locked while open, so a
/// running `serve` makes this fail, naming the file).
pub struct StoppedDataDir {
    pub adapters: Adapters,
    pub tables: Arc<DiskTables>,
    pub archive: Arc<MemoryArchive>,
    /// Kept open while the directory is in use.
    _log: Arc<DiskLog>,
}

impl StoppedDataDir {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let tables_path: PathBuf = dir.join("tables.redb");
        if !tables_path.exists() {
            return Err(format!(
                "{} does not exist: is {} a `tidemark serve` data directory?",
                tables_path.display(),
                dir.display()
            ));
        }
        let log = Arc::new(DiskLog::open_existing(dir)?);
        let archive =
            MemoryArchive::in_directory(dir.join("archive")).map_err(|e| e.to_string())?;
        // A small cache: these commands scan each table once.
        let (tables, _) = DiskTables::open(dir, 16 << 20, None)?;
        let backend = MemoryBackend::new(1).with_archive(archive);
        let archive = backend.archive.clone();
        let adapters = on_disk(Adapters::in_memory(backend), tables.clone())
            .with_stream_writer(log.clone())
            .with_shard_reader(log.clone());
        Ok(Self {
            adapters,
            tables,
            archive,
            _log: log,
        })
    }
}
