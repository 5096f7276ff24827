//! What several model tests share: putting a status event on an in-memory stream the way the
//! ingest API would, and reading a shard's next batch.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses some of it

use std::collections::BTreeMap;

use bytes::Bytes;
use tidemark::adapters::memory::{MemoryBackend, MemoryStream};
use tidemark::domain::{parse_event, EventTime, Limits};
use tidemark::ports::*;
use tidemark::run::snapshot::{SnapshotRows, SnapshotSource};

/// Puts the event `{id, status, timestamp}` on `stream` `copies` times (a producer's retries).
pub async fn put_event(
    stream: &MemoryStream,
    id: &str,
    status: &str,
    timestamp: EventTime,
    copies: u8,
) {
    let json = serde_json::json!({
        "id": id,
        "status": status,
        "timestamp": timestamp.to_rfc3339(),
    })
    .to_string();
    let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
    let event = parse_event(raw, None, timestamp, &Limits::default()).unwrap();
    for _ in 0..copies {
        stream
            .put(&OutgoingRecord {
                partition_key: event.id.clone(),
                data: Bytes::from(event.encode().unwrap()),
            })
            .await
            .unwrap();
    }
}

/// Up to `size` records of `shard` from `from`.
pub async fn read_batch(
    stream: &MemoryStream,
    shard: &str,
    from: &StartPosition,
    size: usize,
) -> Vec<StreamRecord> {
    let it = stream.shard_iterator(shard, from).await.unwrap();
    stream.get_records(&it, size).await.unwrap().records
}

/// What a rebuild must reproduce of each row: its status, version and data (`updated_at` is
/// the writer's clock).
pub fn row_states(
    rows: impl IntoIterator<Item = (String, StatusRow)>,
) -> BTreeMap<String, (String, String, Option<String>)> {
    rows.into_iter()
        .map(|(id, r)| (id, (r.status, r.version.0, r.data)))
        .collect()
}

/// A snapshot of a view's `rows`, with its consumer's `checkpoints`, into the backend's archive.
pub async fn snapshot_source<'a>(
    memory: &'a MemoryBackend,
    checkpoints: &'a dyn CheckpointReader,
    rows: &'a dyn SnapshotRows,
) -> SnapshotSource<'a> {
    SnapshotSource {
        checkpoints,
        shards: memory
            .stream
            .list_shards()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.shard_id)
            .collect(),
        rows,
        archive: memory.archive.as_ref(),
    }
}
