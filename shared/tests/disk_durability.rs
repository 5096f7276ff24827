//! The tables on disk: writes that stop are made durable on their own (so a crash while idle
//! leaves nothing to apply again), and a view emptied for a local rebuild takes its consumer's
//! checkpoints with it and nothing else.

#![cfg(feature = "disk")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::path::PathBuf;
use std::time::Duration;

use tidemark::adapters::disk::{DiskTables, DiskView};
use tidemark::domain::status_view::{ViewChange, ViewEntry};
use tidemark::domain::{SequenceNumber, VersionKey};
use tidemark::ports::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tidemark-disk-durability-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn row(id: &str, sequence: u32) -> StatusRow {
    StatusRow {
        id: id.into(),
        status: "shipped".into(),
        timestamp: "2026-12-05T00:00:01Z".into(),
        data: None,
        received_at: "2026-12-05T00:00:02Z".into(),
        shard_id: "shard-1".into(),
        sequence_number: SequenceNumber::parse(&sequence.to_string()).unwrap(),
        version: VersionKey(format!("2026-12-05T00:00:01Z#{sequence:05}")),
        updated_at: "2026-12-05T00:00:03Z".into(),
    }
}

fn checkpoint(shard_id: &str, sequence: u32) -> Checkpoint {
    Checkpoint {
        shard_id: shard_id.into(),
        sequence_number: SequenceNumber::parse(&sequence.to_string()).unwrap(),
        updated_at: "2026-12-05T00:00:03Z".into(),
        records_applied: 1,
        lag_ms: 0,
        mirrored_into: None,
    }
}

/// The file as a crash would leave it: a copy taken while it is open holds the last durable
/// commit (a commit without fsync updates the header only in memory).
#[tokio::test]
async fn writes_that_stop_are_made_durable_within_half_a_second() {
    let dir = scratch("idle");
    let (tables, _) = DiskTables::open(&dir, 1 << 20, None).unwrap();
    // Right after the open's own durable commit: committed without fsync.
    tables.apply(row("order-1", 7)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let copy = scratch("idle-copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.join("tables.redb"), copy.join("tables.redb")).unwrap();
    let (crashed, _) = DiskTables::open(&copy, 1 << 20, None).unwrap();
    assert_eq!(
        StatusReader::get(crashed.as_ref(), "order-1")
            .await
            .unwrap(),
        Some(row("order-1", 7))
    );
    drop((tables, crashed));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}

#[tokio::test]
async fn a_reset_view_goes_with_its_consumers_checkpoints_and_nothing_else() {
    let dir = scratch("reset");
    let (tables, _) = DiskTables::open(&dir, 1 << 20, None).unwrap();
    let oplog: &dyn CheckpointWriter = tables.as_ref();
    tables.apply(row("order-1", 7)).await.unwrap();
    let entry = ViewEntry {
        id: "order-1".into(),
        status: "shipped".into(),
        version: VersionKey("2026-12-05T00:00:01Z#00007".into()),
        shard_id: "shard-1".into(),
    };
    let committed = tables
        .commit(&[ViewChange {
            before: None,
            after: entry.clone(),
        }])
        .await
        .unwrap();
    assert_eq!(committed, ViewCommit::Committed);
    // OPLOG keys as `ConsumerName::oplog_key` makes them: the processor's is the shard id.
    for key in ["shard-1", "status-view:shard-1", "archiver:shard-1"] {
        oplog.advance(&checkpoint(key, 7)).await.unwrap();
    }
    let shards = ["shard-1".to_owned()];

    tables.reset(DiskView::Status).await.unwrap();
    assert_eq!(
        StatusReader::get(tables.as_ref(), "order-1").await.unwrap(),
        None
    );
    assert_eq!(
        keys(&tables).await,
        ["archiver:shard-1", "status-view:shard-1"]
    );
    assert_eq!(
        tables.counts(&shards).await.unwrap().len(),
        1,
        "the view stays"
    );

    tables.apply(row("order-2", 8)).await.unwrap();
    tables.reset(DiskView::StatusView).await.unwrap();
    assert!(tables.counts(&shards).await.unwrap().is_empty());
    assert!(tables.entry_page(None).await.unwrap().entries.is_empty());
    assert_eq!(keys(&tables).await, ["archiver:shard-1"]);
    assert_eq!(
        StatusReader::get(tables.as_ref(), "order-2").await.unwrap(),
        Some(row("order-2", 8)),
        "STATUS stays"
    );
    // The view takes new commits after it was emptied.
    let committed = tables
        .commit(&[ViewChange {
            before: None,
            after: entry,
        }])
        .await
        .unwrap();
    assert_eq!(committed, ViewCommit::Committed);
    drop(tables);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every OPLOG key with a checkpoint, sorted.
async fn keys(tables: &DiskTables) -> Vec<String> {
    let mut keys: Vec<String> = CheckpointReader::list(tables)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.shard_id)
        .collect();
    keys.sort();
    keys
}
