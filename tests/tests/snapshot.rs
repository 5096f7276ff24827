//! Snapshots against LocalStack's DynamoDB, Kinesis and S3: a snapshot of STATUS taken while
//! events keep arriving, loaded into a new table, then only the records after its positions
//! (from the S3 archive and the stream): the rebuilt table equals the live one, and the archive
//! part applied fewer records than the archive holds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;

use serde_json::{json, Value};
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::dynamodb::{DynamoStatusStore, DynamoStatusView};
use tidemark::adapters::memory::MemoryDeadLetterStore;
use tidemark::consumers::processor::Processor;
use tidemark::consumers::views::check::compare_with_status;
use tidemark::consumers::views::status::StatusView;
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{Clock, SystemClock};
use tidemark::run::rebuild::{rebuild, rebuild_from_archive, ArchiveRebuild, RebuildProgress};
use tidemark::run::snapshot::{
    find_snapshot, list_snapshots, load_snapshot, load_view_snapshot, take_snapshot,
    SnapshotSource, StatusRows, StatusViewEntries, STATUS, STATUS_VIEW,
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
            rows: &StatusRows(status.as_ref()),
            archive: archive_writer.as_ref(),
        },
        SystemClock.now(),
        "ls",
    )
    .await
    .unwrap();
    // The status view's snapshot races the same events: its consumer's checkpoints, its entries.
    let view_checkpoints = adapters.checkpoints_of(ConsumerName::STATUS_VIEW).reader;
    let entries = adapters.status_view_scanner();
    let view_manifest = take_snapshot(
        SnapshotSource {
            checkpoints: view_checkpoints.as_ref(),
            shards: manifest.positions.keys().cloned().collect(),
            rows: &StatusViewEntries(entries.as_ref()),
            archive: archive_writer.as_ref(),
        },
        SystemClock.now(),
        "lv",
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
    let listed = list_snapshots(archive.as_ref(), STATUS).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");

    let into = format!("{}-from-snapshot", resources.names.status_table);
    let dynamodb = resources.dynamodb();
    ensure_table(&dynamodb, &into, "id", None).await.unwrap();
    let rebuilt = Arc::new(DynamoStatusStore::new(dynamodb.clone(), &into));
    let found = find_snapshot(archive.as_ref(), STATUS, "latest")
        .await
        .unwrap();
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

    // The status view from its snapshot and the records after it, into a new table: it lists
    // and counts exactly what STATUS holds.
    let view_into = format!("{}-view-from-snapshot", resources.names.status_table);
    ensure_table(&dynamodb, &view_into, "pk", Some("sk"))
        .await
        .unwrap();
    let view_table = Arc::new(DynamoStatusView::new(dynamodb.clone(), &view_into));
    let view = StatusView::new(
        view_table.clone(),
        Default::default(),
        Arc::new(SystemClock),
    );
    let found = find_snapshot(archive.as_ref(), STATUS_VIEW, "latest")
        .await
        .unwrap();
    assert_eq!(found, view_manifest);
    assert_eq!(found.rows, 10, "{found:?}");
    load_view_snapshot(archive.as_ref(), &found, &view)
        .await
        .unwrap();
    let mut progress = RebuildProgress::after_snapshot(&found).unwrap();
    rebuild_from_archive(
        ArchiveRebuild::new(archive.as_ref(), &view).after_positions(found.positions().unwrap()),
        &mut progress,
    )
    .await
    .unwrap();
    rebuild(
        stream.as_ref(),
        &view,
        Default::default(),
        &mut progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
    .unwrap();
    let shards: Vec<String> = found.positions.keys().cloned().collect();
    let differences = compare_with_status(
        adapters.status_scanner().as_ref(),
        view_table.as_ref(),
        &shards,
    )
    .await
    .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
    let _ = dynamodb.delete_table().table_name(&view_into).send().await;
}
