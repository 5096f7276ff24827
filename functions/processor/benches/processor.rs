//! One Kinesis batch through the processor Lambda's handler with in-memory stores: the Lambda
//! event's JSON parsed, records decoded and validated, coalesced, and the conditional writes
//! built and applied. Prints the DynamoDB calls per batch (write economy) before timing.
//! Run: `cargo bench -p tidemark-processor`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::domain::{EventTime, FixedClock};
use tidemark_processor::event::{LogBatch, LogEvent};
use tidemark_processor::{synthetic, Handler};

/// The batch as JSON, the way Lambda hands it over (the benchmark times parsing it too).
fn lambda_event_json(records: usize, per_id: usize) -> Vec<u8> {
    serde_json::to_vec(&synthetic::kinesis_event(records, per_id)).unwrap()
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

/// (records, records per id). The few-ids column is 1,000 per id, except at 100 records, where
/// it is all 100 on a single id (it was labelled 1,000 per id there, which it never was).
const SHAPES: [(usize, usize); 9] = [
    (100, 1),
    (100, 10),
    (100, 100),
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
                        // As the Lambda reads it: either mapping's shape.
                        let event: LogEvent = serde_json::from_slice(&json).unwrap();
                        let LogBatch::Kinesis(event) = event.into_batch().unwrap() else {
                            panic!("not read as Kinesis")
                        };
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

/// The same 10,000 records from a Kafka partition and from a Kinesis shard: what a record costs
/// the processor from each log (the Lambda event's JSON parsed, base64 and all, and applied).
fn log_shapes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("log_shape_10000");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for (per_id, label) in [(1, "1_per_id"), (10, "10_per_id")] {
        let shapes = [
            ("kinesis", lambda_event_json(10_000, per_id)),
            (
                "kafka",
                serde_json::to_vec(&synthetic::kafka_event(10_000, per_id)).unwrap(),
            ),
        ];
        for (log, json) in shapes {
            group.bench_with_input(BenchmarkId::new(log, label), &json, |b, json| {
                b.to_async(&runtime).iter_batched(
                    || (json.clone(), fresh()),
                    |(json, stores)| async move {
                        let event: LogEvent = serde_json::from_slice(&json).unwrap();
                        let failed = match event.into_batch().unwrap() {
                            LogBatch::Kinesis(event) => {
                                let (response, _) = stores.handler.process(event).await.unwrap();
                                response.batch_item_failures.len()
                            }
                            LogBatch::Kafka(event) => {
                                let (response, _) =
                                    stores.handler.process_kafka(event).await.unwrap();
                                response.batch_item_failures.len()
                            }
                        };
                        assert_eq!(failed, 0);
                        stores
                    },
                    BatchSize::PerIteration,
                )
            });
        }
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
    // The same bytes read as the handler reads them, either mapping's shape in one pass.
    group.bench_function("log_event_json", |b| {
        b.iter(|| {
            serde_json::from_slice::<LogEvent>(&json)
                .unwrap()
                .into_batch()
                .unwrap()
        })
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

criterion_group!(benches, processor_batches, log_shapes, breakdown);
criterion_main!(benches);
