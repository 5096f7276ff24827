//! `GET /shards` tells a stuck shard from an idle one: a shard whose batches cannot be applied is
//! behind from its first failed batch and stuck once that lasts `stuck_after`; progress clears
//! it; every shard of the stream is listed, with or without a checkpoint, open or closed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, QueryApi};
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::{Event, EventTime, FixedClock};
use tidemark::ports::{OutgoingRecord, ShardReader, StartPosition, StreamRecord, StreamWriter};

fn t0() -> EventTime {
    EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap()
}

async fn put(memory: &MemoryBackend, id: &str) -> String {
    let event = Event {
        id: id.into(),
        status: "s".into(),
        timestamp: t0().to_rfc3339(),
        event_time: t0(),
        data: None,
        received_at: t0(),
    };
    let record = OutgoingRecord {
        partition_key: id.into(),
        data: Bytes::from(event.encode().unwrap()),
    };
    memory.stream.put(&record).await.unwrap().shard_id
}

async fn records(memory: &MemoryBackend, shard: &str) -> Vec<StreamRecord> {
    let it = memory
        .stream
        .shard_iterator(shard, &StartPosition::TrimHorizon)
        .await
        .unwrap();
    memory.stream.get_records(&it, 100).await.unwrap().records
}

async fn shards_at(memory: &MemoryBackend, now: EventTime) -> Value {
    let adapters = Adapters::in_memory(memory.clone());
    let api = Api {
        ingest: None,
        query: Some(
            QueryApi::new(
                adapters.status_reader(),
                adapters.checkpoint_reader(),
                adapters.shard_reader(),
            )
            .with_stuck_after(Duration::from_secs(300))
            .with_clock(Arc::new(FixedClock(now))),
        ),
    };
    let response = api
        .handle(ApiRequest {
            method: Method::GET,
            path: "/shards".into(),
            query: None,
            content_type: None,
            idempotency_key: None,
            body: Bytes::new(),
        })
        .await;
    assert_eq!(response.status, StatusCode::OK);
    serde_json::from_slice(&response.body).unwrap()
}

fn shard<'v>(body: &'v Value, id: &str) -> &'v Value {
    body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard_id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed in {body}"))
}

#[tokio::test]
async fn a_failing_shard_is_behind_then_stuck_and_progress_clears_it() {
    let memory = MemoryBackend::new(2);
    let status_faults = Faults::new(1);
    let at = |secs| t0().saturating_add(Duration::from_secs(secs));
    // The processor's clock is the batch time OPLOG records.
    let consumer_at = |now: EventTime| {
        let adapters = Adapters::in_memory(memory.clone())
            .with_status_writer(Arc::new(Faulty::new(memory.status.clone(), &status_faults)));
        let processor = adapters.processor(Default::default(), Arc::new(FixedClock(now)));
        CheckpointedConsumer::new(Arc::new(processor), adapters.checkpoint_writer())
    };

    let busy = put(&memory, "a").await;
    let first = records(&memory, &busy).await;
    let idle = ["shardId-000000000000", "shardId-000000000001"]
        .into_iter()
        .find(|s| *s != busy)
        .unwrap();

    // A healthy batch: checkpointed, not behind.
    consumer_at(at(0)).run_batch(&busy, &first).await;
    let body = shards_at(&memory, at(10_000)).await;
    assert_eq!(shard(&body, &busy)["stuck"], false, "{body}");
    assert_eq!(shard(&body, &busy)["checkpoint_age_ms"], 10_000_000);
    assert_eq!(shard(&body, &busy).get("behind"), None);
    // The other shard never had a record: listed, no checkpoint, not stuck.
    assert_eq!(shard(&body, idle)["sequence_number"], Value::Null);
    assert_eq!(shard(&body, idle)["stuck"], false);

    // More records, and STATUS refusing every write: the batch fails again and again.
    put(&memory, "a").await;
    let second = records(&memory, &busy).await[1..].to_vec();
    status_faults.set_down(true);
    consumer_at(at(20_000)).run_batch(&busy, &second).await;
    consumer_at(at(20_100)).run_batch(&busy, &second).await;
    let body = shards_at(&memory, at(20_200)).await;
    let behind = &shard(&body, &busy)["behind"];
    assert_eq!(
        behind["since"],
        at(20_000).to_rfc3339(),
        "the first failure"
    );
    assert_eq!(behind["last_attempt_at"], at(20_100).to_rfc3339());
    assert_eq!(behind["for_ms"], 200_000);
    assert_eq!(
        behind["sequence_number"],
        second[0].sequence_number.as_str()
    );
    assert_eq!(
        shard(&body, &busy)["stuck"],
        false,
        "behind, not yet for long"
    );
    let body = shards_at(&memory, at(20_300)).await;
    assert_eq!(shard(&body, &busy)["stuck"], true, "{body}");

    // The fault clears: the batch applies, the checkpoint moves, the shard is no longer behind.
    status_faults.set_down(false);
    consumer_at(at(20_400)).run_batch(&busy, &second).await;
    let body = shards_at(&memory, at(20_500)).await;
    assert_eq!(shard(&body, &busy)["stuck"], false);
    assert_eq!(shard(&body, &busy).get("behind"), None);
    assert_eq!(
        shard(&body, &busy)["sequence_number"],
        second[0].sequence_number.as_str()
    );
}

#[tokio::test]
async fn a_shard_that_fails_before_its_first_checkpoint_is_stuck_too() {
    let memory = MemoryBackend::new(1);
    let faults = Faults::new(2);
    faults.set_down(true);
    let shard_id = put(&memory, "a").await;
    let adapters = Adapters::in_memory(memory.clone())
        .with_status_writer(Arc::new(Faulty::new(memory.status.clone(), &faults)));
    let processor = adapters.processor(Default::default(), Arc::new(FixedClock(t0())));
    CheckpointedConsumer::new(Arc::new(processor), adapters.checkpoint_writer())
        .run_batch(&shard_id, &records(&memory, &shard_id).await)
        .await;
    let body = shards_at(&memory, t0().saturating_add(Duration::from_secs(301))).await;
    let stuck = shard(&body, &shard_id);
    assert_eq!(stuck["sequence_number"], Value::Null);
    assert_eq!(stuck["stuck"], true, "{body}");
}

#[tokio::test]
async fn closed_shards_are_listed_as_closed() {
    let memory = MemoryBackend::new(1);
    let (left, right) = memory.stream.split_shard("shardId-000000000000").unwrap();
    let body = shards_at(&memory, t0()).await;
    assert_eq!(shard(&body, "shardId-000000000000")["open"], false);
    assert_eq!(shard(&body, &left)["open"], true);
    assert_eq!(shard(&body, &right)["open"], true);
}
