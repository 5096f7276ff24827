//! Idempotency keys on DynamoDB (LocalStack): the adapter's conditional writes (claim, takeover,
//! complete, release) behave as the memory adapter's do, and through the HTTP API on Kinesis and
//! DynamoDB a retried keyed request replays its first answer while concurrent duplicates put the
//! event once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use http::{Method, StatusCode};
use tidemark::api::{Api, ApiRequest, IngestApi, IDEMPOTENT_REPLAYED};
use tidemark::domain::idempotency::{IdempotencyRecord, KeyScope, KeyState};
use tidemark::domain::{EventTime, Limits, SystemClock};
use tidemark::ports::{IdempotencyStore, ShardReader, StartPosition};
use tidemark::publish::{Publisher, RetryPolicy};
use tidemark_tests::Resources;

fn at_ms(ms: i64) -> EventTime {
    EventTime::from_unix_nanos(i128::from(ms) * 1_000_000)
}

fn in_progress(key: &str, lease_until_ms: i64, expires_at: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        key: KeyScope::Event.stored_key(key),
        fingerprint: "f1".into(),
        received_at: EventTime::from_unix_nanos(1_714_564_800_123_456_789),
        default_time: EventTime::from_unix_nanos(1_714_564_800_123_456_792),
        state: KeyState::InProgress { lease_until_ms },
        expires_at,
    }
}

#[tokio::test]
async fn the_dynamodb_adapter_claims_takes_over_completes_and_releases_by_condition() {
    let resources = Resources::create("idem-adapter", 1).await;
    let store = resources.adapters().idempotency_store();
    let now = at_ms(1_000_000);
    let record = in_progress("k", 1_030_000, 2_000);

    assert_eq!(store.claim(&record, now).await.unwrap(), None);
    // The second claim writes nothing and returns the holder, times exact to the nanosecond.
    let mut other = in_progress("k", 1_031_000, 2_000);
    other.fingerprint = "f2".into();
    assert_eq!(
        store.claim(&other, now).await.unwrap(),
        Some(record.clone())
    );

    // Takeover and completion hold only under the current lease.
    assert!(!store.take_over(&record.key, 999, 1_060_000).await.unwrap());
    assert!(store
        .take_over(&record.key, 1_030_000, 1_060_000)
        .await
        .unwrap());
    assert!(!store.complete(&record.key, 1_030_000, "{}").await.unwrap());
    assert!(store
        .complete(&record.key, 1_060_000, r#"{"a":1}"#)
        .await
        .unwrap());
    let held = store.claim(&other, now).await.unwrap().unwrap();
    assert_eq!(
        held.state,
        KeyState::Completed {
            answer: r#"{"a":1}"#.into()
        }
    );
    // A completed key cannot be released, and expires on time, before TTL deletes it.
    assert!(!store.release(&record.key, 1_060_000).await.unwrap());
    assert_eq!(
        store.claim(&other, at_ms(2_000_000)).await.unwrap(),
        None,
        "a key past expires_at is free"
    );

    // Release frees an in-progress key, only under its lease.
    let fresh = in_progress("r", 1_030_000, 2_000);
    assert_eq!(store.claim(&fresh, now).await.unwrap(), None);
    assert!(!store.release(&fresh.key, 1).await.unwrap());
    assert!(store.release(&fresh.key, 1_030_000).await.unwrap());
    assert_eq!(store.claim(&fresh, now).await.unwrap(), None);
}

fn keyed_post(body: &str, key: &str) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: "/events".into(),
        query: None,
        content_type: Some("application/json".into()),
        idempotency_key: Some(key.into()),
        body: Bytes::from(body.to_owned()),
    }
}

#[tokio::test]
async fn keyed_requests_put_once_on_kinesis_with_keys_in_dynamodb() {
    let resources = Resources::create("idem-api", 1).await;
    let adapters = resources.adapters();
    let api = Arc::new(Api {
        ingest: Some(IngestApi::new(
            Publisher::new(adapters.stream_writer(), RetryPolicy::default()),
            adapters.idempotency_store(),
            Limits::default(),
            Arc::new(SystemClock),
        )),
        query: None,
    });
    let body = r#"{"id":"order-1","status":"shipped"}"#;
    // Concurrent duplicates: the conditional put lets one through.
    let answers = join_all((0..8).map(|_| {
        let api = Arc::clone(&api);
        async move { api.handle(keyed_post(body, "dup")).await }
    }))
    .await;
    let fresh: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED && a.header(&IDEMPOTENT_REPLAYED).is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one duplicate is put");
    for answer in &answers {
        assert!(
            answer.status == StatusCode::ACCEPTED || answer.status == StatusCode::CONFLICT,
            "{}",
            answer.status
        );
    }
    // Once completed, a retry replays the first answer byte for byte.
    let retry = api.handle(keyed_post(body, "dup")).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert_eq!(retry.body, fresh[0].body);
    let reused = api
        .handle(keyed_post(r#"{"id":"order-1","status":"lost"}"#, "dup"))
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);

    let reader = adapters.shard_reader();
    let mut on_stream = 0;
    for shard in reader.list_shards().await.unwrap() {
        let it = reader
            .shard_iterator(&shard.shard_id, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        on_stream += reader.get_records(&it, 1000).await.unwrap().records.len();
    }
    assert_eq!(on_stream, 1);
}
