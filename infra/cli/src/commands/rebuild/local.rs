//! `rebuild --data-dir`: a view of a stopped `serve` made again in its own tables. Emptied
//! with its consumer's checkpoints, and with `--from-snapshot` loaded from a snapshot with the
//! checkpoints set to the snapshot's positions; the next `serve` then applies the log after
//! them before it listens (`catch_up`), exactly what the snapshot rule needs (the log on disk
//! keeps every record). Without a snapshot the next `serve` applies the whole log.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tidemark::consumers::views::status::StatusView;
use tidemark::domain::snapshot::SnapshotManifest;
use tidemark::domain::{Clock, SystemClock};
use tidemark::ports::{Checkpoint, StartPosition};
use tidemark::run::snapshot::{find_snapshot, load_snapshot, load_view_snapshot};
use tidemark_cli::serve::StoppedDataDir;

use super::View;
use crate::commands::fail;

pub async fn run(dir: &Path, view: View, from_snapshot: Option<&str>) -> ExitCode {
    let data = match StoppedDataDir::open(dir) {
        Ok(data) => data,
        Err(e) => return fail(&e),
    };
    // The snapshot is found, its manifest checked and its positions found in this log before
    // anything is emptied.
    let manifest = match from_snapshot {
        Some(id) => {
            let found = match find_snapshot(data.archive.as_ref(), view.snapshots(), id).await {
                Ok(manifest) => of_this_log(&data, &manifest).await.map(|()| manifest),
                Err(e) => Err(e.to_string()),
            };
            match found {
                Ok(manifest) => Some(manifest),
                Err(e) => {
                    return fail(&format!(
                        "{e}; nothing was changed (without --from-snapshot the view is made \
                         again from the whole log)"
                    ))
                }
            }
        }
        None => None,
    };
    if let Err(e) = data.tables.reset(view.disk()).await {
        return fail(&format!("emptying {}: {e}", view.snapshots()));
    }
    let Some(manifest) = manifest else {
        println!(
            "emptied {} in {} with its checkpoints: the next `tidemark serve --data-dir {}` \
             applies the whole log to it before it listens",
            view.snapshots(),
            data.tables.path().display(),
            dir.display()
        );
        return ExitCode::SUCCESS;
    };
    match load(&data, view, &manifest).await {
        Ok(()) => {
            println!(
                "loaded snapshot {} of {} ({} rows, taken {}) into {}: the next `tidemark serve \
                 --data-dir {}` applies the log after its positions before it listens",
                manifest.id,
                view.snapshots(),
                manifest.rows,
                manifest.taken_at,
                data.tables.path().display(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!(
            "{e}; {} is left empty with no checkpoints, so the next serve makes it again from \
             the whole log (or rebuild from another snapshot)",
            view.snapshots()
        )),
    }
}

/// Whether each of the snapshot's positions is a record of this directory's log: a snapshot of
/// another directory (or of the archive an older `serve` kept) names positions of another
/// stream, and checkpoints there would skip records or none at all.
async fn of_this_log(data: &StoppedDataDir, manifest: &SnapshotManifest) -> Result<(), String> {
    let log = data.adapters.shard_reader();
    for (shard_id, position) in manifest.positions().map_err(|e| e.to_string())? {
        let at = StartPosition::AtSequence(position.clone());
        let found = match log.shard_iterator(&shard_id, &at).await {
            Ok(iterator) => log
                .get_records(&iterator, 1)
                .await
                .map_err(|e| e.to_string())?
                .records
                .first()
                .is_some_and(|r| r.sequence_number == position),
            Err(_) => false,
        };
        if !found {
            return Err(format!(
                "snapshot {}: its position {position} in {shard_id} is not a record of the log \
                 in this directory (a snapshot of another one?)",
                manifest.id
            ));
        }
    }
    Ok(())
}

/// The snapshot's rows, then its positions as the consumer's checkpoints: a checkpoint is
/// written only once every row it covers is in.
async fn load(
    data: &StoppedDataDir,
    view: View,
    manifest: &SnapshotManifest,
) -> Result<(), String> {
    let positions = manifest.positions().map_err(|e| e.to_string())?;
    let archive = data.archive.as_ref();
    match view {
        View::Status => load_snapshot(archive, manifest, data.tables.as_ref())
            .await
            .map(|_| ()),
        View::StatusView => {
            let into = StatusView::new(
                data.adapters.status_view_writer(),
                Default::default(),
                Arc::new(SystemClock),
            );
            load_view_snapshot(archive, manifest, &into)
                .await
                .map(|_| ())
        }
    }
    .map_err(|e| e.to_string())?;
    let checkpoints = data.adapters.checkpoints_of(view.consumer()).writer;
    let now = SystemClock.now().to_rfc3339();
    for (shard_id, sequence_number) in positions {
        let checkpoint = Checkpoint {
            shard_id,
            sequence_number,
            updated_at: now.clone(),
            records_applied: 0,
            lag_ms: 0,
            mirrored_into: None,
        };
        checkpoints
            .advance(&checkpoint)
            .await
            .map_err(|e| format!("writing the checkpoint of {}: {e}", checkpoint.shard_id))?;
    }
    Ok(())
}
