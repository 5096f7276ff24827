//! The status view's cost: DynamoDB calls and write units per 10,000 events, for distinct and
//! repeated ids, first delivery, ids moving to another status, and redelivery; then the time of
//! one batch through the view on in-memory stores. Write units follow DynamoDB's rule for
//! transactions: 2 per item of up to 1 KB written in TransactWriteItems (the view's items are far
//! smaller). Run: `cargo bench -p tidemark-processor --bench status_view`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidemark::adapters::memory::MemoryStatusView;
use tidemark::consumers::views::status::StatusView;
use tidemark::consumers::Consumer;
use tidemark::domain::status_view::{commit_items, ViewChange, ViewEntry};
use tidemark::domain::{EventTime, FixedClock, Limits, SequenceNumber};
use tidemark::ports::{StatusViewWriter, StoreError, StreamRecord, ViewCommit};

const EVENTS: usize = 10_000;
const STATUSES: [&str; 5] = ["created", "packed", "shipped", "delivered", "failed"];
/// BatchGetItem takes 100 keys per call.
const KEYS_PER_READ: u64 = 100;

/// Counts the calls DynamoDB would get and the write units it would bill.
#[derive(Default)]
struct Counting {
    inner: MemoryStatusView,
    reads: AtomicU64,
    read_items: AtomicU64,
    commits: AtomicU64,
    write_units: AtomicU64,
}

#[async_trait]
impl StatusViewWriter for Counting {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        let ids_len = ids.len() as u64;
        self.reads
            .fetch_add(ids_len.div_ceil(KEYS_PER_READ), Ordering::Relaxed);
        self.read_items.fetch_add(ids_len, Ordering::Relaxed);
        self.inner.entries(ids).await
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.write_units
            .fetch_add(2 * commit_items(changes) as u64, Ordering::Relaxed);
        self.inner.commit(changes).await
    }
}

/// `EVENTS` records over `ids` ids, the status of record i chosen by `status(i)`; sequence
/// numbers from `first`.
fn records(ids: usize, first: usize, status: impl Fn(usize) -> usize) -> Vec<StreamRecord> {
    (0..EVENTS)
        .map(|i| {
            let body = format!(
                r#"{{"id":"order-{:06}","status":"{}","timestamp":"2024-05-01T12:00:00.{:09}Z","received_at":"2024-05-01T12:00:01Z"}}"#,
                i % ids,
                STATUSES[status(i) % STATUSES.len()],
                first + i
            );
            StreamRecord {
                sequence_number: SequenceNumber::parse(&format!("4959{:020}", first + i)).unwrap(),
                partition_key: format!("order-{:06}", i % ids),
                data: Bytes::from(body),
                approximate_arrival: None,
            }
        })
        .collect()
}

fn view(store: Arc<Counting>) -> StatusView {
    let now = EventTime::parse_rfc3339("2024-05-01T12:00:02Z").unwrap();
    StatusView::new(store, Limits::default(), Arc::new(FixedClock(now)))
}

fn run(
    runtime: &tokio::runtime::Runtime,
    view: &StatusView,
    records: &[StreamRecord],
    batch: usize,
) {
    for chunk in records.chunks(batch) {
        let outcome = runtime.block_on(view.consume("shardId-000000000000", chunk));
        assert!(outcome.failure.is_none());
    }
}

fn print_costs(runtime: &tokio::runtime::Runtime) {
    println!("status view cost per {EVENTS} events (BatchGetItem calls / items read, TransactWriteItems calls, write units):");
    for batch in [100, 1_000] {
        for (shape, ids) in [("distinct ids", EVENTS), ("10 per id", EVENTS / 10)] {
            let store = Arc::new(Counting::default());
            let view = view(store.clone());
            let mut line = format!("  batch {batch:>5}, {shape:<12}:");
            let phases: [(&str, Vec<StreamRecord>); 3] = [
                ("first", records(ids, 0, |i| i / ids)),
                ("moved", records(ids, EVENTS, |i| i / ids + 2)),
                ("redelivered", records(ids, EVENTS, |i| i / ids + 2)),
            ];
            for (phase, records) in phases {
                let before = [
                    store.reads.load(Ordering::Relaxed),
                    store.read_items.load(Ordering::Relaxed),
                    store.commits.load(Ordering::Relaxed),
                    store.write_units.load(Ordering::Relaxed),
                ];
                run(runtime, &view, &records, batch);
                let after = [
                    store.reads.load(Ordering::Relaxed),
                    store.read_items.load(Ordering::Relaxed),
                    store.commits.load(Ordering::Relaxed),
                    store.write_units.load(Ordering::Relaxed),
                ];
                let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
                line.push_str(&format!(
                    "  {phase} {}/{} reads, {} commits, {} WU ({:.2} per event)",
                    d[0],
                    d[1],
                    d[2],
                    d[3],
                    d[3] as f64 / EVENTS as f64
                ));
            }
            println!("{line}");
        }
    }
}

fn status_view_batches(c: &mut Criterion) {
    // One core, as a Lambda with ≤ 1,769 MB has.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    print_costs(&runtime);
    let mut group = c.benchmark_group("status_view_batch");
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let batch: Vec<StreamRecord> = records(EVENTS, 0, |i| i).into_iter().take(1_000).collect();
    group.bench_function("1000_distinct_ids", |b| {
        b.to_async(&runtime).iter_batched(
            || view(Arc::new(Counting::default())),
            |view| {
                let batch = &batch;
                async move {
                    let outcome = view.consume("shardId-000000000000", batch).await;
                    assert!(outcome.failure.is_none());
                    view
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, status_view_batches);
criterion_main!(benches);
