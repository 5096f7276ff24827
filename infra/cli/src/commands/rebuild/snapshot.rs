//! `rebuild --from-snapshot`: the snapshot's rows into the new table, once.

use std::collections::BTreeMap;

use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::consumers::views::status::StatusView;
use tidemark::domain::SequenceNumber;
use tidemark::ports::ArchiveReader;
use tidemark::run::rebuild::RebuildProgress;
use tidemark::run::snapshot::{self, find_snapshot, load_snapshot, load_view_snapshot};

/// The new table a snapshot is loaded into, by view.
pub enum Into<'a> {
    Status(&'a DynamoStatusStore),
    StatusView(&'a StatusView),
}

/// Finds the snapshot (the one a resumed rebuild started from, else `id`), loads its rows
/// unless `progress` says they are loaded, and returns its positions: the archive and the
/// stream are applied only after them. `progress` is set to start there; the caller saves it.
pub async fn start_from(
    archive: &dyn ArchiveReader,
    id: &str,
    into: Into<'_>,
    table: &str,
    progress: &mut RebuildProgress,
) -> Result<BTreeMap<String, SequenceNumber>, String> {
    let view = match into {
        Into::Status(_) => snapshot::STATUS,
        Into::StatusView(_) => snapshot::STATUS_VIEW,
    };
    let fallback = |e: &dyn std::fmt::Display| {
        format!("{e}; rebuild without --from-snapshot to read the whole archive")
    };
    let wanted = progress.snapshot.clone().unwrap_or_else(|| id.to_owned());
    let manifest = find_snapshot(archive, view, &wanted)
        .await
        .map_err(|e| fallback(&e))?;
    if progress.snapshot.is_none() {
        let loaded = match into {
            Into::Status(status) => load_snapshot(archive, &manifest, status).await,
            Into::StatusView(view) => load_view_snapshot(archive, &manifest, view).await,
        };
        loaded.map_err(|e| fallback(&e))?;
        *progress = RebuildProgress::after_snapshot(&manifest).map_err(|e| e.to_string())?;
        progress.snapshot = Some(manifest.id.clone());
        println!(
            "loaded snapshot {} of {view} ({} rows, taken {}) into {table}",
            manifest.id, manifest.rows, manifest.taken_at
        );
    }
    manifest.positions().map_err(|e| e.to_string())
}
