//! Taking, listing and loading snapshots of a view — STATUS or the status view — (`tidemark
//! snapshot`, `tidemark rebuild --from-snapshot`); why a snapshot and the records after its
//! positions rebuild the view exactly: [`crate::domain::snapshot`]. What each view's rows look
//! like in a snapshot: [`rows`].

use std::io::{BufRead, Write};

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::StreamExt as _;

use crate::consumers::views::status::StatusView;
use crate::domain::digest::sha256_hex;
use crate::domain::snapshot::{SnapshotError, SnapshotManifest, SNAPSHOT_FORMAT, SNAPSHOT_PREFIX};
use crate::domain::EventTime;
use crate::ports::{
    ArchivePruner, ArchiveReader, ArchiveWriter, CheckpointReader, StatusWriter, StoreError,
};

mod rows;
pub use rows::{RowsPage, SnapshotRows, StatusRows, StatusViewEntries, STATUS, STATUS_VIEW};

/// Rows written at once while loading: the processor's default write concurrency.
const LOAD_CONCURRENCY: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotRunError {
    #[error("reading OPLOG or the view: {0}")]
    Read(StoreError),
    #[error("writing the snapshot: {0}")]
    Write(StoreError),
    #[error("reading the snapshot: {0}")]
    Archive(StoreError),
    #[error("loading a row into the new table: {0}")]
    Load(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("no snapshot {0:?} in the archive")]
    NotFound(String),
}

/// What a snapshot reads and where it goes.
pub struct SnapshotSource<'a> {
    /// The checkpoints of the consumer that writes the view (the processor for STATUS).
    pub checkpoints: &'a dyn CheckpointReader,
    /// The stream's shards now: one without a checkpoint makes a rebuild read the whole archive.
    pub shards: Vec<String>,
    /// The view's rows.
    pub rows: &'a dyn SnapshotRows,
    pub archive: &'a dyn ArchiveWriter,
}

/// Takes a snapshot of a view into the archive: its consumer's checkpoints first, then every
/// row (the order is what makes it sound), the rows' object, and the manifest last. `suffix`
/// tells apart snapshots taken in the same second.
pub async fn take_snapshot(
    source: SnapshotSource<'_>,
    taken_at: EventTime,
    suffix: &str,
) -> Result<SnapshotManifest, SnapshotRunError> {
    let SnapshotSource {
        checkpoints,
        shards,
        rows: source_rows,
        archive,
    } = source;
    let view = source_rows.view();
    let checkpoints = checkpoints.list().await.map_err(SnapshotRunError::Read)?;
    // The checkpointed record arrived `lag_ms` before its checkpoint was written.
    let arrivals = checkpoints.iter().filter_map(|c| {
        let written = EventTime::parse_rfc3339(&c.updated_at)?;
        Some((
            c.shard_id.as_str(),
            written.saturating_sub(std::time::Duration::from_millis(c.lag_ms)),
        ))
    });
    let archive_from = SnapshotManifest::archive_from_checkpoints(arrivals, &shards);
    let positions = checkpoints
        .iter()
        .map(|c| (c.shard_id.clone(), c.sequence_number.as_str().to_owned()))
        .collect();
    let mut body = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut rows = 0u64;
    let mut start: Option<String> = None;
    loop {
        let page = source_rows
            .page(start.as_deref())
            .await
            .map_err(SnapshotRunError::Read)?;
        for line in page.lines {
            // Writing to a Vec cannot fail.
            let _ = body.write_all(&line);
            let _ = body.write_all(b"\n");
            rows += 1;
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    let body = Bytes::from(body.finish().unwrap_or_default());
    let rfc3339 = taken_at.to_rfc3339();
    let id = format!("{}-{suffix}", compact_time(&rfc3339));
    let manifest = SnapshotManifest {
        format: SNAPSHOT_FORMAT,
        view: view.into(),
        id: id.clone(),
        taken_at: rfc3339,
        positions,
        rows,
        archive_from,
        body_key: SnapshotManifest::body_key(view, &id),
        body_bytes: body.len() as u64,
        body_sha256: sha256_hex(&body),
    };
    archive
        .put(&manifest.body_key, body)
        .await
        .map_err(SnapshotRunError::Write)?;
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    archive
        .put(
            &SnapshotManifest::manifest_key(view, &id),
            Bytes::from(text),
        )
        .await
        .map_err(SnapshotRunError::Write)?;
    Ok(manifest)
}

/// `2026-12-04T23:50:00.123Z` → `20261204T235000Z`: sorts by time, fits a key.
fn compact_time(rfc3339: &str) -> String {
    let digits: String = rfc3339
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{digits}Z")
}

/// Every object key under the view's snapshots, in key order (a snapshot's objects together,
/// snapshots oldest first): the archive listed from the prefix until a key leaves it.
async fn snapshot_keys(
    archive: &dyn ArchiveReader,
    view: &str,
) -> Result<Vec<String>, SnapshotRunError> {
    let prefix = format!("{SNAPSHOT_PREFIX}{view}/");
    let mut keys = Vec::new();
    let mut after = Some(prefix.clone());
    loop {
        let page = archive
            .list(after.as_deref())
            .await
            .map_err(SnapshotRunError::Archive)?;
        let listed = page.keys.len();
        let more = page.more;
        after = page.keys.last().cloned();
        let before = keys.len();
        keys.extend(page.keys.into_iter().take_while(|k| k.starts_with(&prefix)));
        if keys.len() - before < listed || !more || listed == 0 {
            return Ok(keys);
        }
    }
}

/// Every complete snapshot of `view` in the archive, oldest first; a manifest that cannot be
/// read is listed as an error beside its key, not skipped silently.
pub async fn list_snapshots(
    archive: &dyn ArchiveReader,
    view: &str,
) -> Result<Vec<Result<SnapshotManifest, (String, SnapshotError)>>, SnapshotRunError> {
    let mut found = Vec::new();
    for key in snapshot_keys(archive, view).await? {
        if key.ends_with("/manifest.json") {
            found.push(
                read_manifest(archive, view, &key)
                    .await
                    .map_err(|e| (key, e)),
            );
        }
    }
    Ok(found)
}

async fn read_manifest(
    archive: &dyn ArchiveReader,
    view: &str,
    key: &str,
) -> Result<SnapshotManifest, SnapshotError> {
    let bytes = archive
        .get(key)
        .await
        .map_err(|e| SnapshotError::Invalid(format!("{key}: {e}")))?;
    let manifest: SnapshotManifest = serde_json::from_slice(&bytes)
        .map_err(|e| SnapshotError::Invalid(format!("{key}: {e}")))?;
    if manifest.format != SNAPSHOT_FORMAT || manifest.view != view {
        return Err(SnapshotError::Invalid(format!(
            "{key}: format {} of view {:?}; this version reads format {SNAPSHOT_FORMAT} of {view:?}",
            manifest.format, manifest.view
        )));
    }
    manifest.positions()?;
    Ok(manifest)
}

/// The snapshot of `view` named `id`, or the newest readable one for `latest`.
pub async fn find_snapshot(
    archive: &dyn ArchiveReader,
    view: &str,
    id: &str,
) -> Result<SnapshotManifest, SnapshotRunError> {
    let listed = list_snapshots(archive, view).await?;
    if id == "latest" {
        return listed
            .into_iter()
            .rev()
            .find_map(Result::ok)
            .ok_or_else(|| SnapshotRunError::NotFound(id.into()));
    }
    for entry in listed {
        match entry {
            Ok(manifest) if manifest.id == id => return Ok(manifest),
            Err((key, error)) if key == SnapshotManifest::manifest_key(view, id) => {
                return Err(error.into())
            }
            _ => {}
        }
    }
    Err(SnapshotRunError::NotFound(id.into()))
}

/// The snapshot's lines, checked against its manifest (size, SHA-256, line count) before any
/// is used.
async fn read_lines(
    archive: &dyn ArchiveReader,
    manifest: &SnapshotManifest,
) -> Result<Vec<String>, SnapshotRunError> {
    let body = archive
        .get(&manifest.body_key)
        .await
        .map_err(|e| SnapshotError::Corrupt(format!("{}: {e}", manifest.body_key)))?;
    if body.len() as u64 != manifest.body_bytes || sha256_hex(&body) != manifest.body_sha256 {
        return Err(SnapshotError::Corrupt(format!(
            "{} is {} bytes and does not match the manifest's size ({}) and SHA-256",
            manifest.body_key,
            body.len(),
            manifest.body_bytes
        ))
        .into());
    }
    let lines = std::io::BufReader::new(GzDecoder::new(&body[..]))
        .lines()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    if lines.len() as u64 != manifest.rows {
        return Err(SnapshotError::Corrupt(format!(
            "{} rows where the manifest says {}",
            lines.len(),
            manifest.rows
        ))
        .into());
    }
    Ok(lines)
}

/// The manifest is of `view`, or the load is refused before anything is read.
fn expect_view(manifest: &SnapshotManifest, view: &str) -> Result<(), SnapshotRunError> {
    if manifest.view == view {
        Ok(())
    } else {
        Err(SnapshotError::Invalid(format!(
            "snapshot {} is of {:?}, not {view:?}",
            manifest.id, manifest.view
        ))
        .into())
    }
}

/// Reads a snapshot of STATUS, checked against its manifest before any row is written, and
/// writes its rows into `status` (conditional writes: loading into a table that already holds
/// newer rows changes nothing of them). Returns the rows written.
pub async fn load_snapshot(
    archive: &dyn ArchiveReader,
    manifest: &SnapshotManifest,
    status: &dyn StatusWriter,
) -> Result<u64, SnapshotRunError> {
    expect_view(manifest, STATUS)?;
    let rows = rows::status_rows(read_lines(archive, manifest).await?)?;
    let written = rows.len() as u64;
    // Rows of distinct ids: written in parallel, as the processor writes a batch.
    let mut writes = futures::stream::iter(rows.into_iter().map(|row| status.apply(row)))
        .buffer_unordered(LOAD_CONCURRENCY);
    while let Some(result) = writes.next().await {
        result.map_err(|e| SnapshotRunError::Load(e.to_string()))?;
    }
    Ok(written)
}

/// Reads a snapshot of the status view, checked against its manifest before any entry is
/// written, and commits its entries through `view` (the view's own rule: its counters and
/// lists are written with the entries, so they agree by construction). Returns the entries.
pub async fn load_view_snapshot(
    archive: &dyn ArchiveReader,
    manifest: &SnapshotManifest,
    view: &StatusView,
) -> Result<u64, SnapshotRunError> {
    expect_view(manifest, STATUS_VIEW)?;
    let entries = rows::view_entries(read_lines(archive, manifest).await?)?;
    view.load(&entries).await.map_err(SnapshotRunError::Load)?;
    Ok(entries.len() as u64)
}

/// Keeps the newest `keep` usable snapshots and deletes every object of the ones before the
/// oldest of those (an unusable snapshot among the kept ones stays, to be looked at; one left
/// without a manifest by an interrupted snapshot or prune goes with its age). The manifest is
/// deleted first, so a prune cut short never leaves a listed snapshot without its rows. Returns
/// the ids deleted.
pub async fn prune_snapshots(
    archive: &dyn ArchiveReader,
    pruner: &dyn ArchivePruner,
    view: &str,
    keep: usize,
) -> Result<Vec<String>, SnapshotRunError> {
    let prefix = format!("{SNAPSHOT_PREFIX}{view}/");
    let usable: Vec<String> = list_snapshots(archive, view)
        .await?
        .into_iter()
        .filter_map(|entry| entry.ok().map(|m| m.id))
        .collect();
    let Some(oldest_kept) = usable.len().checked_sub(keep).and_then(|i| usable.get(i)) else {
        return Ok(Vec::new()); // no more than `keep`: nothing to delete
    };
    // Every object under the prefix, grouped by snapshot id (ids sort by time).
    let mut objects: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for key in snapshot_keys(archive, view).await? {
        let id = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        objects.entry(id).or_default().push(key);
    }
    let mut deleted = Vec::new();
    for (id, mut keys) in objects.into_iter().filter(|(id, _)| id < oldest_kept) {
        // The manifest first: `false` sorts before `true`.
        keys.sort_by_key(|k| !k.ends_with("/manifest.json"));
        for key in keys {
            pruner.delete(&key).await.map_err(SnapshotRunError::Write)?;
        }
        deleted.push(id);
    }
    Ok(deleted)
}
