//! Snapshots against LocalStack's DynamoDB, Kinesis and S3: a snapshot of STATUS taken while
//! events keep arriving, loaded into a new table, then only the records after its positions
//! (from the S3 archive and the stream): the rebuilt table equals the live one, and the archive
//! part applied fewer records than the archive holds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;

use serde_json::{json, Value};
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::adapters::memory::MemoryDeadLetterStore;
use tidemark::consumers::processor::Processor;
use tidemark::domain::{Clock, SystemClock};
use tidemark::run::rebuild::{rebuild, rebuild_from_archive, ArchiveRebuild, RebuildProgress};
use tidemark::run::snapshot::{
    find_snapshot, list_snapshots, load_snapshot, take_snapshot, SnapshotSource,
};
use tidemark::run::verify::verify;
use tidemark_tests::{quick_settings, wait_until_applied, Resources, Running};

fn batch(round: u32) -> Value {
    let events: Vec<Value> = (0..40u32)
        .map(|n| {
            json!({
                "id": format!("order-{}", n % 10),
                "status": format!("r{round}-s{n}"),
                "timestamp": format!("2026-12-04T12:{:02}:{:02}Z", round, (n * 7) % 60),
            })
        })
        .collect();
    json!({ "events": events })
}

async fn post(http: &reqwest::Client, base: &str, round: u32) {
    let answer: Value = http
        .post(format!("{base}/events/batch"))
        .json(&batch(round))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 40, "{answer}");
}

#[tokio::test]
async fn a_snapshot_taken_while_events_arrive_plus_the_tail_rebuilds_status_on_localstack() {
    let resources = Resources::create("snapshot", 2).await;
    let adapters = resources.adapters();
    let running = Running::start(adapters.clone(), quick_settings()).await;
    let http = reqwest::Client::new();
    let stream = adapters.shard_reader();
    post(&http, &running.base, 0).await;
    wait_until_applied(&http, &running.base, stream.as_ref(), 60).await;

    // The snapshot races a second round of events.
    let posting = {
        let (http, base) = (http.clone(), running.base.clone());
        tokio::spawn(async move { post(&http, &base, 1).await })
    };
    let archive = adapters.archive_reader();
    let archive_writer = adapters.archive_writer();
    let checkpoints = adapters.checkpoint_reader();
    let status = adapters.status_scanner();
    let shards = stream.list_shards().await.unwrap();
    let manifest = take_snapshot(
        SnapshotSource {
            checkpoints: checkpoints.as_ref(),
            shards: shards.into_iter().map(|s| s.shard_id).collect(),
            status: status.as_ref(),
            archive: archive_writer.as_ref(),
        },
        SystemClock.now(),
        "ls",
    )
    .await
    .unwrap();
    posting.await.unwrap();
    post(&http, &running.base, 2).await;
    wait_until_applied(&http, &running.base, stream.as_ref(), 60).await;
    running.stop().await;
    assert_eq!(manifest.positions.len(), 2, "{manifest:?}");
    assert_eq!(manifest.rows, 10);
    // Both shards were checkpointed: the tail is bounded (not the whole archive).
    assert!(!manifest.archive_from.is_empty(), "{manifest:?}");
    let listed = list_snapshots(archive.as_ref()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");

    let into = format!("{}-from-snapshot", resources.names.status_table);
    let dynamodb = resources.dynamodb();
    ensure_table(&dynamodb, &into, "id", None).await.unwrap();
    let rebuilt = Arc::new(DynamoStatusStore::new(dynamodb.clone(), &into));
    let found = find_snapshot(archive.as_ref(), "latest").await.unwrap();
    assert_eq!(found, manifest);
    assert_eq!(
        load_snapshot(archive.as_ref(), &found, rebuilt.as_ref())
            .await
            .unwrap(),
        10
    );
    let processor = Processor::new(
        rebuilt.clone(),
        Arc::new(MemoryDeadLetterStore::default()),
        Default::default(),
        Arc::new(SystemClock),
    );
    let mut progress = RebuildProgress::after_snapshot(&found).unwrap();
    let from_archive = rebuild_from_archive(
        ArchiveRebuild::new(archive.as_ref(), &processor)
            .after_positions(found.positions().unwrap()),
        &mut progress,
    )
    .await
    .unwrap();
    assert!(from_archive.corrupt_objects.is_empty());
    // Of the 120 archived records, the first round's 40 are in the snapshot and skipped.
    assert!(from_archive.records <= 80, "{from_archive:?}");
    rebuild(
        stream.as_ref(),
        &processor,
        Default::default(),
        &mut progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
    .unwrap();
    let difference = verify(adapters.status_scanner().as_ref(), rebuilt.as_ref(), 10)
        .await
        .unwrap();
    assert_eq!(
        (difference.expected_rows, difference.difference_count),
        (10, 0),
        "{difference:?}"
    );
    let _ = dynamodb.delete_table().table_name(&into).send().await;
}
