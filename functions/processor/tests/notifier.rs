//! The notifier Lambda's handler over STATUS stream fixtures and generated batches: each change
//! published once with the row's version, deletions and unreadable images skipped (never
//! retried), and a failed publish reported so the mapping's retry from it publishes every
//! change at least once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use serde_json::{json, Value};
use tidemark::adapters::memory::MemoryChangeBus;
use tidemark::consumers::notifier::ChangeNotifier;
use tidemark::ports::{ChangePublisher, StatusChange, StoreError};
use tidemark_processor::notifier::handle;

const BATCH: &str = include_str!("../../../events/notifier/status-stream-batch.json");

#[tokio::test]
async fn the_fixture_publishes_each_change_once_and_skips_the_rest() {
    let bus = Arc::new(MemoryChangeBus::default());
    let notifier = ChangeNotifier::new(bus.clone());
    let event: Event = serde_json::from_str(BATCH).unwrap();
    let (response, report) = handle(&notifier, event).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(report.unreadable, 1, "the image without a version");
    assert_eq!(report.outcome.not_changes, 1, "the deletion");
    assert_eq!(report.outcome.published, 3);
    let published: Vec<Value> = bus.published().iter().map(StatusChange::to_json).collect();
    let summary: Vec<(Value, Value, Value)> = published
        .iter()
        .map(|c| {
            (
                c["id"].clone(),
                c["old_status"].clone(),
                c["new_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("order-1"), Value::Null, json!("created")),
            (json!("order-1"), json!("created"), json!("shipped")),
            (json!("order-2"), Value::Null, json!("failed")),
        ]
    );
    // The version is the one GET /messages/{id} gives for the row: a key of the fixture's shape.
    let raw: Value = serde_json::from_str(BATCH).unwrap();
    let key = raw["Records"][1]["dynamodb"]["NewImage"]["version"]["S"]
        .as_str()
        .unwrap();
    let expected = tidemark::domain::VersionKey(key.to_owned()).to_opaque();
    assert_eq!(published[1]["version"], json!(expected));
    assert_eq!(published[1]["changed_at"], "2026-12-04T10:00:01Z");
    assert!(published.iter().all(|c| c.get("data").is_none()));
}

#[tokio::test]
async fn a_record_without_a_sequence_number_fails_the_invocation() {
    let mut raw: Value = serde_json::from_str(BATCH).unwrap();
    raw["Records"][2]["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("SequenceNumber");
    let event: Event = serde_json::from_value(raw).unwrap();
    let notifier = ChangeNotifier::new(Arc::new(MemoryChangeBus::default()));
    let error = handle(&notifier, event).await.unwrap_err();
    assert_eq!(error.index, 2);
}

/// A bus that refuses the `fail_at`-th change it is sent (counting from 0 over every call),
/// after keeping the ones before it in that call.
struct FailsOnce {
    sent: Mutex<usize>,
    fail_at: usize,
    delivered: Mutex<Vec<StatusChange>>,
}

#[async_trait]
impl ChangePublisher for FailsOnce {
    async fn publish(&self, changes: &[StatusChange]) -> Vec<Result<(), StoreError>> {
        let mut sent = self.sent.lock().unwrap();
        changes
            .iter()
            .map(|change| {
                let n = *sent;
                *sent += 1;
                if n == self.fail_at {
                    Err(StoreError::Throttled("injected".into()))
                } else {
                    self.delivered.lock().unwrap().push(change.clone());
                    Ok(())
                }
            })
            .collect()
    }
}

/// `n` changes of distinct ids as a DynamoDB stream event, positions 1..=n.
fn inserts(n: usize) -> Value {
    let records: Vec<Value> = (1..=n)
        .map(|i| {
            json!({
                "eventID": format!("e{i}"), "eventName": "INSERT", "awsRegion": "us-east-1",
                "dynamodb": {
                    "SequenceNumber": format!("{i:021}"), "SizeBytes": 200,
                    "NewImage": {
                        "id": {"S": format!("id-{i}")}, "status": {"S": "created"},
                        "timestamp": {"S": "2026-12-04T10:00:00Z"},
                        "received_at": {"S": "2026-12-04T10:00:00Z"},
                        "shard_id": {"S": "shardId-000000000000"},
                        "sequence_number": {"S": i.to_string()},
                        "version": {"S": format!("{:022}#{i:0>128}", 7)},
                        "updated_at": {"S": "2026-12-04T10:00:01Z"}
                    }
                }
            })
        })
        .collect();
    json!({ "Records": records })
}

/// For a failure at every place in a batch of 25 (three PutEvents calls): the invocation
/// reports that record, publishes nothing after it, and the mapping's retry from it (the
/// records from that position on) completes the set: every change at least once.
#[tokio::test]
async fn a_failed_publish_is_reported_and_the_retry_from_it_completes_the_set() {
    let event = inserts(25);
    for fail_at in 0..25 {
        let bus = Arc::new(FailsOnce {
            sent: Mutex::new(0),
            fail_at,
            delivered: Mutex::default(),
        });
        let notifier = ChangeNotifier::new(bus.clone());
        let first: Event = serde_json::from_value(event.clone()).unwrap();
        let (response, report) = handle(&notifier, first).await.unwrap();
        let failed = response.batch_item_failures[0]
            .item_identifier
            .clone()
            .unwrap();
        assert_eq!(failed, format!("{:021}", fail_at + 1));
        assert_eq!(report.outcome.published, fail_at);
        // Calls stop at the failing one: no change after it was sent in this invocation.
        assert_eq!(*bus.sent.lock().unwrap(), ((fail_at / 10 + 1) * 10).min(25));

        // The mapping retries from the reported record on.
        let mut retry = event.clone();
        let records = retry["Records"].as_array_mut().unwrap();
        records.drain(..fail_at);
        let (response, _) = handle(&notifier, serde_json::from_value(retry).unwrap())
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        let mut ids: Vec<String> = bus
            .delivered
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 25, "failing at {fail_at}");
    }
}
