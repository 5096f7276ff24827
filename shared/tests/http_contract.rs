//! The HTTP contract through `Api`, with in-memory adapters: status codes, error bodies,
//! partial batches, throttling; and, through lambda_http, every payload shape the functions
//! receive behind API Gateway v1 and v2, Function URLs and ALB.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, ApiResponse, IngestApi, QueryApi};
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::limits::{MAX_BATCH_EVENTS, MAX_BODY_BYTES};
use tidemark::domain::{EventTime, FixedClock, Limits, SequenceNumber};
use tidemark::ports::{ShardReader, StartPosition, StatusRow, StatusWriter, StreamRecord};
use tidemark::publish::{Publisher, RetryPolicy};

struct Fixture {
    api: Api,
    faults: Arc<Faults>,
    memory: MemoryBackend,
}

fn now() -> EventTime {
    EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap()
}

fn fixture_api() -> Fixture {
    fixture_api_at(now())
}

fn fixture_api_at(now: EventTime) -> Fixture {
    fixture_api_seeded(now, 11)
}

/// The fixture with its faults drawn from `seed`.
fn fixture_api_seeded(now: EventTime, seed: u64) -> Fixture {
    fixture_over(MemoryBackend::new(2), now, seed)
}

/// The fixture over `memory` (with a change feed or not).
fn fixture_over(memory: MemoryBackend, now: EventTime, seed: u64) -> Fixture {
    let faults = Faults::new(seed);
    let adapters = Adapters::in_memory(memory.clone())
        .with_stream_writer(Arc::new(Faulty::new(memory.stream.clone(), &faults)));
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_micros(10),
        max_delay: Duration::from_micros(50),
    };
    let publisher = Publisher::new(adapters.stream_writer(), retry);
    let api = Api {
        ingest: Some(IngestApi::new(
            publisher,
            adapters.idempotency_store(),
            Limits::default(),
            Arc::new(FixedClock(now)),
        )),
        query: Some({
            let query = QueryApi::new(
                adapters.status_reader(),
                adapters.checkpoint_reader(),
                adapters.shard_reader(),
            );
            match memory.status.change_feed() {
                Some(feed) => query.with_change_feed(feed),
                None => query,
            }
        }),
    };
    Fixture {
        api,
        faults,
        memory,
    }
}

/// A request to `target`, a path with an optional `?query`.
fn request(method: Method, target: &str, body: &str) -> ApiRequest {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    ApiRequest {
        method,
        path: path.into(),
        query,
        content_type: Some("application/json".into()),
        idempotency_key: None,
        body: Bytes::from(body.to_owned()),
    }
}

fn json_of(response: &ApiResponse) -> Value {
    assert_eq!(
        response.header(&header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    serde_json::from_slice(&response.body).unwrap()
}

async fn call(f: &Fixture, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let response = f.api.handle(request(method, path, body)).await;
    (response.status, json_of(&response))
}

/// Every record on one shard of the fixture's in-memory stream.
async fn records_on(f: &Fixture, shard: &str) -> Vec<StreamRecord> {
    let stream = &f.memory.stream;
    let it = stream
        .shard_iterator(shard, &StartPosition::TrimHorizon)
        .await
        .unwrap();
    stream.get_records(&it, 10_000).await.unwrap().records
}

fn assert_error(body: &Value, code: &str, field: Option<&str>) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["error"]["field"].as_str(), field, "{body}");
}

#[tokio::test]
async fn post_event_answers_202_with_the_kinesis_position() {
    let f = fixture_api();
    let (status, body) = call(
        &f,
        Method::POST,
        "/events",
        r#"{"id":"order-1","status":"shipped"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["id"], "order-1");
    assert!(body["shard_id"].as_str().unwrap().starts_with("shardId-"));
    assert!(body["sequence_number"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_digit()));
    assert_eq!(body["received_at"], "2024-05-01T12:00:00Z");
    assert_eq!(f.memory.stream.put_calls(), 1);
}

#[tokio::test]
async fn bad_events_get_400_naming_field_and_rule() {
    let f = fixture_api();
    let cases = [
        ("{", "malformed_json", None),
        ("", "malformed_json", None),
        ("[]", "invalid_type", None),
        (r#"{"status":"s"}"#, "required", Some("id")),
        (r#"{"id":"","status":"s"}"#, "empty", Some("id")),
        (
            r#"{"id":"a","status":"s","timestamp":"2024-05-01"}"#,
            "invalid_timestamp",
            Some("timestamp"),
        ),
        (
            r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:06:00Z"}"#,
            "future_timestamp",
            Some("timestamp"),
        ),
        (
            r#"{"id":"a","status":"s","data":[]}"#,
            "invalid_type",
            Some("data"),
        ),
        (
            r#"{"id":"a","status":"s","extra":1}"#,
            "unknown_field",
            Some("extra"),
        ),
    ];
    for (body, code, field) in cases {
        let (status, answer) = call(&f, Method::POST, "/events", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&answer, code, field);
    }
    let big = format!(
        r#"{{"id":"a","status":"s","data":{{"x":"{}"}}}}"#,
        "y".repeat(70_000)
    );
    let (status, answer) = call(&f, Method::POST, "/events", &big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&answer, "too_large", Some("data"));
    let not_utf8 = ApiRequest {
        body: Bytes::from_static(&[0xff, 0xfe]),
        ..request(Method::POST, "/events", "")
    };
    assert_eq!(f.api.handle(not_utf8).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        f.memory.stream.put_calls(),
        0,
        "nothing invalid reaches the stream"
    );
}

#[tokio::test]
async fn media_type_size_method_and_route_errors() {
    let f = fixture_api();
    let form = ApiRequest {
        content_type: Some("application/x-www-form-urlencoded".into()),
        ..request(Method::POST, "/events", "{}")
    };
    let response = f.api.handle(form).await;
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&json_of(&response), "unsupported_media_type", None);
    let charset = ApiRequest {
        content_type: Some("application/json; charset=utf-8".into()),
        ..request(Method::POST, "/events", r#"{"id":"a","status":"s"}"#)
    };
    assert_eq!(f.api.handle(charset).await.status, StatusCode::ACCEPTED);
    let untyped = ApiRequest {
        content_type: None,
        idempotency_key: None,
        ..request(Method::POST, "/events", r#"{"id":"a","status":"s"}"#)
    };
    assert_eq!(f.api.handle(untyped).await.status, StatusCode::ACCEPTED);
    // A Content-Type that is not ASCII is still a Content-Type: refused, not taken for absent.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_bytes("application/jsön".as_bytes()).unwrap(),
    );
    let non_ascii = ApiRequest {
        content_type: tidemark::api::content_type(&headers),
        ..request(Method::POST, "/events", r#"{"id":"a","status":"s"}"#)
    };
    assert_eq!(
        f.api.handle(non_ascii).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let huge = request(
        Method::POST,
        "/events/batch",
        &" ".repeat(MAX_BODY_BYTES + 1),
    );
    let response = f.api.handle(huge).await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&json_of(&response), "body_too_large", None);

    let response = f.api.handle(request(Method::GET, "/events", "")).await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.header(&header::ALLOW).unwrap(), "POST");
    let response = f
        .api
        .handle(request(Method::DELETE, "/messages/a", ""))
        .await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.header(&header::ALLOW).unwrap(), "GET");
    for path in ["/", "/nope", "/messages/", "/events/batch/x"] {
        let (status, body) = call(&f, Method::GET, path, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&body, "not_found", None);
    }
}

#[tokio::test]
async fn batch_mixes_accepted_and_rejected_in_request_order() {
    let f = fixture_api();
    let body = r#"{"events":[{"id":"a","status":"1"},{"id":"b"},{"id":"c","status":"3","timestamp":"x"},{"id":"d","status":"4"}]}"#;
    let (status, answer) = call(&f, Method::POST, "/events/batch", body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["id"], "a");
    assert!(results[0]["sequence_number"].is_string());
    assert_error(&results[1], "required", Some("events[1].status"));
    assert_error(
        &results[2],
        "invalid_timestamp",
        Some("events[2].timestamp"),
    );
    assert_eq!(results[3]["id"], "d");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        f.memory.stream.put_many_calls(),
        1,
        "one PutRecords call for the valid events"
    );

    let all_good = format!(
        r#"{{"events":[{}]}}"#,
        vec![r#"{"id":"x","status":"s"}"#; MAX_BATCH_EVENTS].join(",")
    );
    let (status, answer) = call(&f, Method::POST, "/events/batch", &all_good).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["accepted"], MAX_BATCH_EVENTS);
    assert_eq!(
        f.memory.stream.put_many_calls(),
        2,
        "500 events are one more PutRecords call"
    );

    let (status, answer) = call(
        &f,
        Method::POST,
        "/events/batch",
        r#"{"events":[{"id":""},{"status":"s"}]}"#,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no valid event: the request is bad input"
    );
    assert_eq!(answer["results"].as_array().unwrap().len(), 2);
    let (status, answer) = call(&f, Method::POST, "/events/batch", r#"{"events":[]}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&answer, "batch_size", Some("events"));
}

#[tokio::test]
async fn throttling_gives_503_with_retry_after_and_partial_207() {
    let f = fixture_api();
    f.faults.set_down(true);
    let response = f
        .api
        .handle(request(
            Method::POST,
            "/events",
            r#"{"id":"a","status":"s"}"#,
        ))
        .await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.header(&header::RETRY_AFTER).unwrap(), "1");
    assert_error(&json_of(&response), "throttled", None);
    let response = f
        .api
        .handle(request(
            Method::POST,
            "/events/batch",
            r#"{"events":[{"id":"a","status":"s"}]}"#,
        ))
        .await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.header(&header::RETRY_AFTER).is_some());

    // Half the entries throttled on every attempt: some get through, the rest are reported.
    f.faults.set_down(false);
    f.faults.set_failure_rate(0.85);
    let events: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"id":"id-{i}","status":"s"}}"#))
        .collect();
    let (status, answer) = call(
        &f,
        Method::POST,
        "/events/batch",
        &format!(r#"{{"events":[{}]}}"#, events.join(",")),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let accepted: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("sequence_number").is_some())
        .collect();
    let throttled: Vec<&Value> = results
        .iter()
        .filter(|r| r["error"]["code"] == "throttled")
        .collect();
    assert_eq!(accepted.len() + throttled.len(), 100);
    assert!(!accepted.is_empty() && !throttled.is_empty());
    // With clean failures only, exactly the accepted events are on the stream: a 202 entry is
    // never a lie. (A call that times out after taking effect may leave a throttled entry on
    // the stream too: `request_order` below mixes those in.)
    let mut on_stream = 0;
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        on_stream += records_on(&f, shard).await.len();
    }
    assert_eq!(on_stream, accepted.len());
}

#[tokio::test]
async fn get_message_and_shards() {
    let f = fixture_api();
    let (status, body) = call(&f, Method::GET, "/messages/unknown", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found", Some("id"));
    let row = StatusRow {
        id: "a/b c".into(),
        status: "shipped".into(),
        timestamp: "2024-05-01T13:00:00+01:00".into(),
        data: Some(r#"{"n":1}"#.into()),
        received_at: "2024-05-01T12:00:00Z".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: SequenceNumber::parse("42").unwrap(),
        version: tidemark::domain::VersionKey("k".into()),
        updated_at: "2024-05-01T12:00:01Z".into(),
    };
    f.memory.status.apply(row.clone()).await.unwrap();
    let (status, body) = call(&f, Method::GET, "/messages/a%2Fb%20c", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "id": "a/b c", "status": "shipped", "timestamp": "2024-05-01T13:00:00+01:00", "data": {"n": 1},
            "received_at": "2024-05-01T12:00:00Z", "shard_id": "shardId-000000000000",
            "sequence_number": "42", "updated_at": "2024-05-01T12:00:01Z",
            // The row's version key ("k"), opaque.
            "version": "v1.aw"
        })
    );
    let (status, body) = call(&f, Method::GET, "/messages/a%00b", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "control_character", Some("id"));
    let (status, body) = call(&f, Method::GET, "/messages/%FF", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_encoding", Some("id"));
    let (status, body) = call(
        &f,
        Method::GET,
        &format!("/messages/{}", "x".repeat(257)),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "too_long", Some("id"));
    // Before any checkpoint, every shard of the stream is listed, none behind.
    let (status, body) = call(&f, Method::GET, "/shards", "").await;
    assert_eq!(status, StatusCode::OK);
    let unprocessed = |id: &str| {
        json!({
            "shard_id": id, "open": true, "sequence_number": null, "updated_at": null,
            "records_applied": 0, "lag_ms": null, "checkpoint_age_ms": null, "stuck": false,
        })
    };
    assert_eq!(
        body,
        json!({
            "shards": [unprocessed("shardId-000000000000"), unprocessed("shardId-000000000001")],
            "stuck_after_ms": 300_000,
        })
    );
}

#[tokio::test]
async fn each_lambda_serves_only_its_routes() {
    let f = fixture_api();
    let ingest_only = Api {
        ingest: f.api.ingest,
        query: None,
    };
    assert_eq!(
        ingest_only
            .handle(request(Method::GET, "/shards", ""))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ingest_only
            .handle(request(
                Method::POST,
                "/events",
                r#"{"id":"a","status":"s"}"#
            ))
            .await
            .status,
        StatusCode::ACCEPTED
    );
}

/// What `data` holds comes back exactly as sent (compact): digits beyond a double's precision,
/// exponent, trailing zeros, key order, escapes, the deepest nesting allowed. Through the whole
/// path: POST, the stream, the processor, STATUS, GET.
#[tokio::test]
async fn data_is_read_back_byte_for_byte() {
    let f = fixture_api();
    let depth = tidemark::domain::limits::MAX_DATA_DEPTH - 1;
    let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let data = format!(
        r#"{{"z":1,"a":12345678901234567890123,"f":1.10,"e":-2.5E+3,"max":1.7976931348623157e308,"s":"\u00e9\ud83d\ude00\n","deep":{deep}}}"#
    );
    let body = format!(r#"{{"id":"exact","status":"s","data":{data}}}"#);
    let response = f.api.handle(request(Method::POST, "/events", &body)).await;
    assert_eq!(response.status, StatusCode::ACCEPTED);

    let processor = Adapters::in_memory(f.memory.clone())
        .processor(Default::default(), Arc::new(FixedClock(now())));
    for shard in f.memory.stream.list_shards().await.unwrap() {
        let records = records_on(&f, &shard.shard_id).await;
        let outcome = processor.process_batch(&shard.shard_id, &records).await;
        assert_eq!(outcome.failure, None);
    }

    let response = f
        .api
        .handle(request(Method::GET, "/messages/exact", ""))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let text = String::from_utf8(response.body).unwrap();
    assert!(
        text.ends_with(&format!(r#","data":{data}}}"#)),
        "data changed on the way back: {text}"
    );
    // The whole row is ordinary JSON that a standard parser reads.
    let row: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (row["id"].as_str(), row["status"].as_str()),
        (Some("exact"), Some("s"))
    );
}

/// The reproducers of data that was accepted with 202 but could not be read back (or was changed
/// on the way), of hostile timestamps, and of duplicate keys: each is a 400 naming the field and
/// rule, and nothing reaches the stream.
#[tokio::test]
async fn unreadable_data_duplicate_keys_and_hostile_timestamps_get_400() {
    let f = fixture_api();
    let deep = format!("{}1{}", "[".repeat(128), "]".repeat(128));
    let digits = |n: usize| "1".repeat(n);
    let too_deep_at = format!(
        "data.d{}",
        "[0]".repeat(tidemark::domain::limits::MAX_DATA_DEPTH - 1)
    );
    let cases: Vec<(String, &str, &str)> = vec![
        (
            r#"{"id":"b1","status":"s","data":{"n":1e400}}"#.into(),
            "invalid_number",
            "data.n",
        ),
        (
            r#"{"id":"b1","status":"s","data":{"l":[-1e309]}}"#.into(),
            "invalid_number",
            "data.l[0]",
        ),
        (
            r#"{"id":"b1","status":"s","data":{"s":"\ud800"}}"#.into(),
            "invalid_string",
            "data.s",
        ),
        (
            format!(r#"{{"id":"b1","status":"s","data":{{"d":{deep}}}}}"#),
            "too_deep",
            &too_deep_at,
        ),
        (
            r#"{"id":"b1","status":"s","data":{"k":1,"k":2}}"#.into(),
            "duplicate_key",
            "data.k",
        ),
        (
            r#"{"id":"a","id":"b","status":"s"}"#.into(),
            "duplicate_key",
            "id",
        ),
        (
            r#"{"id":"a","status":"s","data":null,"data":{}}"#.into(),
            "duplicate_key",
            "data",
        ),
        (
            r#"{"id":"\ud800","status":"s"}"#.into(),
            "invalid_string",
            "id",
        ),
        (
            r#"{"id":"a","status":"\udc00x"}"#.into(),
            "invalid_string",
            "status",
        ),
        (
            format!(
                r#"{{"id":"a","status":"s","timestamp":"2024-05-01T12:00:00.{}Z"}}"#,
                digits(2_000_000)
            ),
            "too_long",
            "timestamp",
        ),
        (
            format!(
                r#"{{"id":"a","status":"s","timestamp":"2024-05-01T12:00:00.{}Z"}}"#,
                digits(600_000)
            ),
            "too_long",
            "timestamp",
        ),
        (
            r#"{"id":"a","status":"s","timestamp":"2024-05-01X12:00:00Z"}"#.into(),
            "invalid_timestamp",
            "timestamp",
        ),
        (
            r#"{"id":"a","status":"s","timestamp":"2024-05-01 12:00:00Z"}"#.into(),
            "invalid_timestamp",
            "timestamp",
        ),
        (
            r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:00:00.1234567891Z"}"#.into(),
            "invalid_timestamp",
            "timestamp",
        ),
    ];
    for (body, code, field) in &cases {
        let (status, answer) = call(&f, Method::POST, "/events", body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            &body[..body.len().min(120)]
        );
        assert_error(&answer, code, Some(field));
    }
    // The strict forms still pass: lowercase t, nine fraction digits, an offset.
    for timestamp in [
        "2024-05-01t11:00:00Z",
        "2024-05-01T11:00:00.123456789+02:00",
    ] {
        let body = format!(r#"{{"id":"a","status":"s","timestamp":"{timestamp}"}}"#);
        let (status, answer) = call(&f, Method::POST, "/events", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{timestamp}: {answer}");
    }
    assert_eq!(
        f.memory.stream.put_calls(),
        2,
        "only the two valid events were put"
    );
}

/// A batch answers for exactly what was applied: a hostile event among good ones is a 400 item
/// naming its own index, the good ones are accepted (207), and only they are on the stream.
#[tokio::test]
async fn batch_answer_matches_what_was_applied() {
    let f = fixture_api();
    let huge_timestamp = format!("2024-05-01T12:00:00.{}Z", "1".repeat(2_000_000));
    let body = format!(
        r#"{{"events":[{{"id":"ok-0","status":"s"}},{{"id":"bad","status":"s","timestamp":"{huge_timestamp}"}},{{"id":"ok-2","status":"s","data":{{"n":1e400}}}},{{"id":"ok-3","status":"s"}}]}}"#
    );
    let (status, answer) = call(&f, Method::POST, "/events/batch", &body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"], 2);
    assert_eq!(answer["results"][0]["id"], "ok-0");
    assert_error(
        &answer["results"][1],
        "too_long",
        Some("events[1].timestamp"),
    );
    assert_error(
        &answer["results"][2],
        "invalid_number",
        Some("events[2].data.n"),
    );
    assert_eq!(answer["results"][3]["id"], "ok-3");
    let mut on_stream = Vec::new();
    for shard in f.memory.stream.list_shards().await.unwrap() {
        on_stream.extend(
            records_on(&f, &shard.shard_id)
                .await
                .into_iter()
                .map(|r| r.partition_key),
        );
    }
    on_stream.sort();
    assert_eq!(on_stream, ["ok-0", "ok-3"]);

    for (body, code, field) in [
        (
            r#"{"events":[{"id":"a","status":"s"}],"extra":1}"#,
            "unknown_field",
            "extra",
        ),
        (
            r#"{"events":[],"events":[{"id":"a","status":"s"}]}"#,
            "duplicate_key",
            "events",
        ),
    ] {
        let (status, answer) = call(&f, Method::POST, "/events/batch", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&answer, code, Some(field));
    }
}

/// Applies every record on every shard: STATUS (and DEADLETTER), and the checkpoint when
/// `checkpoint` is true; shards in `skip` are left alone.
async fn apply_all(f: &Fixture, checkpoint: bool, skip: &[&str]) {
    let adapters = Adapters::in_memory(f.memory.clone());
    let processor = Arc::new(adapters.processor(Default::default(), Arc::new(FixedClock(now()))));
    let consumer = CheckpointedConsumer::new(processor.clone(), adapters.checkpoint_writer());
    for shard in f.memory.stream.list_shards().await.unwrap() {
        if skip.contains(&shard.shard_id.as_str()) {
            continue;
        }
        let records = records_on(f, &shard.shard_id).await;
        if records.is_empty() {
            continue;
        }
        if checkpoint {
            consumer.run_batch(&shard.shard_id, &records).await;
        } else {
            processor.process_batch(&shard.shard_id, &records).await;
        }
    }
}

async fn read_after(f: &Fixture, id: &str, token: &str, wait_ms: u64) -> (StatusCode, Value) {
    call(
        f,
        Method::GET,
        &format!("/messages/{id}?after={token}&wait_ms={wait_ms}"),
        "",
    )
    .await
}

/// Watching one id (`newer_than`): one holding the current version gets `304` (no body) when
/// `wait_ms` runs out; an event that loses to the row never wakes it; one started before a newer
/// write is answered by that write; a made-up version, or one beside `after`, is a 400 naming it.
/// Both ways a watcher waits: re-reading after growing pauses (the Lambda), and woken by
/// STATUS's change feed (`serve`).
#[tokio::test]
async fn a_watcher_is_answered_by_a_newer_row_and_never_by_a_losing_event() {
    watcher_case(&fixture_api()).await;
    watcher_case(&fixture_over(
        MemoryBackend::new(2).with_change_feed(100),
        now(),
        11,
    ))
    .await;
}

async fn watcher_case(f: &Fixture) {
    let post = |status: &str, timestamp: &str| {
        let body = format!(r#"{{"id":"w","status":"{status}","timestamp":"{timestamp}"}}"#);
        async move { call(f, Method::POST, "/events", &body).await }
    };
    let (code, accepted) = post("packed", "2024-05-01T12:00:00Z").await;
    assert_eq!(code, StatusCode::ACCEPTED, "{accepted}");
    apply_all(f, true, &[]).await;
    let (_, row) = call(f, Method::GET, "/messages/w", "").await;
    let held = row["version"].as_str().unwrap().to_owned();
    let watch = |wait_ms: u64| {
        f.api.handle(request(
            Method::GET,
            &format!("/messages/w?newer_than={held}&wait_ms={wait_ms}"),
            "",
        ))
    };

    let unchanged = watch(30).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());

    // Older than the row: applied and lost, so nothing changed for the watcher.
    assert_eq!(
        post("created", "2024-05-01T11:00:00Z").await.0,
        StatusCode::ACCEPTED
    );
    apply_all(f, true, &[]).await;
    assert_eq!(watch(30).await.status, StatusCode::NOT_MODIFIED);

    // A watcher waiting while a newer event is posted and applied.
    let (answered, _) = tokio::join!(watch(5_000), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (code, body) = post("shipped", "2024-05-01T12:00:02Z").await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        apply_all(f, true, &[]).await;
    });
    assert_eq!(answered.status, StatusCode::OK);
    let newer = json_of(&answered);
    assert_eq!(newer["status"], "shipped");
    assert_ne!(newer["version"].as_str(), Some(held.as_str()));
    // Holding the newest version, the watch waits again.
    let (_, now) = call(f, Method::GET, "/messages/w", "").await;
    assert_eq!(now["version"], newer["version"]);

    let token = accepted["token"].as_str().unwrap();
    for (query, field) in [
        ("newer_than=v1.bm90", "newer_than"),
        ("newer_than=whatever&wait_ms=10", "newer_than"),
        (&*format!("newer_than={held}&after={token}"), "newer_than"),
        ("wait_ms=10", "wait_ms"),
    ] {
        let (code, body) = call(f, Method::GET, &format!("/messages/w?{query}"), "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    // No row at all: still a 404 once the wait is over.
    let (code, _) = call(
        f,
        Method::GET,
        &format!("/messages/nobody?newer_than={held}"),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

/// Read-your-writes: a read with the token of a 202 answers a state that reflects the write or
/// something newer, or 409 not_yet_visible with the current row; never an older state as if it
/// were current.
#[tokio::test]
async fn a_token_reads_the_write_or_something_newer() {
    let f = fixture_api();
    let post = |body: &'static str| call(&f, Method::POST, "/events", body);
    let (_, first) =
        post(r#"{"id":"o","status":"packed","timestamp":"2024-05-01T11:00:00Z"}"#).await;
    let token = first["token"].as_str().unwrap().to_owned();

    // Not applied yet: 409 with Retry-After, no current row, naming `after`.
    let response = f
        .api
        .handle(request(
            Method::GET,
            &format!("/messages/o?after={token}"),
            "",
        ))
        .await;
    assert_eq!(response.status, StatusCode::CONFLICT);
    assert_eq!(response.header(&header::RETRY_AFTER).unwrap(), "1");
    let answer = json_of(&response);
    assert_error(&answer, "not_yet_visible", Some("after"));
    assert_eq!(answer["current"], Value::Null);

    // Applied (STATUS only, no checkpoint): the row rule answers.
    apply_all(&f, false, &[]).await;
    let (status, row) = read_after(&f, "o", &token, 0).await;
    assert_eq!(
        (status, row["status"].as_str()),
        (StatusCode::OK, Some("packed"))
    );

    // A newer write not applied yet: 409 carries the older row as `current`.
    let (_, second) =
        post(r#"{"id":"o","status":"shipped","timestamp":"2024-05-01T11:30:00Z"}"#).await;
    let newer = second["token"].as_str().unwrap().to_owned();
    let (status, answer) = read_after(&f, "o", &newer, 0).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["current"]["status"], "packed");
    // The old token is still satisfied by the row it named.
    assert_eq!(read_after(&f, "o", &token, 0).await.0, StatusCode::OK);

    // A write that loses to a newer one is reflected once its shard is applied past it.
    let (_, late) = post(r#"{"id":"o","status":"late","timestamp":"2024-05-01T10:00:00Z"}"#).await;
    let late = late["token"].as_str().unwrap().to_owned();
    apply_all(&f, true, &[]).await;
    for token in [&token, &newer, &late] {
        let (status, row) = read_after(&f, "o", token, 0).await;
        assert_eq!(
            (status, row["status"].as_str()),
            (StatusCode::OK, Some("shipped"))
        );
    }
}

#[tokio::test]
async fn wait_ms_waits_for_the_write_to_be_applied() {
    let f = fixture_api();
    let (_, accepted) = call(&f, Method::POST, "/events", r#"{"id":"w","status":"s"}"#).await;
    let token = accepted["token"].as_str().unwrap().to_owned();
    let (read, ()) = tokio::join!(read_after(&f, "w", &token, 5_000), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        apply_all(&f, true, &[]).await;
    });
    assert_eq!(
        (read.0, read.1["status"].as_str()),
        (StatusCode::OK, Some("s"))
    );
}

/// A batch's top-level token covers every accepted item: it is satisfied only once every shard
/// the batch touched is applied past its items.
#[tokio::test]
async fn a_batch_token_covers_every_accepted_event() {
    let f = fixture_api();
    let events: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"id":"b{i}","status":"s{i}"}}"#))
        .collect();
    let body = format!(r#"{{"events":[{},{{"id":""}}]}}"#, events.join(","));
    let (status, answer) = call(&f, Method::POST, "/events/batch", &body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let token = answer["token"].as_str().unwrap().to_owned();
    assert!(answer["results"][0]["token"].is_string());
    assert!(answer["results"][8].get("token").is_none());
    let shard_of_b0 = answer["results"][0]["shard_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = f
        .memory
        .stream
        .list_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .find(|s| *s != shard_of_b0)
        .unwrap();
    // b0's shard applied and checkpointed, the other one not: not yet, even for b0.
    apply_all(&f, true, &[&other]).await;
    assert_eq!(
        read_after(&f, "b0", &token, 0).await.0,
        StatusCode::CONFLICT
    );
    apply_all(&f, true, &[]).await;
    assert_eq!(read_after(&f, "b0", &token, 0).await.0, StatusCode::OK);
}

/// A token from a shard that was split afterwards is judged by that (parent) shard's checkpoint,
/// though the id's new writes now go to a child; here the record was set aside as poison, so the
/// id has no row and the answer, once reflected, is 404.
#[tokio::test]
async fn a_parent_shard_token_survives_resharding() {
    let f = fixture_api();
    let ack = f
        .memory
        .stream
        .put_raw("x", Bytes::from_static(b"not an event"))
        .unwrap();
    let token = tidemark::domain::consistency::ConsistencyToken::event(
        &ack.shard_id,
        now(),
        ack.sequence_number.clone(),
    )
    .encode();
    f.memory.stream.split_shard(&ack.shard_id).unwrap();
    let (_, child_write) = call(&f, Method::POST, "/events", r#"{"id":"x","status":"s"}"#).await;
    assert_ne!(child_write["shard_id"], ack.shard_id.as_str());

    assert_eq!(read_after(&f, "x", &token, 0).await.0, StatusCode::CONFLICT);
    apply_all(&f, true, &[child_write["shard_id"].as_str().unwrap()]).await;
    let (status, answer) = read_after(&f, "x", &token, 0).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test]
async fn bad_read_parameters_get_400_naming_them() {
    let f = fixture_api();
    let (_, accepted) = call(&f, Method::POST, "/events", r#"{"id":"p","status":"s"}"#).await;
    let token = accepted["token"].as_str().unwrap();
    for (query, code, field) in [
        ("after=nope".to_owned(), "invalid_token", "after"),
        ("after=t1.AAAA".to_owned(), "invalid_token", "after"),
        (
            format!("after={token}&wait_ms=ten"),
            "invalid_type",
            "wait_ms",
        ),
        (
            format!("after={token}&wait_ms=5001"),
            "out_of_range",
            "wait_ms",
        ),
        (
            format!("after={token}&wait_ms=-1"),
            "invalid_type",
            "wait_ms",
        ),
        ("wait_ms=10".to_owned(), "required", "wait_ms"),
        (
            format!("after={token}&after={token}"),
            "duplicate_key",
            "after",
        ),
        ("since=1".to_owned(), "unknown_field", "since"),
    ] {
        let (status, answer) = call(&f, Method::GET, &format!("/messages/p?{query}"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_error(&answer, code, Some(field));
    }
}

/// Events of one batch without timestamps keep their request order for each id, although
/// PutRecords fails entries at random and the publisher retries them (giving the retried ones
/// later sequence numbers than entries behind them in the request), and although a call can time
/// out after its entries reached the stream, so that entries reported throttled may be there too.
mod request_order {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn the_last_event_of_a_request_on_the_stream_wins(
            ids in prop::collection::vec(0u8..4, 1..60),
            throttled in 0.0f64..0.6,
            timed_out in 0.0f64..0.4,
            seed in any::<u64>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let f = fixture_api_seeded(now(), seed);
            f.faults.set_failure_rate(throttled);
            f.faults.set_fail_after_rate(timed_out);
            let events: Vec<String> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| format!(r#"{{"id":"id-{id}","status":"n{i}"}}"#))
                .collect();
            let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
            let (status, answer) = runtime.block_on(call(&f, Method::POST, "/events/batch", &body));
            f.faults.set_failure_rate(0.0);
            f.faults.set_fail_after_rate(0.0);
            // Every entry failed: a 503 with no results, though timed-out ones may be on the stream.
            let results = match answer["results"].as_array() {
                Some(results) => results.clone(),
                None => {
                    prop_assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer);
                    Vec::new()
                }
            };

            // What reached the stream: (shard, sequence number) → request index, read back from
            // the records themselves.
            let mut on_stream: std::collections::HashMap<(String, String), usize> = Default::default();
            for shard in runtime.block_on(f.memory.stream.list_shards()).unwrap() {
                for record in runtime.block_on(records_on(&f, &shard.shard_id)) {
                    let event: Value = serde_json::from_slice(&record.data).unwrap();
                    let index = event["status"].as_str().unwrap()[1..].parse().unwrap();
                    on_stream.insert((shard.shard_id.clone(), record.sequence_number.as_str().to_owned()), index);
                }
            }
            // A 202 entry is never a lie: it is on the stream where its answer says.
            for (i, result) in results.iter().enumerate() {
                if let Some(sequence) = result["sequence_number"].as_str() {
                    let at = (result["shard_id"].as_str().unwrap().to_owned(), sequence.to_owned());
                    prop_assert_eq!(on_stream.get(&at), Some(&i), "{}", result);
                }
            }
            let mut last_on_stream: std::collections::HashMap<u8, usize> = Default::default();
            for &i in on_stream.values() {
                let last = last_on_stream.entry(ids[i]).or_insert(i);
                *last = (*last).max(i);
            }
            runtime.block_on(apply_all(&f, true, &[]));
            for (id, i) in last_on_stream {
                let (status, row) = runtime.block_on(call(&f, Method::GET, &format!("/messages/id-{id}"), ""));
                prop_assert_eq!(status, StatusCode::OK);
                let expected = format!("n{i}");
                prop_assert_eq!(row["status"].as_str(), Some(expected.as_str()), "{}", answer);
            }
        }
    }
}

/// An event timestamped ahead of the receive time is accepted (within the skew limit) and the
/// answer says by how much; events on time carry no such field.
#[tokio::test]
async fn the_answer_says_how_far_a_timestamp_is_ahead() {
    let f = fixture_api();
    let (status, ahead) = call(
        &f,
        Method::POST,
        "/events",
        r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:02:00.5Z"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(ahead["ahead_ms"], 120_500);
    let (_, on_time) = call(&f, Method::POST, "/events", r#"{"id":"a","status":"s"}"#).await;
    assert!(on_time.get("ahead_ms").is_none(), "{on_time}");
    let (_, batch) = call(
        &f,
        Method::POST,
        "/events/batch",
        r#"{"events":[{"id":"a","status":"s","timestamp":"2024-05-01T12:00:01Z"},{"id":"b","status":"s"}]}"#,
    )
    .await;
    assert_eq!(batch["results"][0]["ahead_ms"], 1_000);
    assert!(batch["results"][1].get("ahead_ms").is_none(), "{batch}");
    let line: Value =
        serde_json::from_str(&tidemark::telemetry::clock_ahead_emf_line(2, 1_000, 0)).unwrap();
    assert_eq!(line["events_ahead_of_receive_time"], 2);
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        "events_ahead_of_receive_time"
    );
}

/// Arbitrary bodies never make the API answer 5xx.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn no_input_gets_a_5xx(body in prop_oneof![
            ".{0,200}",
            r#"\{"id":".{0,10}","status":".{0,10}"(,"timestamp":"[-0-9T:.Z+]{0,30}")?(,"data":\{"k":[0-9]{1,3}\})?\}"#,
            r#"\{"events":\[(\{"id":"[a-c]{0,2}","status":"[a-z]{0,2}"\},?){0,5}\]\}"#,
        ], batch in any::<bool>(), path in prop_oneof![Just("/events".to_owned()), "/messages/.{0,20}", ".{0,20}"]) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let f = fixture_api();
            let route = if batch { "/events/batch".to_owned() } else { path };
            for method in [Method::POST, Method::GET] {
                let response = runtime.block_on(f.api.handle(request(method, &route, &body)));
                prop_assert!(response.status.is_success() || response.status.is_client_error(), "{} for {route} {body}", response.status);
            }
        }
    }
}

/// Whatever `data` a client sends is either refused with a 400 naming a path inside `data` and
/// one of its rules, or accepted and then read back byte for byte (compact) in a row that a
/// standard JSON reader parses. Data is generated as text, so it holds what a `Value` cannot:
/// numbers past f64, 25-digit integers, trailing zeros, lone surrogates, keys equal only after
/// unescaping, nesting past the limit.
mod data_round_trip {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn string_text() -> impl Strategy<Value = String> {
        vec(
            prop_oneof![
                Just("a"),
                Just("é"),
                Just("\\u00e9"),
                Just("\\ud800"),
                Just("\\udc00"),
                Just("\\ud83d\\ude00"),
                Just("\\n"),
                Just("\\\""),
            ],
            0..4,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()))
    }

    /// JSON text as a client might send it (spaces after colons and commas, inside braces), and
    /// the same text compact, built side by side: the oracle for "read back as sent, apart from
    /// whitespace" comes from the generator, not from the code under test.
    fn json_text() -> impl Strategy<Value = (String, String)> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?",
            string_text(),
        ]
        .prop_map(|text| (text.clone(), text));
        leaf.prop_recursive(6, 64, 4, |inner| {
            let key = prop_oneof![
                Just("\"a\""),
                Just("\"b\""),
                Just("\"\\u0061\""),
                Just("\"a b\""),
            ];
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(|items| {
                    let (sent, compact): (Vec<String>, Vec<String>) = items.into_iter().unzip();
                    (
                        format!("[ {} ]", sent.join(" , ")),
                        format!("[{}]", compact.join(",")),
                    )
                }),
                vec((key, inner), 0..4).prop_map(|members| {
                    let sent: Vec<String> = members
                        .iter()
                        .map(|(k, (v, _))| format!("{k}: {v}"))
                        .collect();
                    let compact: Vec<String> = members
                        .iter()
                        .map(|(k, (_, v))| format!("{k}:{v}"))
                        .collect();
                    (
                        format!("{{ {} }}", sent.join(", ")),
                        format!("{{{}}}", compact.join(",")),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn accepted_data_reads_back_as_sent((value, compact_value) in json_text(), extra_depth in 0usize..40) {
            let (open, close) = ("[".repeat(extra_depth), "]".repeat(extra_depth));
            let data = format!("{{\"v\": {open}{value}{close}}}");
            let compact = format!("{{\"v\":{open}{compact_value}{close}}}");
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let f = fixture_api();
            let body = format!(r#"{{"id":"p","status":"s","data":{data}}}"#);
            let response = runtime.block_on(f.api.handle(request(Method::POST, "/events", &body)));
            if response.status == StatusCode::BAD_REQUEST {
                let answer = json_of(&response);
                let field = answer["error"]["field"].as_str().unwrap_or_default();
                prop_assert!(field.starts_with("data"), "{answer}");
                let code = answer["error"]["code"].as_str().unwrap_or_default();
                prop_assert!(
                    ["too_deep", "invalid_number", "invalid_string", "duplicate_key"].contains(&code),
                    "{answer}"
                );
                return Ok(());
            }
            prop_assert_eq!(response.status, StatusCode::ACCEPTED);
            let processor = Adapters::in_memory(f.memory.clone())
                .processor(Default::default(), Arc::new(FixedClock(now())));
            for shard in runtime.block_on(f.memory.stream.list_shards()).unwrap() {
                let records = runtime.block_on(records_on(&f, &shard.shard_id));
                let outcome = runtime.block_on(processor.process_batch(&shard.shard_id, &records));
                prop_assert_eq!(outcome.report.dead_lettered, 0);
            }
            let response = runtime.block_on(f.api.handle(request(Method::GET, "/messages/p", "")));
            prop_assert_eq!(response.status, StatusCode::OK);
            let text = String::from_utf8(response.body).unwrap();
            prop_assert!(text.ends_with(&format!(r#","data":{compact}}}"#)), "{text}");
            prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "a standard reader fails on {text}");
        }
    }
}

/// The payload shapes of every HTTP integration, as the functions receive them: the `events/`
/// fixtures that `cargo lambda invoke` sends (scripts/invoke-check), a few of them moved under a
/// named stage or to another method.
#[cfg(feature = "lambda-http")]
mod lambda_payloads {
    use super::*;
    use tidemark::adapters::lambda_http::{to_api_request, to_lambda_response};

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn v1_post() -> Value {
        fixture(include_str!("../../events/ingest/apigw-v1-post-event.json"))
    }

    /// An HTTP API (v2) event under a named stage: API Gateway keeps the stage in `rawPath`.
    fn in_named_stage(mut event: Value, stage: &str) -> Value {
        let path = event["rawPath"].as_str().unwrap().to_owned();
        event["rawPath"] = json!(format!("/{stage}{path}"));
        event["requestContext"]["http"]["path"] = event["rawPath"].clone();
        event["requestContext"]["stage"] = json!(stage);
        event
    }

    /// The same under SAM CLI's shape (`sam local generate-event ... --stage NAME`): the stage
    /// is named in the request context but `rawPath` does not carry it.
    fn sam_stage(mut event: Value, stage: &str) -> Value {
        event["requestContext"]["stage"] = json!(stage);
        event
    }

    async fn through_lambda(f: &Fixture, event: Value) -> ApiResponse {
        let request = lambda_http::request::from_str(&event.to_string())
            .expect("a payload lambda_http accepts");
        let api_request = to_api_request(request);
        let response = f.api.handle(api_request).await;
        let lambda_response = to_lambda_response(response.clone());
        assert_eq!(lambda_response.status(), response.status);
        response
    }

    /// The `Idempotency-Key` header reaches the API through lambda_http, and the replay header
    /// comes back out: the second invocation is the first answer, and nothing more is put.
    #[tokio::test]
    async fn the_idempotency_key_header_survives_the_lambda_payload() {
        let f = fixture_api_at(EventTime::parse_rfc3339("2026-11-22T10:10:00Z").unwrap());
        let event = || {
            fixture(include_str!(
                "../../events/ingest/apigw-v2-post-event-idempotent.json"
            ))
        };
        let first = through_lambda(&f, event()).await;
        let retry = through_lambda(&f, event()).await;
        assert_eq!(first.status, StatusCode::ACCEPTED);
        assert_eq!(retry.body, first.body);
        assert_eq!(
            retry.header(&tidemark::api::IDEMPOTENT_REPLAYED).unwrap(),
            "true"
        );
        let lambda = to_lambda_response(retry);
        assert_eq!(lambda.headers()["idempotent-replayed"], "true");
        assert_eq!(f.memory.stream.retained_records(), 1);
    }

    #[tokio::test]
    async fn every_integration_routes_post_and_get() {
        // The day the fixtures' events carry timestamps of, so none is in the future.
        let f = fixture_api_at(EventTime::parse_rfc3339("2026-11-22T10:10:00Z").unwrap());
        let posts = [
            ("REST API v1 with a stage", v1_post()),
            (
                "HTTP API v2 with a named stage",
                in_named_stage(
                    fixture(include_str!("../../events/ingest/apigw-v2-post-batch.json")),
                    "live",
                ),
            ),
            (
                "HTTP API v2 default stage, base64 body",
                fixture(include_str!(
                    "../../events/ingest/apigw-v2-base64-post-event.json"
                )),
            ),
            (
                "Function URL",
                fixture(include_str!(
                    "../../events/ingest/function-url-post-event.json"
                )),
            ),
            (
                "ALB",
                fixture(include_str!("../../events/ingest/alb-post-event.json")),
            ),
        ];
        // Stage names that are also route segments, in both shapes.
        let v2_batch = || fixture(include_str!("../../events/ingest/apigw-v2-post-batch.json"));
        let posts = posts.into_iter().chain([
            ("SAM shape, stage events", sam_stage(v2_batch(), "events")),
            ("SAM shape, stage batch", sam_stage(v2_batch(), "batch")),
            (
                "API Gateway shape, stage events",
                in_named_stage(v2_batch(), "events"),
            ),
            (
                "API Gateway shape, stage messages",
                in_named_stage(v2_batch(), "messages"),
            ),
        ]);
        for (name, event) in posts {
            let response = through_lambda(&f, event).await;
            assert_eq!(
                response.status,
                StatusCode::ACCEPTED,
                "{name}: {}",
                String::from_utf8_lossy(&response.body)
            );
        }
        // Rows for the ids the query fixtures read, written straight to STATUS.
        for id in ["order-1", "order-2", "order-3"] {
            let row = StatusRow {
                id: id.into(),
                status: "shipped".into(),
                timestamp: "t".into(),
                data: None,
                received_at: "r".into(),
                shard_id: "s".into(),
                sequence_number: SequenceNumber::parse("1").unwrap(),
                version: tidemark::domain::VersionKey("1".into()),
                updated_at: "u".into(),
            };
            f.memory.status.apply(row).await.unwrap();
        }
        let v2_get = fixture(include_str!("../../events/query/apigw-v2-get-message.json"));
        let gets = [
            (
                "REST API v1",
                fixture(include_str!("../../events/query/apigw-v1-get-message.json")),
            ),
            ("HTTP API v2", v2_get.clone()),
            (
                "HTTP API v2 with a named stage",
                in_named_stage(v2_get.clone(), "live"),
            ),
            (
                "SAM shape, stage messages",
                sam_stage(v2_get.clone(), "messages"),
            ),
            (
                "API Gateway shape, stage shards",
                in_named_stage(v2_get, "shards"),
            ),
            (
                "Function URL",
                fixture(include_str!(
                    "../../events/query/function-url-get-message.json"
                )),
            ),
        ];
        for (name, event) in gets {
            let response = through_lambda(&f, event).await;
            assert_eq!(response.status, StatusCode::OK, "{name}");
            assert_eq!(json_of(&response)["status"], "shipped", "{name}");
        }
        // The read parameters reach the API from every integration's query-string shape: a
        // malformed token is refused naming `after`, a valid one not yet reflected is a 409
        // carrying the current row.
        let pending = tidemark::domain::consistency::ConsistencyToken::event(
            "shardId-000000000000",
            EventTime::parse_rfc3339("2026-11-22T10:09:00Z").unwrap(),
            SequenceNumber::parse("7").unwrap(),
        )
        .encode();
        let mut alb_get = fixture(include_str!("../../events/query/alb-get-shards.json"));
        alb_get["path"] = json!("/messages/order-1");
        let shapes = [
            (
                "REST API v1",
                fixture(include_str!("../../events/query/apigw-v1-get-message.json")),
            ),
            (
                "HTTP API v2",
                fixture(include_str!("../../events/query/apigw-v2-get-message.json")),
            ),
            (
                "Function URL",
                fixture(include_str!(
                    "../../events/query/function-url-get-message.json"
                )),
            ),
            ("ALB", alb_get),
        ];
        for (name, event) in shapes {
            for (token, status) in [
                ("nope", StatusCode::BAD_REQUEST),
                (pending.as_str(), StatusCode::CONFLICT),
            ] {
                let mut event = event.clone();
                if event.get("rawQueryString").is_some() {
                    event["rawQueryString"] = json!(format!("after={token}&wait_ms=0"));
                }
                if event.get("multiValueQueryStringParameters").is_some()
                    || name.starts_with("REST")
                {
                    event["multiValueQueryStringParameters"] =
                        json!({"after": [token], "wait_ms": ["0"]});
                }
                event["queryStringParameters"] = json!({"after": token, "wait_ms": "0"});
                let response = through_lambda(&f, event).await;
                assert_eq!(
                    response.status,
                    status,
                    "{name}: {}",
                    String::from_utf8_lossy(&response.body)
                );
                let answer = json_of(&response);
                if status == StatusCode::BAD_REQUEST {
                    assert_error(&answer, "invalid_token", Some("after"));
                } else {
                    assert_eq!(answer["current"]["status"], "shipped", "{name}");
                }
            }
        }

        let shards = fixture(include_str!("../../events/query/alb-get-shards.json"));
        let response = through_lambda(&f, shards).await;
        assert_eq!(response.status, StatusCode::OK, "ALB GET /shards");
        assert!(json_of(&response)["shards"].is_array());
        let unknown = fixture(include_str!("../../events/query/apigw-v2-get-unknown.json"));
        let response = through_lambda(&f, unknown).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND);

        let mut wrong_method = v1_post();
        wrong_method["httpMethod"] = json!("GET");
        wrong_method["requestContext"]["httpMethod"] = json!("GET");
        let response = through_lambda(&f, wrong_method).await;
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
