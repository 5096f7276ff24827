//! The processor Lambda's handler over `events/processor/kinesis-batch.json`, the fixture
//! `cargo lambda invoke` sends (scripts/invoke-check): out-of-order events, a producer duplicate
//! and two poison records in one shard's batch, on in-memory adapters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lambda_events::event::kinesis::KinesisEvent;
use tidemark::adapters::faults::RefusesRows;
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::domain::{EventTime, FixedClock};
use tidemark::ports::{CheckpointReader, DeadLetterReader};
use tidemark_processor::{Handler, InvalidEvent};

const BATCH: &str = include_str!("../../../events/processor/kinesis-batch.json");

fn batch() -> KinesisEvent {
    serde_json::from_str(BATCH).unwrap()
}

fn handler(adapters: &Adapters) -> Handler {
    // Just after the fixture's receive times, so no timestamp is in the future.
    let now = EventTime::parse_rfc3339("2026-11-22T10:10:01Z").unwrap();
    Handler::new(
        adapters,
        ProcessorSettings::default(),
        Arc::new(FixedClock(now)),
    )
}

#[tokio::test]
async fn the_fixture_batch_ends_each_id_at_its_newest_and_sets_poison_aside() {
    let adapters = Adapters::memory(1);
    let memory = adapters.memory_backend().unwrap().clone();
    let handler = handler(&adapters);
    let event = batch();
    let sequences: Vec<String> = event
        .records
        .iter()
        .map(|r| r.kinesis.sequence_number.clone())
        .collect();

    let (response, report) = handler.process(batch()).await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!((report.records, report.distinct_ids), (9, 3));
    assert_eq!((report.applied, report.dead_lettered), (3, 2));

    let rows = memory.status.snapshot();
    assert_eq!(
        rows["order-1"].status, "shipped",
        "10:05 beats 10:02 and 10:00"
    );
    assert_eq!(
        rows["order-2"].status, "delivered",
        "09:30Z beats 10:00+01:00 (09:00Z); the duplicate's later sequence number wins the tie"
    );
    assert_eq!(rows["order-2"].sequence_number.as_str(), sequences[5]);
    assert_eq!(rows["order-3"].status, "created");
    assert_eq!(
        rows["order-3"].data.as_deref(),
        Some(r#"{"carrier":"DHL","parcels":2}"#)
    );

    let letters = memory.dead_letters.list().await.unwrap();
    let dead: BTreeSet<&str> = letters.iter().map(|l| l.sequence_number.as_str()).collect();
    assert_eq!(
        dead,
        BTreeSet::from([sequences[6].as_str(), sequences[7].as_str()]),
        "the undecodable record and the event without a status"
    );
    let checkpoint = memory
        .checkpoints
        .get("shardId-000000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.sequence_number.as_str(), sequences[8]);
    assert_eq!(checkpoint.records_applied, 9);

    // Redelivery (Lambda retries a batch whose answer was lost) changes nothing.
    let before = memory.status.snapshot();
    let (response, report) = handler.process(batch()).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((report.applied, report.stale), (0, 3));
    assert_eq!(memory.status.snapshot(), before);
}

#[tokio::test]
async fn an_event_lambda_could_not_have_sent_fails_loudly() {
    let adapters = Adapters::memory(1);
    let handler = handler(&adapters);

    let mut bad_sequence = batch();
    bad_sequence.records[4].kinesis.sequence_number = "not-a-number".into();
    let err = handler.process(bad_sequence).await.unwrap_err();
    assert!(
        matches!(err, InvalidEvent::SequenceNumber { index: 4, .. }),
        "{err}"
    );

    let mut no_shard = batch();
    no_shard.records[0].event_id = None;
    let err = handler.process(no_shard).await.unwrap_err();
    assert!(
        matches!(err, InvalidEvent::MissingShard { index: 0 }),
        "{err}"
    );

    let memory = adapters.memory_backend().unwrap();
    assert!(
        memory.status.snapshot().is_empty(),
        "nothing is applied from an invalid event"
    );

    let (response, report) = handler.process(KinesisEvent::default()).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(report.records, 0);
}

/// In Lambda, a record STATUS refuses for good is set aside, the id falls back to its newest
/// record that can be applied, and the batch succeeds: nothing for the mapping to retry.
#[tokio::test]
async fn records_status_refuses_are_set_aside_and_the_batch_succeeds() {
    let adapters = Adapters::memory(1);
    let memory = adapters.memory_backend().unwrap().clone();
    // order-1 at `shipped` (10:05) and at `packed` (10:02) cannot be stored.
    let adapters = adapters.with_status_writer(Arc::new(RefusesRows {
        inner: memory.status.clone(),
        refuse: |row| row.id == "order-1" && (row.status == "shipped" || row.status == "packed"),
    }));
    let sequences: Vec<String> = batch()
        .records
        .iter()
        .map(|r| r.kinesis.sequence_number.clone())
        .collect();

    let (response, report) = handler(&adapters).process(batch()).await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(report.failed, 0);
    assert_eq!(
        memory.status.snapshot()["order-1"].status,
        "created",
        "shipped (10:05) and packed (10:02) are refused; created (10:00) is the newest left"
    );
    let dead = memory.dead_letters.sequence_numbers();
    assert_eq!(
        dead,
        BTreeSet::from([1, 2, 6, 7].map(|i| sequences[i].clone())),
        "the two refused records beside the two poison ones"
    );
    let checkpoint = memory
        .checkpoints
        .get("shardId-000000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.sequence_number.as_str(), sequences[8]);
}
