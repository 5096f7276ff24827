//! Synthetic Kinesis and Kafka events of any size, shaped exactly as Lambda sends them (the
//! `aws_lambda_events` types do the base64): for the processor benchmark and the cold-start bench
//! (`tidemark coldstart`). Hand-written fixtures live in `events/`.

use aws_lambda_events::encodings::SecondTimestamp;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use base64::Engine as _;
use chrono::DateTime;
use serde_json::{json, Value};

fn body(id: &str, i: usize) -> String {
    format!(
        r#"{{"id":"{id}","status":"status-{i}","timestamp":"2024-05-01T12:00:00.{:09}Z","received_at":"2024-05-01T12:00:01Z","data":{{"carrier":"ups","weight_kg":1.5,"hub":"FRA"}}}}"#,
        i % 1_000_000_000
    )
}

/// The same records as [`kinesis_event`] from one partition of a Kafka topic, as an MSK event
/// source mapping sends them (JSON: the consumers only read this shape, they never write it).
pub fn kafka_event(records: usize, per_id: usize) -> Value {
    let ids = (records / per_id).max(1);
    let base64 = base64::engine::general_purpose::STANDARD;
    let batch: Vec<Value> = (0..records)
        .map(|i| {
            let id = format!("order-{:07}", i % ids);
            json!({
                "topic": "tidemark-events",
                "partition": 0,
                "offset": i,
                "timestamp": 1_714_564_801_000_i64,
                "timestampType": "CREATE_TIME",
                "key": base64.encode(&id),
                "value": base64.encode(body(&id, i)),
                "headers": [],
            })
        })
        .collect();
    json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:eu-west-1:123456789012:cluster/tidemark/abcd1234-ab12-cd34-ef56-abcdef123456-2",
        "bootstrapServers": "b-1.tidemark.kafka.eu-west-1.amazonaws.com:9098",
        "records": { "tidemark-events-0": batch },
    })
}

/// A Lambda Kinesis event of `records` records, `per_id` records per id, as Lambda sends it.
pub fn kinesis_event(records: usize, per_id: usize) -> KinesisEvent {
    let ids = (records / per_id).max(1);
    // 2024-05-01T12:00:01Z, a second after the events' own times.
    let arrival = DateTime::from_timestamp(1_714_564_801, 0).unwrap_or_default();
    let mut event = KinesisEvent::default();
    for i in 0..records {
        let id = format!("order-{:07}", i % ids);
        let sequence = format!("4959{:052}", i + 1);
        let body = body(&id, i);
        let mut record = KinesisEventRecord::default();
        record.event_id = Some(format!("shardId-000000000000:{sequence}"));
        record.event_name = Some("aws:kinesis:record".into());
        record.event_source = Some("aws:kinesis".into());
        record.event_source_arn =
            Some("arn:aws:kinesis:eu-west-1:123456789012:stream/tidemark-events".into());
        record.aws_region = Some("eu-west-1".into());
        record.kinesis.sequence_number = sequence;
        record.kinesis.partition_key = id;
        *record.kinesis.data = body.into_bytes();
        record.kinesis.approximate_arrival_timestamp = SecondTimestamp(arrival);
        event.records.push(record);
    }
    event
}
