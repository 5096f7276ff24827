//! Snapshots in the archive: an altered or truncated snapshot is refused before any row is
//! written; an unreadable manifest is listed with its reason and `latest` passes over it;
//! pruning keeps the newest and removes the rest, leftovers included; the whole archive still
//! rebuilds STATUS, snapshots in it or not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::{put_event, read_batch, row_states, snapshot_source};
use tidemark::adapters::memory::{MemoryBackend, MemoryStatusStore};
use tidemark::adapters::Adapters;
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::snapshot::{SnapshotError, SnapshotManifest};
use tidemark::domain::{EventTime, FixedClock, Limits};
use tidemark::ports::*;
use tidemark::run::rebuild::{rebuild_from_archive, ArchiveRebuild, RebuildProgress};
use tidemark::run::snapshot::{
    find_snapshot, list_snapshots, load_snapshot, prune_snapshots, take_snapshot, SnapshotRunError,
    StatusRows, STATUS,
};

const STATUSES: [&str; 4] = ["created", "shipped", "delivered", "failed"];

fn base() -> EventTime {
    EventTime::parse_rfc3339("2026-12-04T00:00:00Z").unwrap()
}

/// Every record of every shard through `consumer` in one batch per shard, checkpointed.
async fn settle(memory: &MemoryBackend, consumer: &CheckpointedConsumer) {
    for shard in memory.stream.list_shards().await.unwrap() {
        let batch = read_batch(
            &memory.stream,
            &shard.shard_id,
            &StartPosition::TrimHorizon,
            1000,
        )
        .await;
        if !batch.is_empty() {
            let outcome = consumer.run_batch(&shard.shard_id, &batch).await;
            assert!(outcome.failure.is_none(), "{outcome:?}");
        }
    }
}

/// A small settled pipeline and a snapshot of it.
async fn settled_with_snapshot() -> (MemoryBackend, Adapters, SnapshotManifest) {
    let memory = MemoryBackend::new(2);
    for i in 0..12u64 {
        let timestamp = base().saturating_add(Duration::from_millis(i));
        let id = format!("id-{}", i % 5);
        put_event(
            &memory.stream,
            &id,
            STATUSES[i as usize % STATUSES.len()],
            timestamp,
            1,
        )
        .await;
    }
    let adapters = Adapters::in_memory(memory.clone());
    let clock = Arc::new(FixedClock(base()));
    let processing = CheckpointedConsumer::new(
        Arc::new(adapters.processor(Default::default(), clock.clone())),
        adapters.checkpoint_writer(),
    );
    let checkpoints = adapters.checkpoint_reader();
    settle(&memory, &processing).await;
    let manifest = take_snapshot(
        snapshot_source(
            &memory,
            checkpoints.as_ref(),
            &StatusRows(memory.status.as_ref()),
        )
        .await,
        clock.0,
        "a",
    )
    .await
    .unwrap();
    (memory, adapters, manifest)
}

#[tokio::test]
async fn an_altered_or_truncated_snapshot_is_refused_before_any_row_is_written() {
    let (memory, _, manifest) = settled_with_snapshot().await;
    assert_eq!(manifest.rows, 5);
    let body = memory.archive.get(&manifest.body_key).await.unwrap();
    let mut flipped = body.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let truncated = body.slice(..body.len() - 10);
    for (what, bad) in [("altered", Bytes::from(flipped)), ("truncated", truncated)] {
        memory.archive.put(&manifest.body_key, bad).await.unwrap();
        let target = MemoryStatusStore::default();
        let error = load_snapshot(memory.archive.as_ref(), &manifest, &target)
            .await
            .unwrap_err();
        assert!(
            matches!(error, SnapshotRunError::Snapshot(SnapshotError::Corrupt(_))),
            "{what}: {error}"
        );
        assert!(error.to_string().contains("SHA-256"), "{what}: {error}");
        assert!(target.snapshot().is_empty(), "{what}: rows were written");
    }
}

#[tokio::test]
async fn an_unreadable_manifest_is_listed_with_its_reason_and_latest_skips_it() {
    let (memory, _, manifest) = settled_with_snapshot().await;
    let mut newer = serde_json::to_value(&manifest).unwrap();
    newer["id"] = "29991231T000000Z-z".into();
    newer["format"] = 2.into();
    let key = SnapshotManifest::manifest_key("status", "29991231T000000Z-z");
    memory
        .archive
        .put(&key, Bytes::from(newer.to_string()))
        .await
        .unwrap();
    memory
        .archive
        .put(
            &SnapshotManifest::manifest_key("status", "29991231T000001Z-y"),
            Bytes::from_static(b"{not json"),
        )
        .await
        .unwrap();
    let listed = list_snapshots(memory.archive.as_ref(), STATUS)
        .await
        .unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let errors: Vec<String> = listed
        .iter()
        .filter_map(|e| e.as_ref().err().map(|(k, e)| format!("{k}: {e}")))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("format 2")), "{errors:?}");
    // The newest readable one is the real snapshot; the broken one, asked for by name, says why.
    let latest = find_snapshot(memory.archive.as_ref(), STATUS, "latest")
        .await
        .unwrap();
    assert_eq!(latest, manifest);
    let named = find_snapshot(memory.archive.as_ref(), STATUS, "29991231T000000Z-z")
        .await
        .unwrap_err();
    assert!(named.to_string().contains("format 2"), "{named}");
    assert!(matches!(
        find_snapshot(memory.archive.as_ref(), STATUS, "nope").await,
        Err(SnapshotRunError::NotFound(_))
    ));
}

/// Without a snapshot (or after refusing one) the whole archive still rebuilds STATUS, and the
/// snapshot's own objects in the archive are not read as archive objects.
#[tokio::test]
async fn the_whole_archive_rebuilds_status_beside_a_snapshot() {
    let (memory, adapters, _) = settled_with_snapshot().await;
    let clock = Arc::new(FixedClock(base()));
    let archiving = CheckpointedConsumer::new(
        Arc::new(Archiver::new(
            memory.archive.clone(),
            None,
            Limits::default(),
            clock.clone(),
        )),
        adapters.checkpoints_of(ConsumerName::ARCHIVER).writer,
    );
    settle(&memory, &archiving).await;
    let rebuilt = Arc::new(MemoryStatusStore::default());
    let rebuilding = adapters
        .clone()
        .with_status_writer(rebuilt.clone())
        .processor(Default::default(), clock);
    let report = rebuild_from_archive(
        ArchiveRebuild::new(memory.archive.as_ref(), &rebuilding),
        &mut RebuildProgress::default(),
    )
    .await
    .unwrap();
    assert!(
        report.corrupt_objects.is_empty(),
        "{:?}",
        report.corrupt_objects
    );
    assert_eq!(
        row_states(rebuilt.snapshot()),
        row_states(memory.status.snapshot())
    );
}

#[tokio::test]
async fn pruning_keeps_the_newest_and_removes_the_rest_with_their_leftovers() {
    let (memory, adapters, first) = settled_with_snapshot().await;
    let checkpoints = adapters.checkpoint_reader();
    let rows = StatusRows(memory.status.as_ref());
    let mut ids = vec![first.id.clone()];
    for (n, suffix) in ["b", "c", "d"].into_iter().enumerate() {
        let at = base().saturating_add(Duration::from_secs(60 * (n as u64 + 1)));
        let source = snapshot_source(&memory, checkpoints.as_ref(), &rows).await;
        ids.push(take_snapshot(source, at, suffix).await.unwrap().id);
    }
    // What an interrupted snapshot leaves: rows without a manifest, older than the kept ones.
    let leftover = SnapshotManifest::body_key("status", "20000101T000000Z-x");
    memory
        .archive
        .put(&leftover, Bytes::from_static(b"partial"))
        .await
        .unwrap();
    let deleted = prune_snapshots(memory.archive.as_ref(), memory.archive.as_ref(), STATUS, 2)
        .await
        .unwrap();
    assert_eq!(
        deleted,
        ["20000101T000000Z-x", ids[0].as_str(), ids[1].as_str()]
    );
    let kept: Vec<String> = list_snapshots(memory.archive.as_ref(), STATUS)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap().id)
        .collect();
    assert_eq!(kept, ids[2..]);
    assert!(memory.archive.get(&leftover).await.is_err());
    // The kept ones are whole; pruning again deletes nothing.
    let newest = find_snapshot(memory.archive.as_ref(), STATUS, "latest")
        .await
        .unwrap();
    let target = MemoryStatusStore::default();
    load_snapshot(memory.archive.as_ref(), &newest, &target)
        .await
        .unwrap();
    assert_eq!(target.snapshot().len(), 5);
    assert!(
        prune_snapshots(memory.archive.as_ref(), memory.archive.as_ref(), STATUS, 2)
            .await
            .unwrap()
            .is_empty()
    );
}
