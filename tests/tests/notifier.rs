//! Status-change events against LocalStack's DynamoDB Streams, EventBridge and SQS: the
//! processor writes STATUS (a real table with its stream on), the notifier's handler is given
//! the stream's records in the shape Lambda hands them over, puts the events on a bus, and a
//! rule delivers them to a queue, where each change is read back: every change once per
//! delivery, none for an event that lost or a redelivered batch, each with the row's version.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tidemark::adapters::eventbridge::{EventBridgePublisher, DETAIL_TYPE, EVENT_SOURCE};
use tidemark::adapters::memory::MemoryStream;
use tidemark::consumers::notifier::ChangeNotifier;
use tidemark::consumers::Consumer;
use tidemark::domain::{parse_event, EventTime, FixedClock, Limits};
use tidemark::ports::*;
use tidemark_tests::Resources;

/// A stream attribute as DynamoDB JSON, as Lambda's event carries it.
fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::M(m) => json!({ "M": image_json(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        other => panic!("STATUS holds no attribute like {other:?}"),
    }
}

fn image_json(image: &std::collections::HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        image
            .iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// Every record of the table's stream so far, as one Lambda DynamoDB event.
async fn stream_event(client: &aws_sdk_dynamodbstreams::Client, arn: &str) -> Value {
    let description = client
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    let mut records = Vec::new();
    for shard in description.stream_description().unwrap().shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard.shard_id().unwrap())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        // An open shard always has a next iterator: stop at the first empty page.
        while let Some(it) = iterator {
            let page = client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            if page.records().is_empty() {
                break;
            }
            for record in page.records() {
                let change = record.dynamodb().unwrap();
                let mut dynamodb = json!({
                    "SequenceNumber": change.sequence_number().unwrap(),
                    "SizeBytes": change.size_bytes().unwrap_or_default(),
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                });
                if let Some(old) = change.old_image() {
                    dynamodb["OldImage"] = image_json(old);
                }
                if let Some(new) = change.new_image() {
                    dynamodb["NewImage"] = image_json(new);
                }
                records.push(json!({
                    "eventID": record.event_id().unwrap(),
                    "eventName": record.event_name().unwrap().as_str(),
                    "awsRegion": "us-east-1",
                    "eventSource": "aws:dynamodb",
                    "eventSourceARN": arn,
                    "dynamodb": dynamodb,
                }));
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    json!({ "Records": records })
}

/// Records on an in-memory stream (the processor's input); the processor then writes the
/// LocalStack table.
async fn records(events: &[(&str, &str, &str)]) -> Vec<StreamRecord> {
    let stream = MemoryStream::new(1);
    let now = EventTime::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
    for (id, status, timestamp) in events {
        let json = json!({ "id": id, "status": status, "timestamp": timestamp }).to_string();
        let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
        let event = parse_event(raw, None, now, &Limits::default()).unwrap();
        stream
            .put(&OutgoingRecord {
                partition_key: event.id.clone(),
                data: Bytes::from(event.encode().unwrap()),
            })
            .await
            .unwrap();
    }
    let it = stream
        .shard_iterator("shardId-000000000000", &StartPosition::TrimHorizon)
        .await
        .unwrap();
    stream.get_records(&it, 100).await.unwrap().records
}

/// The events one receive (waiting up to a second) takes off the queue.
async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Value> {
    let page = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    page.messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn status_changes_reach_a_rule_target_through_the_table_stream() {
    let resources = Resources::create("notifier", 1).await;
    let dynamodb = resources.dynamodb();
    let table = &resources.names.status_table;
    dynamodb
        .update_table()
        .table_name(table)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let stream_arn = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("STATUS has a stream after UpdateTable")
        .to_owned();

    // The bus, a rule for the stack's events, and a queue to read them from.
    let events = aws_sdk_eventbridge::Client::new(&resources.sdk);
    let sqs = aws_sdk_sqs::Client::new(&resources.sdk);
    let bus = format!("{table}-changes");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{table}-changes"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .unwrap()
        .clone();
    events
        .put_rule()
        .name("status-changes")
        .event_bus_name(&bus)
        .event_pattern(
            json!({ "source": [EVENT_SOURCE], "detail-type": [DETAIL_TYPE] }).to_string(),
        )
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("status-changes")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // STATUS changes three times; an older event loses and a redelivered batch changes nothing.
    let adapters = resources.adapters();
    let clock = Arc::new(FixedClock(
        EventTime::parse_rfc3339("2026-12-04T12:00:00Z").unwrap(),
    ));
    let processor = adapters.processor(Default::default(), clock);
    let batch = records(&[
        ("order-a", "created", "2026-12-04T10:00:00Z"),
        ("order-b", "created", "2026-12-04T10:00:01Z"),
    ])
    .await;
    processor.consume("shardId-000000000000", &batch).await;
    processor.consume("shardId-000000000000", &batch).await; // redelivered
    let later = records(&[
        ("order-a", "delivered", "2026-12-04T10:00:05Z"),
        ("order-b", "lost-older", "2026-12-04T09:00:00Z"),
    ])
    .await;
    processor.consume("shardId-000000000000", &later).await;

    let streams = aws_sdk_dynamodbstreams::Client::new(&resources.sdk);
    let event = stream_event(&streams, &stream_arn).await;
    let notifier = ChangeNotifier::new(Arc::new(EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(&resources.sdk),
        &bus,
    )));
    let (response, report) =
        tidemark_processor::notifier::handle(&notifier, serde_json::from_value(event).unwrap())
            .await
            .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((report.outcome.published, report.unreadable), (3, 0));

    // Read the queue until the three arrived (bounded by polls, not by a clock).
    let mut received = Vec::new();
    for _ in 0..20 {
        received.extend(receive(&sqs, &queue_url).await);
        if received.len() >= 3 {
            break;
        }
    }
    // And nothing more: no event for the losing write or the redelivered batch.
    let extra = receive(&sqs, &queue_url).await;
    assert!(extra.is_empty(), "{extra:?}");
    let changes: BTreeSet<(String, Option<String>, String)> = received
        .iter()
        .map(|event| {
            assert_eq!(event["source"], EVENT_SOURCE);
            assert_eq!(event["detail-type"], DETAIL_TYPE);
            let d = &event["detail"];
            (
                d["id"].as_str().unwrap().to_owned(),
                d["old_status"].as_str().map(str::to_owned),
                d["new_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(received.len(), 3, "{received:#?}");
    assert_eq!(
        changes,
        BTreeSet::from([
            ("order-a".into(), None, "created".into()),
            ("order-a".into(), Some("created".into()), "delivered".into()),
            ("order-b".into(), None, "created".into()),
        ])
    );
    // Each id's last change carries the version its row has now.
    let status = adapters.status_reader();
    for id in ["order-a", "order-b"] {
        let row = status.get(id).await.unwrap().unwrap();
        let last = received
            .iter()
            .filter(|e| e["detail"]["id"] == id && e["detail"]["new_status"] == row.status.as_str())
            .count();
        assert_eq!(last, 1, "{id}");
        assert!(received.iter().any(|e| e["detail"]["id"] == id
            && e["detail"]["version"] == row.version.to_opaque().as_str()));
    }
    sqs.delete_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
    events
        .remove_targets()
        .rule("status-changes")
        .event_bus_name(&bus)
        .ids("queue")
        .send()
        .await
        .unwrap();
    events
        .delete_rule()
        .name("status-changes")
        .event_bus_name(&bus)
        .send()
        .await
        .unwrap();
    events.delete_event_bus().name(&bus).send().await.unwrap();
}
