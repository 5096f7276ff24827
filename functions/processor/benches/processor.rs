//! One Kinesis batch through the processor Lambda's handler with in-memory stores: the Lambda
//! event's JSON parsed, records decoded and validated, coalesced, and the conditional writes
//! built and applied. Prints the DynamoDB calls per batch (write economy) before timing.
//! Run: `cargo bench -p tidemark-processor`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::encodings::SecondTimestamp;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::domain::{EventTime, FixedClock};
use tidemark::processor::ProcessorSettings;
use tidemark_processor::Handler;

/// A Lambda Kinesis event of `records` records, `per_id` records per id, as Lambda sends it.
fn lambda_event_json(records: usize, per_id: usize) -> Vec<u8> {
    let ids = (records / per_id).max(1);
    let arrival = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 1).unwrap();
    let mut event = KinesisEvent::default();
    for i in 0..records {
        let id = format!("order-{:07}", i % ids);
        let sequence = format!("4959{:052}", i + 1);
        let body = format!(
            r#"{{"id":"{id}","status":"status-{i}","timestamp":"2024-05-01T12:00:00.{:09}Z","received_at":"2024-05-01T12:00:01Z","data":{{"carrier":"ups","weight_kg":1.5,"hub":"FRA"}}}}"#,
            i % 1_000_000_000
        );
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
    serde_json::to_vec(&event).unwrap()
}

struct Stores {
    memory: MemoryBackend,
    handler: Handler,
}

fn fresh() -> Stores {
    let adapters = Adapters::memory(1);
    let now = EventTime::parse_rfc3339("2024-05-01T12:00:02Z").unwrap();
    Stores {
        memory: adapters.memory_backend().unwrap().clone(),
        handler: Handler::new(
            &adapters,
            ProcessorSettings::default(),
            Arc::new(FixedClock(now)),
        ),
    }
}

const SHAPES: [(usize, usize); 9] = [
    (100, 1),
    (100, 10),
    (100, 1_000),
    (1_000, 1),
    (1_000, 10),
    (1_000, 1_000),
    (10_000, 1),
    (10_000, 10),
    (10_000, 1_000),
];

fn write_economy(runtime: &tokio::runtime::Runtime) {
    println!("write economy (DynamoDB calls per batch; minimum = distinct ids + 1 checkpoint):");
    for (records, per_id) in SHAPES {
        let stores = fresh();
        let event: KinesisEvent =
            serde_json::from_slice(&lambda_event_json(records, per_id)).unwrap();
        let (response, report) = runtime.block_on(stores.handler.process(event)).unwrap();
        assert!(response.batch_item_failures.is_empty());
        let memory = &stores.memory;
        let calls = memory.status.apply_calls()
            + memory.checkpoints.advance_calls()
            + memory.dead_letters.put_calls();
        println!(
            "  {records:>6} records, {per_id:>5} per id: {:>6} distinct ids -> {calls:>6} calls ({} STATUS + {} OPLOG + {} DEADLETTER){}",
            report.distinct_ids,
            memory.status.apply_calls(),
            memory.checkpoints.advance_calls(),
            memory.dead_letters.put_calls(),
            if calls == report.distinct_ids as u64 + 1 { ", minimal" } else { ", NOT minimal" }
        );
    }
}

fn processor_batches(c: &mut Criterion) {
    // One core, as a Lambda with ≤ 1,769 MB has.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    write_economy(&runtime);
    let mut group = c.benchmark_group("processor_batch");
    for (records, per_id) in SHAPES {
        let json = lambda_event_json(records, per_id);
        group.throughput(Throughput::Elements(records as u64));
        group.sample_size(if records >= 10_000 { 20 } else { 50 });
        group.measurement_time(Duration::from_secs(if records >= 10_000 { 8 } else { 4 }));
        group.bench_with_input(
            BenchmarkId::new(format!("{per_id}_per_id"), records),
            &json,
            |b, json| {
                b.to_async(&runtime).iter_batched(
                    || (json.clone(), fresh()),
                    |(json, stores)| async move {
                        let event: KinesisEvent = serde_json::from_slice(&json).unwrap();
                        let (response, _) = stores.handler.process(event).await.unwrap();
                        assert!(response.batch_item_failures.is_empty());
                        stores
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

/// Where a record's time goes: parsing the Lambda event's JSON (aws_lambda_events types, base64
/// included), and decoding + validating the record bodies.
fn breakdown(c: &mut Criterion) {
    let json = lambda_event_json(10_000, 1);
    let mut group = c.benchmark_group("breakdown_10000");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(20);
    group.bench_function("lambda_event_json", |b| {
        b.iter(|| serde_json::from_slice::<KinesisEvent>(&json).unwrap())
    });
    let event: KinesisEvent = serde_json::from_slice(&json).unwrap();
    let bodies: Vec<Vec<u8>> = event
        .records
        .iter()
        .map(|r| r.kinesis.data.to_vec())
        .collect();
    let limits = tidemark::domain::Limits::default();
    group.bench_function("decode_and_validate", |b| {
        b.iter(|| {
            for body in &bodies {
                std::hint::black_box(tidemark::domain::decode_record(body, &limits).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, processor_batches, breakdown);
criterion_main!(benches);
