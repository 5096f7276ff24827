//! Idempotency keys through the HTTP contract, with in-memory adapters: a retried request with
//! the same key gets the first answer and puts nothing; the same key with another body is a 422;
//! concurrent duplicates put once; every crash point of a keyed request (the claim, the put, the
//! stored answer, the release) leaves either the first answer or a clean retry; and a property
//! test of random client retries against a model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, ApiResponse, IngestApi, IDEMPOTENT_REPLAYED};
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::digest::sha256_hex;
use tidemark::domain::idempotency::{IdempotencyRecord, KeyScope, KeyState};
use tidemark::domain::limits::{IDEMPOTENCY_LEASE, MAX_IDEMPOTENCY_KEY_CHARS};
use tidemark::domain::{EventTime, FixedClock, Limits};
use tidemark::ports::{
    IdempotencyStore, ShardReader, StartPosition, StatusReader, StoreError, StreamRecord,
};
use tidemark::publish::{Publisher, RetryPolicy};

fn t0() -> EventTime {
    EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap()
}

/// One pipeline's state, and faults for its stream and its idempotency keys.
struct Pipeline {
    memory: MemoryBackend,
    stream_faults: Arc<Faults>,
    key_faults: Arc<Faults>,
}

impl Pipeline {
    fn new() -> Self {
        Self::with_seed(3)
    }

    /// Faults drawn from `seed`, so a property test meets a different schedule in every case.
    fn with_seed(seed: u64) -> Self {
        Self {
            memory: MemoryBackend::new(2),
            stream_faults: Faults::new(seed),
            key_faults: Faults::new(seed.wrapping_add(2)),
        }
    }

    /// The ingest API as it runs at `now` (a later `now` is a later request on the same state).
    fn api_at(&self, now: EventTime) -> Api {
        self.api_with_keys(
            now,
            Arc::new(Faulty::new(
                self.memory.idempotency.clone(),
                &self.key_faults,
            )),
        )
    }

    /// As [`Self::api_at`], with `keys` in front of the pipeline's idempotency keys.
    fn api_with_keys(&self, now: EventTime, keys: Arc<dyn IdempotencyStore>) -> Api {
        let adapters = Adapters::in_memory(self.memory.clone())
            .with_stream_writer(Arc::new(Faulty::new(
                self.memory.stream.clone(),
                &self.stream_faults,
            )))
            .with_idempotency_store(keys);
        let retry = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_micros(10),
            max_delay: Duration::from_micros(20),
        };
        Api {
            ingest: Some(IngestApi::new(
                Publisher::new(adapters.stream_writer(), retry),
                adapters.idempotency_store(),
                Limits::default(),
                Arc::new(FixedClock(now)),
            )),
            query: None,
        }
    }

    fn records(&self) -> usize {
        self.memory.stream.retained_records()
    }

    async fn all_records(&self) -> Vec<StreamRecord> {
        let mut all = Vec::new();
        for shard in self.memory.stream.list_shards().await.unwrap() {
            all.extend(self.records_on(&shard.shard_id).await);
        }
        all
    }

    async fn records_on(&self, shard: &str) -> Vec<StreamRecord> {
        let stream = &self.memory.stream;
        let it = stream
            .shard_iterator(shard, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        stream.get_records(&it, 10_000).await.unwrap().records
    }
}

fn post(path: &str, body: &str, key: Option<&str>) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: path.into(),
        query: None,
        content_type: Some("application/json".into()),
        idempotency_key: key.map(str::to_owned),
        body: Bytes::from(body.to_owned()),
    }
}

fn json_of(response: &ApiResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

fn replayed(response: &ApiResponse) -> bool {
    response.header(&IDEMPOTENT_REPLAYED).is_some()
}

fn error_of(response: &ApiResponse) -> (String, Option<String>) {
    let body = json_of(response);
    (
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["field"].as_str().map(str::to_owned),
    )
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_answer_and_puts_nothing() {
    let p = Pipeline::new();
    let api = p.api_at(t0());
    let body = r#"{"id":"order-1","status":"shipped"}"#;
    let first = api.handle(post("/events", body, Some("key-1"))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert!(!replayed(&first));
    // A retry a minute later: same answer, byte for byte, and still one record.
    let later = p.api_at(t0().saturating_add(Duration::from_secs(60)));
    let retry = later.handle(post("/events", body, Some("key-1"))).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert!(replayed(&retry));
    assert_eq!(retry.body, first.body);
    assert_eq!(p.records(), 1);
    // Without a key the same body is a new event.
    let unkeyed = later.handle(post("/events", body, None)).await;
    assert_eq!(unkeyed.status, StatusCode::ACCEPTED);
    assert_eq!(p.records(), 2);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_and_puts_nothing() {
    let p = Pipeline::new();
    let api = p.api_at(t0());
    let sent = api
        .handle(post(
            "/events",
            r#"{"id":"a","status":"shipped"}"#,
            Some("k"),
        ))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED);
    let other = api
        .handle(post(
            "/events",
            r#"{"id":"a","status":"delivered"}"#,
            Some("k"),
        ))
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&other),
        (
            "idempotency_key_reused".into(),
            Some("Idempotency-Key".into())
        )
    );
    assert_eq!(p.records(), 1);
}

#[tokio::test]
async fn bad_keys_get_400_naming_the_header_and_nothing_is_claimed() {
    let p = Pipeline::new();
    let api = p.api_at(t0());
    let body = r#"{"id":"a","status":"s"}"#;
    let too_long = "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1);
    for (key, rule) in [
        ("", "empty"),
        (too_long.as_str(), "too_long"),
        ("two words", "invalid_character"),
        ("k1, k2", "invalid_character"),
        ("caf\u{e9}", "invalid_character"),
    ] {
        let response = api.handle(post("/events", body, Some(key))).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(
            error_of(&response),
            (rule.into(), Some("Idempotency-Key".into()))
        );
    }
    // An invalid event with a good key does not hold the key: fixing the body works.
    let invalid = api
        .handle(post("/events", r#"{"id":"a"}"#, Some("fresh")))
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(p.memory.idempotency.is_empty());
    let fixed = api.handle(post("/events", body, Some("fresh"))).await;
    assert_eq!(fixed.status, StatusCode::ACCEPTED);
    assert_eq!(p.records(), 1);
}

/// The issue's scenario: `shipped` times out at the client (but was put), `delivered` follows,
/// then the client retries `shipped`. Without a key the retry got a later receive time and won;
/// with one, the retry is answered from the key and the row stays at `delivered`.
#[tokio::test]
async fn a_client_retry_cannot_move_a_row_backwards() {
    let p = Pipeline::new();
    let shipped = r#"{"id":"order-9","status":"shipped"}"#;
    let lost = p
        .api_at(t0())
        .handle(post("/events", shipped, Some("ship-9")))
        .await;
    assert_eq!(lost.status, StatusCode::ACCEPTED);
    let at = |secs| p.api_at(t0().saturating_add(Duration::from_secs(secs)));
    let delivered = at(5)
        .handle(post(
            "/events",
            r#"{"id":"order-9","status":"delivered"}"#,
            None,
        ))
        .await;
    assert_eq!(delivered.status, StatusCode::ACCEPTED);
    let retry = at(10)
        .handle(post("/events", shipped, Some("ship-9")))
        .await;
    assert!(replayed(&retry));

    let adapters = Adapters::in_memory(p.memory.clone());
    let processor = Arc::new(adapters.processor(Default::default(), Arc::new(FixedClock(t0()))));
    let consumer = CheckpointedConsumer::new(processor, adapters.checkpoint_writer());
    for shard in p.memory.stream.list_shards().await.unwrap() {
        let it = p
            .memory
            .stream
            .shard_iterator(&shard.shard_id, &StartPosition::TrimHorizon)
            .await
            .unwrap();
        let records = p.memory.stream.get_records(&it, 100).await.unwrap().records;
        if !records.is_empty() {
            consumer.run_batch(&shard.shard_id, &records).await;
        }
    }
    let row = adapters
        .status_reader()
        .get("order-9")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "delivered");
}

/// A put that fails releases the key: the client's retry puts the event.
#[tokio::test]
async fn a_failed_put_frees_the_key_for_the_retry() {
    let p = Pipeline::new();
    let api = p.api_at(t0());
    let body = r#"{"id":"a","status":"s"}"#;
    p.stream_faults.set_down(true);
    let failed = api.handle(post("/events", body, Some("k"))).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(p.memory.idempotency.is_empty(), "the key was released");
    p.stream_faults.set_down(false);
    let retry = api.handle(post("/events", body, Some("k"))).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert!(!replayed(&retry));
    assert_eq!(p.records(), 1);
}

/// The keys' store down before the claim: 503, nothing put.
#[tokio::test]
async fn keys_unavailable_means_503_and_nothing_put() {
    let p = Pipeline::new();
    p.key_faults.set_down(true);
    let response = p
        .api_at(t0())
        .handle(post("/events", r#"{"id":"a","status":"s"}"#, Some("k")))
        .await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.header(&header::RETRY_AFTER).is_some());
    assert_eq!(p.records(), 0);
}

/// A holder that dies after its put, before storing the answer, leaves its key in progress.
/// Within the lease a retry is told to wait (409, Retry-After); after it, the retry takes the key
/// over and puts the event with the first attempt's receive time, so a timestamp-less event keeps
/// its place; the retry after that is a replay.
#[tokio::test]
async fn a_dead_holder_blocks_retries_for_the_lease_then_is_taken_over() {
    let p = Pipeline::new();
    let body = r#"{"id":"a","status":"s"}"#;
    let dead_holder = IdempotencyRecord {
        key: KeyScope::Event.stored_key("k"),
        fingerprint: sha256_hex(body.as_bytes()),
        received_at: t0(),
        default_time: t0(),
        state: KeyState::InProgress {
            lease_until_ms: t0().saturating_add(IDEMPOTENCY_LEASE).unix_millis(),
        },
        expires_at: t0().unix_millis() / 1000 + 86_400,
    };
    assert_eq!(
        p.memory
            .idempotency
            .claim(&dead_holder, t0())
            .await
            .unwrap(),
        None
    );

    let in_lease = p
        .api_at(t0().saturating_add(IDEMPOTENCY_LEASE / 2))
        .handle(post("/events", body, Some("k")))
        .await;
    assert_eq!(in_lease.status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&in_lease),
        (
            "idempotency_in_progress".into(),
            Some("Idempotency-Key".into())
        )
    );
    assert!(in_lease.header(&header::RETRY_AFTER).is_some());
    assert_eq!(p.records(), 0);

    let late = t0().saturating_add(IDEMPOTENCY_LEASE + Duration::from_secs(1));
    let taken_over = p
        .api_at(late)
        .handle(post("/events", body, Some("k")))
        .await;
    assert_eq!(taken_over.status, StatusCode::ACCEPTED);
    assert!(!replayed(&taken_over));
    assert_eq!(json_of(&taken_over)["received_at"], t0().to_rfc3339());
    let records = p.all_records().await;
    assert_eq!(records.len(), 1);
    let on_stream: Value = serde_json::from_slice(&records[0].data).unwrap();
    assert_eq!(on_stream["timestamp"], t0().to_rfc3339());

    let again = p
        .api_at(late.saturating_add(Duration::from_secs(1)))
        .handle(post("/events", body, Some("k")))
        .await;
    assert!(replayed(&again));
    assert_eq!(again.body, taken_over.body);
    assert_eq!(p.records(), 1);
}

/// The keys' store, every call but the release going through: the crash point between a failed
/// put and freeing its key.
struct ReleaseFails(Arc<tidemark::adapters::memory::MemoryIdempotencyStore>);

#[async_trait::async_trait]
impl IdempotencyStore for ReleaseFails {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.0.claim(record, now).await
    }

    async fn take_over(
        &self,
        key: &str,
        expected_lease_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.0
            .take_over(key, expected_lease_ms, lease_until_ms)
            .await
    }

    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError> {
        self.0.complete(key, lease_ms, answer).await
    }

    async fn release(&self, _: &str, _: i64) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("the release never arrived".into()))
    }
}

/// The stream is down and so is the release of the key: 503, the key stays in progress; a retry
/// within its lease is told to wait (409), one after it takes the key over and puts the event
/// exactly once, and the retry after that is a replay.
#[tokio::test]
async fn a_failed_release_holds_the_key_for_its_lease_then_a_takeover_puts_once() {
    let p = Pipeline::new();
    let body = r#"{"id":"a","status":"s"}"#;
    p.stream_faults.set_down(true);
    let failed = p
        .api_with_keys(t0(), Arc::new(ReleaseFails(p.memory.idempotency.clone())))
        .handle(post("/events", body, Some("k")))
        .await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!p.memory.idempotency.is_empty(), "the key is still held");
    assert_eq!(p.records(), 0);
    p.stream_faults.set_down(false);

    let in_lease = p
        .api_at(t0().saturating_add(IDEMPOTENCY_LEASE / 2))
        .handle(post("/events", body, Some("k")))
        .await;
    assert_eq!(in_lease.status, StatusCode::CONFLICT);
    assert_eq!(error_of(&in_lease).0, "idempotency_in_progress");
    assert_eq!(p.records(), 0);

    let late = t0().saturating_add(IDEMPOTENCY_LEASE + Duration::from_secs(1));
    let taken_over = p
        .api_at(late)
        .handle(post("/events", body, Some("k")))
        .await;
    assert_eq!(taken_over.status, StatusCode::ACCEPTED);
    assert!(!replayed(&taken_over));
    assert_eq!(p.records(), 1);

    let again = p
        .api_at(late.saturating_add(Duration::from_secs(1)))
        .handle(post("/events", body, Some("k")))
        .await;
    assert!(replayed(&again));
    assert_eq!(again.body, taken_over.body);
    assert_eq!(p.records(), 1);
}

/// Storing the answer fails after the put: the client still gets its 202 (the event is on the
/// stream), and the key stays in progress until the lease ends, never answering a different body.
#[tokio::test]
async fn an_answer_that_cannot_be_stored_still_answers_202() {
    let p = Pipeline::new();
    let body = r#"{"id":"a","status":"s"}"#;
    // Claim (call 1) succeeds, completion (call 2) fails.
    let failing_completion =
        Adapters::in_memory(p.memory.clone()).with_idempotency_store(Arc::new(FailSecondCall {
            inner: p.memory.idempotency.clone(),
            calls: std::sync::atomic::AtomicUsize::new(0),
        }));
    let api = Api {
        ingest: Some(IngestApi::new(
            Publisher::new(failing_completion.stream_writer(), RetryPolicy::default()),
            failing_completion.idempotency_store(),
            Limits::default(),
            Arc::new(FixedClock(t0())),
        )),
        query: None,
    };
    let response = api.handle(post("/events", body, Some("k"))).await;
    assert_eq!(response.status, StatusCode::ACCEPTED);
    assert_eq!(p.records(), 1);
    let held = p
        .memory
        .idempotency
        .get(&KeyScope::Event.stored_key("k"))
        .unwrap();
    assert!(matches!(held.state, KeyState::InProgress { .. }));
    let retry = p
        .api_at(t0().saturating_add(Duration::from_secs(1)))
        .handle(post("/events", body, Some("k")))
        .await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
}

/// An idempotency store whose second call fails: the claim goes through, the completion does not.
struct FailSecondCall {
    inner: Arc<tidemark::adapters::memory::MemoryIdempotencyStore>,
    calls: std::sync::atomic::AtomicUsize,
}

impl FailSecondCall {
    fn strike(&self) -> Result<(), StoreError> {
        match self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            1 => Err(StoreError::Unavailable(
                "injected: the answer is lost".into(),
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for FailSecondCall {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.strike()?;
        self.inner.claim(record, now).await
    }
    async fn take_over(&self, key: &str, expected: i64, lease: i64) -> Result<bool, StoreError> {
        self.strike()?;
        self.inner.take_over(key, expected, lease).await
    }
    async fn complete(&self, key: &str, lease: i64, answer: &str) -> Result<bool, StoreError> {
        self.strike()?;
        self.inner.complete(key, lease, answer).await
    }
    async fn release(&self, key: &str, lease: i64) -> Result<bool, StoreError> {
        self.strike()?;
        self.inner.release(key, lease).await
    }
}

/// A batch takes a key per item: an `Idempotency-Key` header on it is refused, naming the
/// header, before anything is claimed or put (it used to be ignored silently).
#[tokio::test]
async fn a_header_key_on_a_batch_is_refused_naming_it() {
    let p = Pipeline::new();
    let response = p
        .api_at(t0())
        .handle(post(
            "/events/batch",
            r#"{"events":[{"id":"a","status":"s"}]}"#,
            Some("k"),
        ))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&response),
        (
            "unknown_field".to_owned(),
            Some("Idempotency-Key".to_owned())
        )
    );
    assert_eq!(p.records(), 0);
    assert!(p.memory.idempotency.is_empty());
}

/// Concurrent duplicates: the condition decides, so exactly one is put and every other answer
/// is that one's (replayed) or "in progress".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_put_once() {
    let p = Arc::new(Pipeline::new());
    let body = r#"{"id":"a","status":"s"}"#;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                p.api_at(t0())
                    .handle(post("/events", body, Some("k")))
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(p.records(), 1);
    let fresh: Vec<_> = answers
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED && !replayed(r))
        .collect();
    assert_eq!(fresh.len(), 1);
    for answer in &answers {
        match answer.status {
            StatusCode::ACCEPTED => assert_eq!(answer.body, fresh[0].body),
            StatusCode::CONFLICT => {
                assert_eq!(error_of(answer).0, "idempotency_in_progress")
            }
            other => panic!("unexpected {other}"),
        }
    }
}

/// Batch items: a retried batch replays the keyed items (`"replayed": true`) and puts only the
/// items without a key; a key reused with another item is rejected for that item alone.
#[tokio::test]
async fn batch_items_with_keys_are_put_once() {
    let p = Pipeline::new();
    let batch = r#"{"events":[
        {"id":"a","status":"s","idempotency_key":"ka"},
        {"id":"b","status":"s"},
        {"id":"c","status":"s","idempotency_key":"kc"}
    ]}"#;
    let first = p
        .api_at(t0())
        .handle(post("/events/batch", batch, None))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(p.records(), 3);
    let first = json_of(&first);

    let retry = p
        .api_at(t0().saturating_add(Duration::from_secs(2)))
        .handle(post("/events/batch", batch, None))
        .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    let retry = json_of(&retry);
    assert_eq!(p.records(), 4, "only the unkeyed item is put again");
    for i in [0, 2] {
        let mut replay = retry["results"][i].clone();
        assert_eq!(replay["replayed"], true);
        replay.as_object_mut().unwrap().remove("replayed");
        assert_eq!(replay, first["results"][i]);
    }
    assert_eq!(retry["results"][1].get("replayed"), None);
    assert!(retry["token"].is_string());

    let reused = p
        .api_at(t0().saturating_add(Duration::from_secs(3)))
        .handle(post(
            "/events/batch",
            r#"{"events":[{"id":"a","status":"other","idempotency_key":"ka"},{"id":"d","status":"s","idempotency_key":"kd"}]}"#,
            None,
        ))
        .await;
    assert_eq!(reused.status, StatusCode::MULTI_STATUS);
    let reused = json_of(&reused);
    assert_eq!(
        reused["results"][0]["error"]["code"],
        "idempotency_key_reused"
    );
    assert_eq!(
        reused["results"][0]["error"]["field"],
        "events[0].idempotency_key"
    );
    assert_eq!(p.records(), 5);

    // A batch whose only item is refused for its key answers with that refusal's status.
    let only_reused = p
        .api_at(t0().saturating_add(Duration::from_secs(4)))
        .handle(post(
            "/events/batch",
            r#"{"events":[{"id":"a","status":"other","idempotency_key":"ka"}]}"#,
            None,
        ))
        .await;
    assert_eq!(only_reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The same key as a single event's header is another namespace: accepted.
    let header = p
        .api_at(t0())
        .handle(post("/events", r#"{"id":"a","status":"s"}"#, Some("ka")))
        .await;
    assert_eq!(header.status, StatusCode::ACCEPTED);
    assert!(!replayed(&header));
}

/// A taken-over batch item keeps its first attempt's place: its event time is the first
/// receive time plus its index then, not now.
#[tokio::test]
async fn a_taken_over_batch_item_keeps_its_first_event_time() {
    let p = Pipeline::new();
    let item = r#"{"id":"a","status":"s","idempotency_key":"k"}"#;
    let first_default = t0().saturating_add(Duration::from_nanos(3));
    let dead_holder = IdempotencyRecord {
        key: KeyScope::BatchItem.stored_key("k"),
        fingerprint: sha256_hex(item.as_bytes()),
        received_at: t0(),
        default_time: first_default,
        state: KeyState::InProgress {
            lease_until_ms: t0().saturating_add(IDEMPOTENCY_LEASE).unix_millis(),
        },
        expires_at: t0().unix_millis() / 1000 + 86_400,
    };
    p.memory
        .idempotency
        .claim(&dead_holder, t0())
        .await
        .unwrap();
    let late = t0().saturating_add(IDEMPOTENCY_LEASE * 2);
    let response = p
        .api_at(late)
        .handle(post(
            "/events/batch",
            &format!(r#"{{"events":[{item}]}}"#),
            None,
        ))
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED);
    let records = p.all_records().await;
    let on_stream: Value = serde_json::from_slice(&records[0].data).unwrap();
    assert_eq!(on_stream["timestamp"], first_default.to_rfc3339());
}

/// What the model remembers of a key: the body it was first accepted with, and the answer.
#[derive(Clone, Debug)]
struct KeyModel {
    body: usize,
    answer: Vec<u8>,
}

/// What the stream does during one request of the model.
#[derive(Clone, Copy, Debug)]
enum StreamState {
    Up,
    Down,
    /// Half the puts take effect and then time out: the caller sees a failure, the record is on
    /// the stream, and the publisher's retry puts it again.
    TimingOut,
}

fn stream_state() -> impl Strategy<Value = StreamState> {
    prop_oneof![
        3 => Just(StreamState::Up),
        1 => Just(StreamState::Down),
        2 => Just(StreamState::TimingOut),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random client behaviour (keys reused, bodies changed, stream outages, puts that time out
    /// after taking effect) against a model: a key's first 202 is the answer to every later
    /// request with its body; another body is a 422; a failed request leaves the key free; a
    /// replay or a refusal puts nothing, so the stream holds one acknowledged record per key
    /// answered 202 plus exactly one record per put that timed out after taking effect; and
    /// once everything is applied, each key's row is its acknowledged record: the timed-out
    /// copies (older, or the same event at a lower sequence number) change nothing.
    #[test]
    fn retries_with_a_key_never_add_events(
        ops in prop::collection::vec((0usize..4, 0usize..2, stream_state()), 1..40),
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let p = Pipeline::with_seed(seed);
            let mut model: std::collections::HashMap<usize, KeyModel> = Default::default();
            for (step, (key, body, stream)) in ops.into_iter().enumerate() {
                let now = t0().saturating_add(Duration::from_millis(step as u64));
                let text = format!(r#"{{"id":"id-{key}","status":"status-{body}"}}"#);
                p.stream_faults.set_down(matches!(stream, StreamState::Down));
                p.stream_faults
                    .set_fail_after_rate(if matches!(stream, StreamState::TimingOut) { 0.5 } else { 0.0 });
                let response = p
                    .api_at(now)
                    .handle(post("/events", &text, Some(&format!("key-{key}"))))
                    .await;
                match model.get(&key) {
                    Some(known) if known.body == body => {
                        prop_assert_eq!(response.status, StatusCode::ACCEPTED);
                        prop_assert!(replayed(&response));
                        prop_assert_eq!(&response.body, &known.answer);
                    }
                    Some(_) => {
                        prop_assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY)
                    }
                    None if response.status == StatusCode::SERVICE_UNAVAILABLE => {
                        prop_assert!(!matches!(stream, StreamState::Up), "503 with the stream up");
                    }
                    None => {
                        prop_assert!(!matches!(stream, StreamState::Down), "202 with the stream down");
                        prop_assert_eq!(response.status, StatusCode::ACCEPTED);
                        prop_assert!(!replayed(&response));
                        model.insert(key, KeyModel { body, answer: response.body.clone() });
                    }
                }
                prop_assert_eq!(
                    p.records() as u64,
                    model.len() as u64 + p.stream_faults.injected_after()
                );
            }

            p.stream_faults.set_down(false);
            p.stream_faults.set_fail_after_rate(0.0);
            let adapters = Adapters::in_memory(p.memory.clone());
            let processor = adapters.processor(Default::default(), Arc::new(FixedClock(t0())));
            for shard in p.memory.stream.list_shards().await.unwrap() {
                let records = p.records_on(&shard.shard_id).await;
                if !records.is_empty() {
                    prop_assert_eq!(processor.process_batch(&shard.shard_id, &records).await.failure, None);
                }
            }
            for (key, known) in &model {
                let answer: Value = serde_json::from_slice(&known.answer).unwrap();
                let row = p.memory.status.get(&format!("id-{key}")).await.unwrap().unwrap();
                prop_assert_eq!(row.sequence_number.as_str(), answer["sequence_number"].as_str().unwrap());
                prop_assert_eq!(row.status, format!("status-{}", known.body));
            }
            Ok(())
        })?;
    }
}
