//! Taking, listing and loading snapshots of STATUS (`tidemark snapshot`, `tidemark rebuild
//! --from-snapshot`); why a snapshot and the records after its positions rebuild STATUS
//! exactly: [`crate::domain::snapshot`].

use std::io::{BufRead, Write};

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::domain::digest::sha256_hex;
use crate::domain::snapshot::{SnapshotError, SnapshotManifest, SNAPSHOT_FORMAT, SNAPSHOT_PREFIX};
use crate::domain::{EventTime, SequenceNumber, VersionKey};
use crate::ports::{
    ArchivePruner, ArchiveReader, ArchiveWriter, CheckpointReader, StatusRow, StatusScanner,
    StatusWriter, StoreError,
};

/// Rows written at once while loading: the processor's default write concurrency.
const LOAD_CONCURRENCY: usize = 32;

/// The view these snapshots are of.
pub const STATUS_VIEW: &str = "status";

/// One row as a line of the snapshot's body.
#[derive(Serialize, Deserialize)]
struct RowLine {
    id: String,
    status: String,
    timestamp: String,
    data: Option<String>,
    received_at: String,
    shard_id: String,
    sequence_number: String,
    version: String,
    updated_at: String,
}

impl From<StatusRow> for RowLine {
    fn from(row: StatusRow) -> Self {
        Self {
            id: row.id,
            status: row.status,
            timestamp: row.timestamp,
            data: row.data,
            received_at: row.received_at,
            shard_id: row.shard_id,
            sequence_number: row.sequence_number.as_str().to_owned(),
            version: row.version.0,
            updated_at: row.updated_at,
        }
    }
}

impl RowLine {
    fn into_row(self) -> Result<StatusRow, String> {
        Ok(StatusRow {
            sequence_number: SequenceNumber::parse(&self.sequence_number)
                .map_err(|e| format!("row {:?}: {e}", self.id))?,
            id: self.id,
            status: self.status,
            timestamp: self.timestamp,
            data: self.data,
            received_at: self.received_at,
            shard_id: self.shard_id,
            version: VersionKey(self.version),
            updated_at: self.updated_at,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotRunError {
    #[error("reading OPLOG or STATUS: {0}")]
    Read(StoreError),
    #[error("writing the snapshot: {0}")]
    Write(StoreError),
    #[error("reading the snapshot: {0}")]
    Archive(StoreError),
    #[error("loading a row into the new table: {0}")]
    Load(StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("no snapshot {0:?} in the archive")]
    NotFound(String),
}

/// What a snapshot reads and where it goes.
pub struct SnapshotSource<'a> {
    /// The processor's checkpoints.
    pub checkpoints: &'a dyn CheckpointReader,
    /// The stream's shards now: one without a checkpoint makes a rebuild read the whole archive.
    pub shards: Vec<String>,
    pub status: &'a dyn StatusScanner,
    pub archive: &'a dyn ArchiveWriter,
}

/// Takes a snapshot of STATUS into the archive: the processor's checkpoints first, then every
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
        status,
        archive,
    } = source;
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
        let page = status
            .scan_page(start.as_deref())
            .await
            .map_err(SnapshotRunError::Read)?;
        for row in page.rows {
            // Writing to a Vec cannot fail, nor can serialising strings.
            let line = serde_json::to_vec(&RowLine::from(row)).unwrap_or_default();
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
        view: STATUS_VIEW.into(),
        id: id.clone(),
        taken_at: rfc3339,
        positions,
        rows,
        archive_from,
        body_key: SnapshotManifest::body_key(STATUS_VIEW, &id),
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
            &SnapshotManifest::manifest_key(STATUS_VIEW, &id),
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

/// Every object key under STATUS's snapshots, in key order (a snapshot's objects together,
/// snapshots oldest first): the archive listed from the prefix until a key leaves it.
async fn snapshot_keys(archive: &dyn ArchiveReader) -> Result<Vec<String>, SnapshotRunError> {
    let prefix = format!("{SNAPSHOT_PREFIX}{STATUS_VIEW}/");
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

/// Every complete snapshot of STATUS in the archive, oldest first; a manifest that cannot be
/// read is listed as an error beside its key, not skipped silently.
pub async fn list_snapshots(
    archive: &dyn ArchiveReader,
) -> Result<Vec<Result<SnapshotManifest, (String, SnapshotError)>>, SnapshotRunError> {
    let mut found = Vec::new();
    for key in snapshot_keys(archive).await? {
        if key.ends_with("/manifest.json") {
            found.push(read_manifest(archive, &key).await.map_err(|e| (key, e)));
        }
    }
    Ok(found)
}

async fn read_manifest(
    archive: &dyn ArchiveReader,
    key: &str,
) -> Result<SnapshotManifest, SnapshotError> {
    let bytes = archive
        .get(key)
        .await
        .map_err(|e| SnapshotError::Invalid(format!("{key}: {e}")))?;
    let manifest: SnapshotManifest = serde_json::from_slice(&bytes)
        .map_err(|e| SnapshotError::Invalid(format!("{key}: {e}")))?;
    if manifest.format != SNAPSHOT_FORMAT || manifest.view != STATUS_VIEW {
        return Err(SnapshotError::Invalid(format!(
            "{key}: format {} of view {:?}; this version reads format {SNAPSHOT_FORMAT} of {STATUS_VIEW:?}",
            manifest.format, manifest.view
        )));
    }
    manifest.positions()?;
    Ok(manifest)
}

/// The snapshot named `id`, or the newest readable one for `latest`.
pub async fn find_snapshot(
    archive: &dyn ArchiveReader,
    id: &str,
) -> Result<SnapshotManifest, SnapshotRunError> {
    let listed = list_snapshots(archive).await?;
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
            Err((key, error)) if key == SnapshotManifest::manifest_key(STATUS_VIEW, id) => {
                return Err(error.into())
            }
            _ => {}
        }
    }
    Err(SnapshotRunError::NotFound(id.into()))
}

/// Reads the snapshot's rows, checked against its manifest (size, SHA-256, row count) before
/// any is written, and writes them into `status` (conditional writes: loading into a table that
/// already holds newer rows changes nothing of them). Returns the rows written.
pub async fn load_snapshot(
    archive: &dyn ArchiveReader,
    manifest: &SnapshotManifest,
    status: &dyn StatusWriter,
) -> Result<u64, SnapshotRunError> {
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
    let mut rows = Vec::new();
    for line in std::io::BufReader::new(GzDecoder::new(&body[..])).lines() {
        let line = line.map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        let row: RowLine =
            serde_json::from_str(&line).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        rows.push(row.into_row().map_err(SnapshotError::Corrupt)?);
    }
    if rows.len() as u64 != manifest.rows {
        return Err(SnapshotError::Corrupt(format!(
            "{} rows where the manifest says {}",
            rows.len(),
            manifest.rows
        ))
        .into());
    }
    let written = rows.len() as u64;
    // Rows of distinct ids: written in parallel, as the processor writes a batch.
    let mut writes = futures::stream::iter(rows.into_iter().map(|row| status.apply(row)))
        .buffer_unordered(LOAD_CONCURRENCY);
    while let Some(result) = writes.next().await {
        result.map_err(SnapshotRunError::Load)?;
    }
    Ok(written)
}

/// Keeps the newest `keep` usable snapshots and deletes every object of the ones before the
/// oldest of those (an unusable snapshot among the kept ones stays, to be looked at; one left
/// without a manifest by an interrupted snapshot or prune goes with its age). The manifest is
/// deleted first, so a prune cut short never leaves a listed snapshot without its rows. Returns
/// the ids deleted.
pub async fn prune_snapshots(
    archive: &dyn ArchiveReader,
    pruner: &dyn ArchivePruner,
    keep: usize,
) -> Result<Vec<String>, SnapshotRunError> {
    let prefix = format!("{SNAPSHOT_PREFIX}{STATUS_VIEW}/");
    let usable: Vec<String> = list_snapshots(archive)
        .await?
        .into_iter()
        .filter_map(|entry| entry.ok().map(|m| m.id))
        .collect();
    let Some(oldest_kept) = usable.len().checked_sub(keep).and_then(|i| usable.get(i)) else {
        return Ok(Vec::new()); // no more than `keep`: nothing to delete
    };
    // Every object under the prefix, grouped by snapshot id (ids sort by time).
    let mut objects: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for key in snapshot_keys(archive).await? {
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
