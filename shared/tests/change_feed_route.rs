//! `GET /changes` as a client meets it: a waiting reader is answered by the next change and
//! never by an event that loses; cursors the feed moved past, of another feed, or malformed,
//! and bad parameters, are refused naming the parameter; without a feed the route says where
//! the changes are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use support::{put_event, read_batch};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest};
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::{EventTime, FixedClock};
use tidemark::ports::*;

const STATUSES: [&str; 4] = ["created", "shipped", "delivered", "failed"];

fn base() -> EventTime {
    EventTime::parse_rfc3339("2024-01-01T00:00:00Z").unwrap()
}

/// A one-shard pipeline with a feed of `capacity`, and a way to apply events to it.
struct Pipeline {
    memory: MemoryBackend,
    api: Api,
    consumer: CheckpointedConsumer,
    adapters: Adapters,
}

impl Pipeline {
    fn new(capacity: usize) -> Self {
        let memory = MemoryBackend::new(1).with_change_feed(capacity);
        let adapters = Adapters::in_memory(memory.clone());
        let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));
        let consumer = CheckpointedConsumer::new(
            Arc::new(adapters.processor(Default::default(), clock)),
            adapters.checkpoint_writer(),
        );
        let api = Api {
            ingest: None,
            query: Some(adapters.query_api()),
        };
        Self {
            memory,
            api,
            consumer,
            adapters,
        }
    }

    async fn apply(&self, id: u8, status: usize, millis: u16) {
        let timestamp = base().saturating_add(Duration::from_millis(u64::from(millis)));
        let id = format!("id-{id}");
        put_event(&self.memory.stream, &id, STATUSES[status], timestamp, 1).await;
        let shard = "shardId-000000000000";
        let from = match self.adapters.checkpoint_reader().get(shard).await.unwrap() {
            Some(c) => StartPosition::AfterSequence(c.sequence_number),
            None => StartPosition::TrimHorizon,
        };
        let batch = read_batch(&self.memory.stream, shard, &from, 100).await;
        let outcome = self.consumer.run_batch(shard, &batch).await;
        assert!(outcome.failure.is_none(), "{outcome:?}");
    }

    async fn get(&self, query: &str) -> (StatusCode, Value) {
        let response = self
            .api
            .handle(ApiRequest {
                method: Method::GET,
                path: "/changes".into(),
                query: Some(query.into()),
                content_type: None,
                idempotency_key: None,
                body: Bytes::new(),
            })
            .await;
        let body = serde_json::from_slice(&response.body).unwrap();
        (response.status, body)
    }
}

#[tokio::test]
async fn a_waiting_reader_is_answered_by_the_next_change_and_not_by_a_losing_event() {
    let pipeline = Arc::new(Pipeline::new(100));
    pipeline.apply(1, 0, 10).await;
    let (_, first) = pipeline.get("").await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    // An older event for the id loses: it changes nothing, so nobody is woken.
    pipeline.apply(1, 1, 5).await;
    let (status, quiet) = pipeline.get(&format!("after={cursor}&wait_ms=50")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(quiet["changes"], serde_json::json!([]));
    assert_eq!(quiet["cursor"], first["cursor"]);

    let waiting = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.get(&format!("after={cursor}&wait_ms=5000")).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    pipeline.apply(1, 2, 20).await;
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let changes = answer["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{answer}");
    assert_eq!(changes[0]["old_status"], "created");
    assert_eq!(changes[0]["new_status"], "delivered");
}

#[tokio::test]
async fn cursors_the_feed_moved_past_or_did_not_give_are_refused_naming_after() {
    let pipeline = Pipeline::new(2);
    pipeline.apply(1, 0, 1).await;
    let (_, page) = pipeline.get("limit=1").await;
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    for (id, millis) in [(2, 2), (3, 3), (4, 4)] {
        pipeline.apply(id, 0, millis).await;
    }
    let (status, expired) = pipeline.get(&format!("after={cursor}")).await;
    assert_eq!(status, StatusCode::GONE, "{expired}");
    assert_eq!(expired["error"]["code"], "cursor_expired");
    assert_eq!(expired["error"]["field"], "after");
    // Starting again without a cursor reads the newest two, which the feed kept.
    let (_, fresh) = pipeline.get("").await;
    let ids: Vec<&str> = fresh["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["id-3", "id-4"]);

    let elsewhere = Pipeline::new(2);
    elsewhere.apply(1, 0, 1).await;
    let (_, theirs) = elsewhere.get("").await;
    let foreign = theirs["cursor"].as_str().unwrap();
    let history_cursor = "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMA";
    for (query, field) in [
        (format!("after={foreign}"), "after"),
        (format!("after={history_cursor}"), "after"),
        ("after=c1.AAAA".to_owned(), "after"),
        ("limit=0".to_owned(), "limit"),
        ("limit=1001".to_owned(), "limit"),
        ("wait_ms=5001".to_owned(), "wait_ms"),
        ("from=0".to_owned(), "from"),
    ] {
        let (status, body) = pipeline.get(&query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn without_a_feed_the_route_says_where_changes_are() {
    let adapters = Adapters::memory(1);
    let api = Api {
        ingest: None,
        query: Some(adapters.query_api()),
    };
    let response = api
        .handle(ApiRequest {
            method: Method::GET,
            path: "/changes".into(),
            query: None,
            content_type: None,
            idempotency_key: None,
            body: Bytes::new(),
        })
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("EventBridge"),
        "{body}"
    );
}
