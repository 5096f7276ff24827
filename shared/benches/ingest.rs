//! The ingest handler with an in-memory stream: one `POST /events`, and one 500-event
//! `POST /events/batch` (parse, validate, encode, PutRecords, answer). Prints the Kinesis calls
//! per request (write economy) before timing. Run: `cargo bench -p tidemark --bench ingest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::Method;
use tidemark::adapters::memory::MemoryStream;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, IngestApi};
use tidemark::domain::{Limits, SystemClock};
use tidemark::publish::{Publisher, RetryPolicy};

fn api() -> (Api, Arc<MemoryStream>) {
    let adapters = Adapters::memory(4);
    let stream = adapters.memory_backend().unwrap().stream.clone();
    let publisher = Publisher::new(adapters.stream_writer(), RetryPolicy::default());
    let ingest = IngestApi::new(
        publisher,
        adapters.idempotency_store(),
        Limits::default(),
        Arc::new(SystemClock),
    );
    (
        Api {
            ingest: Some(ingest),
            query: None,
        },
        stream,
    )
}

fn event(i: usize) -> String {
    format!(
        r#"{{"id":"order-{i:06}","status":"shipped","timestamp":"2024-05-01T12:00:00.{i:06}+02:00","data":{{"carrier":"ups","weight_kg":1.5}}}}"#
    )
}

fn request(path: &str, body: &str) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: path.into(),
        query: None,
        content_type: Some("application/json".into()),
        idempotency_key: None,
        body: Bytes::from(body.to_owned()),
    }
}

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let single = event(1);
    let batch = format!(
        r#"{{"events":[{}]}}"#,
        (0..500).map(event).collect::<Vec<_>>().join(",")
    );

    let keyed_batch = format!(
        r#"{{"events":[{}]}}"#,
        (0..500)
            .map(|i| event(i).replacen('{', &format!(r#"{{"idempotency_key":"key-{i}","#), 1))
            .collect::<Vec<_>>()
            .join(",")
    );

    let (economy, stream) = api();
    for events in [1usize, 250, 500] {
        let before = stream.put_many_calls();
        let body = format!(
            r#"{{"events":[{}]}}"#,
            (0..events).map(event).collect::<Vec<_>>().join(",")
        );
        let response = runtime.block_on(economy.handle(request("/events/batch", &body)));
        assert_eq!(response.status, 202);
        println!(
            "write economy: a {events}-event batch request made {} PutRecords call(s) (minimum {})",
            stream.put_many_calls() - before,
            events.div_ceil(500)
        );
    }

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("post_event", |b| {
        b.to_async(&runtime).iter_batched(
            || api().0,
            |api| {
                let request = request("/events", &single);
                async move {
                    let response = api.handle(request).await;
                    assert_eq!(response.status, 202);
                    api
                }
            },
            BatchSize::SmallInput,
        )
    });
    // The idempotency key's own cost in memory (a SHA-256 and a claim per event; on AWS add a
    // conditional put and an update per key).
    group.bench_function("post_event_keyed", |b| {
        b.to_async(&runtime).iter_batched(
            || api().0,
            |api| {
                let request = ApiRequest {
                    idempotency_key: Some("4f6c0e2a-8d1b-4c55-9a0e-3b1f2d7c9e10".into()),
                    ..request("/events", &single)
                };
                async move {
                    let response = api.handle(request).await;
                    assert_eq!(response.status, 202);
                    api
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(500));
    group.bench_function("post_batch_500_keyed", |b| {
        b.to_async(&runtime).iter_batched(
            || api().0,
            |api| {
                let request = request("/events/batch", &keyed_batch);
                async move {
                    let response = api.handle(request).await;
                    assert_eq!(response.status, 202);
                    api
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("post_batch_500", |b| {
        b.to_async(&runtime).iter_batched(
            || api().0,
            |api| {
                let request = request("/events/batch", &batch);
                async move {
                    let response = api.handle(request).await;
                    assert_eq!(response.status, 202);
                    api
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
