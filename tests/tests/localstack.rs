//! Integration tests against real Kinesis and DynamoDB APIs (LocalStack, found through
//! `AWS_ENDPOINT_URL`), through the real adapters and the real handlers. Each test owns its stream
//! and tables. LocalStack's engines never throttle, so throttling and partial failures are
//! injected by wrappers around the real adapters, and outages by a TCP proxy that refuses
//! connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::limits::MAX_DEAD_LETTER_RAW_BYTES;
use tidemark::domain::{parse_event, Clock, Limits, SequenceNumber, SystemClock};
use tidemark::ports::*;
use tidemark::publish::RetryPolicy;
use tidemark::run::replay::replay_range;
use tidemark_tests::{
    all_records, message, quick_settings, wait_for, wait_for_rows, wait_for_statuses, Outage,
    Resources, Running,
};

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let response = http.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Posts and asserts the 202 that means Kinesis acknowledged it.
async fn post_accepted(http: &reqwest::Client, url: String, body: Value) -> Value {
    let (status, answer) = post(http, url, body).await;
    assert_eq!(status, 202, "{answer}");
    answer
}

fn event_bytes(id: &str, status: &str, timestamp: &str) -> Bytes {
    let json = format!(r#"{{"id":"{id}","status":"{status}","timestamp":"{timestamp}"}}"#);
    let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
    Bytes::from(
        parse_event(raw, None, SystemClock.now(), &Limits::default())
            .unwrap()
            .encode()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_ties_duplicates_and_a_mixed_batch() {
    let r = Resources::create("order", 2).await;
    let running = Running::start(r.adapters(), quick_settings()).await;
    let http = reqwest::Client::new();
    let events = format!("{}/events", running.base);
    // Out of order: newest first.
    for (status, ts) in [
        ("third", "2024-05-01T14:00:00+02:00"),
        ("first", "2024-05-01T10:00:00Z"),
        ("second", "2024-05-01T06:30:00-05:00"),
    ] {
        post_accepted(
            &http,
            events.clone(),
            json!({"id": "a", "status": status, "timestamp": ts}),
        )
        .await;
    }
    // Equal timestamps (the same instant written with two offsets): the later sequence number wins.
    post_accepted(
        &http,
        events.clone(),
        json!({"id": "b", "status": "earlier", "timestamp": "2024-05-01T12:00:00Z"}),
    )
    .await;
    post_accepted(
        &http,
        events.clone(),
        json!({"id": "b", "status": "later", "timestamp": "2024-05-01T13:00:00+01:00"}),
    )
    .await;
    // Duplicates.
    for _ in 0..3 {
        post_accepted(
            &http,
            events.clone(),
            json!({"id": "c", "status": "dup", "timestamp": "2024-05-01T12:00:00Z"}),
        )
        .await;
    }
    // A batch mixing valid and invalid events.
    let (status, body) = post(&http, format!("{}/events/batch", running.base), json!({"events": [
        {"id": "d", "status": "ok"}, {"id": "d"}, {"id": "e", "status": "ok", "timestamp": "nope"}, {"id": "f", "status": "ok"}
    ]})).await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["accepted"], 2);
    let expected: Vec<(String, String)> = [
        ("a", "third"),
        ("b", "later"),
        ("c", "dup"),
        ("d", "ok"),
        ("f", "ok"),
    ]
    .iter()
    .map(|(i, s)| (i.to_string(), s.to_string()))
    .collect();
    wait_for_statuses(
        &http,
        &running.base,
        r.adapters().shard_reader().as_ref(),
        &expected,
        30,
    )
    .await;
    assert!(
        message(&http, &running.base, "e").await.is_none(),
        "the invalid event never reached STATUS"
    );
    let shards: Value = http
        .get(format!("{}/shards", running.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let applied: u64 = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["records_applied"].as_u64().unwrap())
        .sum();
    assert_eq!(applied, 10, "{shards}");
    running.stop().await;
}

/// Fails every STATUS write for the given ids: a deterministic partial failure.
struct FailIds {
    inner: Arc<dyn StatusWriter>,
    ids: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl StatusWriter for FailIds {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        if self.ids.lock().unwrap().contains(&row.id) {
            return Err(StoreError::Unavailable("injected".into()));
        }
        self.inner.apply(row).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_whole_or_from_a_reported_failure_changes_nothing() {
    let r = Resources::create("redeliver", 1).await;
    let aws = r.adapters();
    for round in 0..4 {
        for id in 0..5 {
            let data = event_bytes(
                &format!("id-{id}"),
                &format!("r{round}"),
                &format!("2024-05-01T12:00:0{round}Z"),
            );
            aws.stream_writer()
                .put(&OutgoingRecord {
                    partition_key: format!("id-{id}"),
                    data,
                })
                .await
                .unwrap();
        }
    }
    let shard = "shardId-000000000000";
    let shards = aws.shard_reader();
    let it = shards
        .shard_iterator(shard, &StartPosition::TrimHorizon)
        .await
        .unwrap();
    let batch = shards.get_records(&it, 100).await.unwrap().records;
    assert_eq!(batch.len(), 20);
    let status = Arc::new(FailIds {
        inner: aws.status_writer(),
        ids: Mutex::new(HashSet::from(["id-3".to_owned()])),
    });
    let failing = aws.clone().with_status_writer(status.clone());
    let processor = failing.processor(ProcessorSettings::default(), Arc::new(SystemClock));
    // Run as the Lambda handler runs it: the batch, then the checkpoint it earned.
    let mapping = CheckpointedConsumer::new(Arc::new(processor), failing.checkpoint_writer());

    // id-3 fails: its lowest record (the 4th) is reported; OPLOG stops just below it.
    let outcome = mapping.run_batch(shard, &batch).await;
    assert_eq!(outcome.failure.as_ref(), Some(&batch[3].sequence_number));
    let checkpoint = aws.checkpoint_reader().get(shard).await.unwrap().unwrap();
    assert_eq!(checkpoint.sequence_number, batch[2].sequence_number);

    // Lambda resumes from the reported record.
    status.ids.lock().unwrap().clear();
    let resumed: Vec<StreamRecord> = batch[3..].to_vec();
    let outcome = mapping.run_batch(shard, &resumed).await;
    assert_eq!(outcome.failure, None);
    let snapshot = |store: Arc<dyn StatusReader>| async move {
        let mut rows = Vec::new();
        for id in 0..5 {
            rows.push(store.get(&format!("id-{id}")).await.unwrap().unwrap());
        }
        rows
    };
    let before = snapshot(aws.status_reader()).await;
    assert!(before.iter().all(|row| row.status == "r3"));
    let oplog_before = aws.checkpoint_reader().list().await.unwrap();
    assert_eq!(oplog_before[0].sequence_number, batch[19].sequence_number);

    // Redelivered whole, and again from the failure: nothing changes, not even updated_at.
    for redelivery in [&batch[..], &batch[3..]] {
        let outcome = mapping.run_batch(shard, redelivery).await;
        assert_eq!((outcome.failure, outcome.report.applied), (None, 0));
        assert_eq!(snapshot(aws.status_reader()).await, before);
        assert_eq!(aws.checkpoint_reader().list().await.unwrap(), oplog_before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_status_and_oplog_then_a_restart_resumes_from_oplog() {
    let r = Resources::create("crash", 2).await;
    let aws = r.adapters();
    let http = reqwest::Client::new();
    // First run: every OPLOG write fails, as if the process died right after the STATUS writes.
    let faults = Faults::new(1);
    faults.set_down(true);
    let crashing = aws
        .clone()
        .with_checkpoint_writer(Arc::new(Faulty::new(aws.checkpoint_writer(), &faults)));
    let first = Running::start(crashing, quick_settings()).await;
    let events: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("id-{}", i % 12), "status": format!("s{i}"), "timestamp": format!("2024-05-01T12:00:{:02}Z", i % 60)}))
        .collect();
    let (status, body) = post(
        &http,
        format!("{}/events/batch", first.base),
        json!({"events": events}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let mut last_per_shard: BTreeMap<String, SequenceNumber> = BTreeMap::new();
    for result in body["results"].as_array().unwrap() {
        let seq = SequenceNumber::parse(result["sequence_number"].as_str().unwrap()).unwrap();
        let entry = last_per_shard
            .entry(result["shard_id"].as_str().unwrap().to_owned())
            .or_insert(seq.clone());
        if seq > *entry {
            *entry = seq;
        }
    }
    let expected: Vec<(String, String)> = (48..60)
        .map(|i| (format!("id-{}", i % 12), format!("s{i}")))
        .collect();
    // OPLOG is down in this run, so the checkpoint cannot show progress: poll the rows.
    wait_for_rows(&http, &first.base, &expected, 30).await;
    assert!(
        aws.checkpoint_reader().list().await.unwrap().is_empty(),
        "no OPLOG write got through"
    );
    first.crash();
    let mut before = Vec::new();
    for (id, _) in &expected {
        before.push(aws.status_reader().get(id).await.unwrap().unwrap());
    }

    // Restart on healthy stores: every shard resumes from OPLOG (none: the trim horizon), the
    // replay changes nothing, and OPLOG ends at each shard's last record.
    let second = Running::start(aws.clone(), quick_settings()).await;
    wait_for("OPLOG to reach every shard's last record", 30, || async {
        let rows = aws.checkpoint_reader().list().await.unwrap();
        let at: BTreeMap<String, SequenceNumber> = rows
            .into_iter()
            .map(|c| (c.shard_id, c.sequence_number))
            .collect();
        (at == last_per_shard).then_some(())
    })
    .await;
    for (row, (id, _)) in before.iter().zip(&expected) {
        assert_eq!(
            &aws.status_reader().get(id).await.unwrap().unwrap(),
            row,
            "replay changed {id}"
        );
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_outage_then_recovery_loses_nothing() {
    let r = Resources::create("outage", 2).await;
    let aws = r.adapters();
    let outage = Outage::in_front_of(&r.endpoint).await;
    let through_proxy = load_sdk_config(Some(&outage.url)).await;
    // DynamoDB through the proxy, Kinesis direct.
    let pipeline = Adapters::aws(&through_proxy, &r.names)
        .with_stream_writer(aws.stream_writer())
        .with_shard_reader(aws.shard_reader());
    let running = Running::start(pipeline, quick_settings()).await;
    let http = reqwest::Client::new();
    let batch = |round: usize| {
        let events: Vec<Value> = (0..20)
            .map(|id| json!({"id": format!("id-{id}"), "status": format!("round-{round}"), "timestamp": format!("2024-05-01T12:00:{round:02}Z")}))
            .collect();
        json!({"events": events})
    };
    post_accepted(&http, format!("{}/events/batch", running.base), batch(1)).await;
    let round1: Vec<(String, String)> = (0..20)
        .map(|id| (format!("id-{id}"), "round-1".to_owned()))
        .collect();
    wait_for_statuses(
        &http,
        &running.base,
        aws.shard_reader().as_ref(),
        &round1,
        30,
    )
    .await;

    outage.take_down();
    // Ingest still accepts (Kinesis is up); reads fail with a retryable 503; the processor fails
    // and retries.
    post_accepted(&http, format!("{}/events/batch", running.base), batch(2)).await;
    let response = http
        .get(format!("{}/messages/id-0", running.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    wait_for("the processor to hit the outage", 30, || async {
        (outage.refused.load(std::sync::atomic::Ordering::SeqCst) > 3).then_some(())
    })
    .await;
    assert_eq!(
        aws.status_reader()
            .get("id-0")
            .await
            .unwrap()
            .unwrap()
            .status,
        "round-1",
        "nothing applied during the outage"
    );

    outage.restore();
    let round2: Vec<(String, String)> = (0..20)
        .map(|id| (format!("id-{id}"), "round-2".to_owned()))
        .collect();
    wait_for_statuses(
        &http,
        &running.base,
        aws.shard_reader().as_ref(),
        &round2,
        60,
    )
    .await;
    running.stop().await;
}

/// Records which shard each STATUS write came from, in order; writes wait until `open` is true,
/// so records pile up on the parent and on the children before any is applied.
struct ApplyOrder {
    inner: Arc<dyn StatusWriter>,
    shards: Mutex<Vec<String>>,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl StatusWriter for ApplyOrder {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        self.shards.lock().unwrap().push(row.shard_id.clone());
        self.inner.apply(row).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_while_events_flow_keeps_per_id_order() {
    let r = Resources::create("reshard", 1).await;
    let aws = r.adapters();
    let (open, gate) = tokio::sync::watch::channel(false);
    let order = Arc::new(ApplyOrder {
        inner: aws.status_writer(),
        shards: Mutex::new(Vec::new()),
        open: gate,
    });
    let pipeline = aws.clone().with_status_writer(order.clone());
    let running = Running::start(pipeline, quick_settings()).await;
    let http = reqwest::Client::new();
    // One timestamp for every event: the sequence number alone orders them, across the split.
    let post_round = |round: usize| {
        let (http, base) = (http.clone(), running.base.clone());
        async move {
            for id in 0..6 {
                let body = json!({"id": format!("id-{id}"), "status": format!("round-{round}"), "timestamp": "2024-05-01T12:00:00Z"});
                post_accepted(&http, format!("{base}/events"), body).await;
            }
        }
    };
    for round in 0..5 {
        post_round(round).await;
    }
    let kinesis = r.kinesis();
    let shards = kinesis
        .list_shards()
        .stream_name(&r.names.stream)
        .send()
        .await
        .unwrap();
    let parent = &shards.shards()[0];
    let range = parent.hash_key_range().unwrap();
    let (low, high): (u128, u128) = (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    );
    kinesis
        .split_shard()
        .stream_name(&r.names.stream)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key((low + (high - low) / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_for("the stream to be ACTIVE after the split", 30, || async {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(&r.names.stream)
            .send()
            .await
            .ok()?;
        (*summary.stream_description_summary()?.stream_status()
            == aws_sdk_kinesis::types::StreamStatus::Active)
            .then_some(())
    })
    .await;
    for round in 5..10 {
        post_round(round).await;
    }
    // Only now is anything applied: the parent still holds its records while the children hold
    // theirs, so the order below is the mapping's doing, not the parent's being drained early.
    open.send(true).unwrap();
    let expected: Vec<(String, String)> = (0..6)
        .map(|id| (format!("id-{id}"), "round-9".to_owned()))
        .collect();
    wait_for_statuses(
        &http,
        &running.base,
        aws.shard_reader().as_ref(),
        &expected,
        60,
    )
    .await;
    let writes = order.shards.lock().unwrap().clone();
    let parent_id = parent.shard_id().to_owned();
    assert!(writes.contains(&parent_id), "the parent was read");
    let first_child = writes
        .iter()
        .position(|s| *s != parent_id)
        .expect("children were read");
    assert!(
        writes[first_child..].iter().all(|s| *s != parent_id),
        "parent and child writes interleaved: {writes:?}"
    );
    running.stop().await;
}

/// Puts `garbage` straight on a one-shard stream (as a foreign producer would), then runs
/// `serve` until an event posted after it is applied: the shard moved on. Returns the garbage's
/// sequence number and DEADLETTER's contents.
async fn foreign_record_then_one_event(
    test: &str,
    garbage: &[u8],
) -> (String, Vec<tidemark::ports::DeadLetter>) {
    let r = Resources::create(test, 1).await;
    let aws = r.adapters();
    let put = r
        .kinesis()
        .put_record()
        .stream_name(&r.names.stream)
        .partition_key("whatever")
        .data(aws_sdk_kinesis::primitives::Blob::new(garbage.to_vec()))
        .send()
        .await
        .unwrap();
    let running = Running::start(aws.clone(), quick_settings()).await;
    let http = reqwest::Client::new();
    post_accepted(
        &http,
        format!("{}/events", running.base),
        json!({"id": "after", "status": "applied"}),
    )
    .await;
    wait_for_statuses(
        &http,
        &running.base,
        aws.shard_reader().as_ref(),
        &[("after".into(), "applied".into())],
        60,
    )
    .await;
    // The dead letter is written in the same batch as the event, concurrently: STATUS can show
    // the event before a large DEADLETTER put has finished, so wait for it too.
    let letters = wait_for("the dead letter", 60, || {
        let reader = aws.dead_letter_reader();
        async move {
            let letters = reader.list().await.ok()?;
            (!letters.is_empty()).then_some(letters)
        }
    })
    .await;
    running.stop().await;
    (put.sequence_number().to_owned(), letters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_and_the_shard_moves_on() {
    let garbage = b"\x00\x01 not an event".to_vec();
    let (sequence_number, letters) = foreign_record_then_one_event("poison", &garbage).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].sequence_number.as_str(), sequence_number);
    assert_eq!(letters[0].raw.to_vec(), garbage);
    assert_eq!(letters[0].raw_size, garbage.len());
    assert!(
        letters[0].reason.starts_with("undecodable"),
        "{}",
        letters[0].reason
    );
}

/// A foreign record of 1 MiB (the most Kinesis takes) is poison too big for a DynamoDB item
/// (400 KB): it is set aside cut to fit, with its size and SHA-256, and the shard moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_poison_record_is_set_aside_cut_to_fit() {
    let garbage = vec![b'#'; 1024 * 1024 - 8];
    let (sequence_number, letters) = foreign_record_then_one_event("bigpoison", &garbage).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.sequence_number.as_str(), sequence_number);
    assert_eq!(letter.raw_size, garbage.len());
    assert_eq!(letter.raw.len(), MAX_DEAD_LETTER_RAW_BYTES);
    assert_eq!(letter.raw.to_vec(), garbage[..MAX_DEAD_LETTER_RAW_BYTES]);
    assert_eq!(letter.raw_sha256.as_ref().map(String::len), Some(64));
}

/// DynamoDB's refusal of one item for its size is told apart from errors that would refuse
/// every item: the first makes its record poison (the processor sets it aside), the second keeps
/// the batch retrying until an operator fixes the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_dynamodb_refuses_for_its_size_is_told_apart_from_configuration_errors() {
    let resources = Resources::create("item-size", 1).await;
    let status = resources.adapters().status_writer();
    let row = |id: &str, data_bytes: usize| StatusRow {
        id: id.into(),
        status: "s".into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        data: Some(format!(r#"{{"x":"{}"}}"#, "y".repeat(data_bytes))),
        received_at: "2024-05-01T12:00:00Z".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: SequenceNumber::parse("1").unwrap(),
        version: tidemark::domain::VersionKey("1".into()),
        updated_at: "2024-05-01T12:00:00Z".into(),
    };
    let refused = status.apply(row("huge", 410 * 1024)).await;
    assert!(
        matches!(refused, Err(StoreError::ItemRejected(_))),
        "{refused:?}"
    );
    assert_eq!(
        status.apply(row("fits", 1024)).await,
        Ok(ApplyOutcome::Applied)
    );
    let mut names = resources.names.clone();
    names.status_table = format!("{}-missing", names.status_table);
    let missing = Adapters::aws(&resources.sdk, &names)
        .status_writer()
        .apply(row("any", 10))
        .await;
    assert!(
        matches!(missing, Err(StoreError::Rejected(_))),
        "{missing:?}"
    );
}

/// OPLOG on DynamoDB records a shard falling behind, even before its first checkpoint, keeps the
/// first "since", and a checkpoint that moves clears it (the row held only `behind_*` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_records_a_shard_falling_behind_and_progress_clears_it() {
    let resources = Resources::create("behind", 1).await;
    let adapters = resources.adapters();
    let (writer, reader) = (adapters.checkpoint_writer(), adapters.checkpoint_reader());
    let behind = |since: &str, at: &str| Behind {
        shard_id: "shardId-000000000000".into(),
        sequence_number: SequenceNumber::parse("20").unwrap(),
        since: since.into(),
        at: at.into(),
    };
    writer.note_behind(&behind("t1", "t1")).await.unwrap();
    writer.note_behind(&behind("t2", "t2")).await.unwrap();
    let rows = reader.progress().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].checkpoint, None);
    assert_eq!(rows[0].behind, Some(behind("t1", "t2")));
    assert_eq!(reader.get("shardId-000000000000").await.unwrap(), None);
    assert!(reader.list().await.unwrap().is_empty());

    let mirrored = |seq: &str, mirror: Option<&str>| Checkpoint {
        shard_id: "shardId-000000000000".into(),
        sequence_number: SequenceNumber::parse(seq).unwrap(),
        updated_at: "t3".into(),
        records_applied: 4,
        lag_ms: 7,
        mirrored_into: mirror.map(str::to_owned),
    };
    let checkpoint = |seq: &str| mirrored(seq, None);
    assert_eq!(
        writer.advance(&checkpoint("10")).await.unwrap(),
        AdvanceOutcome::Advanced
    );
    let rows = reader.progress().await.unwrap();
    assert_eq!(rows[0].checkpoint, Some(checkpoint("10")));
    assert_eq!(rows[0].behind, None, "progress clears behind");
    assert_eq!(
        writer.advance(&checkpoint("5")).await.unwrap(),
        AdvanceOutcome::AlreadyPast
    );
    writer.note_behind(&behind("t4", "t4")).await.unwrap();
    let rows = reader.progress().await.unwrap();
    assert_eq!(
        rows[0].behind,
        Some(behind("t4", "t4")),
        "a new since after progress"
    );
    assert_eq!(reader.list().await.unwrap(), vec![checkpoint("10")]);

    // A checkpoint says where its batches were mirrored, and the next one without says so too.
    let into_rebuilt = mirrored("12", Some("tidemark-status-rebuilt"));
    writer.advance(&into_rebuilt).await.unwrap();
    let stored = reader.get("shardId-000000000000").await.unwrap().unwrap();
    assert_eq!(stored.mirrored_into, into_rebuilt.mirrored_into);
    writer.advance(&checkpoint("14")).await.unwrap();
    let stored = reader.get("shardId-000000000000").await.unwrap().unwrap();
    assert_eq!(stored.mirrored_into, None);
}

/// Rebuilding STATUS from Kinesis into a new DynamoDB table, through the same processor: equal
/// to the live table, poison set aside, and a second run from the saved progress reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_stream_equals_the_live_table() {
    let resources = Resources::create("rebuild", 2).await;
    let adapters = resources.adapters();
    let writer = adapters.stream_writer();
    for i in 0..60u32 {
        let raw = format!(
            r#"{{"id":"id-{}","status":"s{i}","timestamp":"2024-05-01T12:00:{:02}Z"}}"#,
            i % 13,
            (i * 7) % 60
        );
        let raw: &serde_json::value::RawValue = serde_json::from_str(&raw).unwrap();
        let event = parse_event(raw, None, SystemClock.now(), &Limits::default()).unwrap();
        writer
            .put(&OutgoingRecord {
                partition_key: event.id.clone(),
                data: Bytes::from(event.encode().unwrap()),
            })
            .await
            .unwrap();
    }
    writer
        .put(&OutgoingRecord {
            partition_key: "poison".into(),
            data: Bytes::from_static(b"not an event"),
        })
        .await
        .unwrap();
    // The live table, the mapping's way.
    let live = CheckpointedConsumer::new(
        Arc::new(adapters.processor(ProcessorSettings::default(), Arc::new(SystemClock))),
        adapters.checkpoint_writer(),
    );
    for (shard, records) in all_records(adapters.shard_reader().as_ref()).await {
        for batch in records.chunks(9) {
            assert_eq!(live.run_batch(&shard, batch).await.failure, None);
        }
    }

    let into = format!("{}-rebuilt", resources.names.status_table);
    let dynamodb = resources.dynamodb();
    tidemark::adapters::bootstrap::ensure_table(&dynamodb, &into, "id", None)
        .await
        .unwrap();
    let rebuilt = Arc::new(tidemark::adapters::dynamodb::DynamoStatusStore::new(
        dynamodb.clone(),
        &into,
    ));
    let set_aside = Arc::new(tidemark::adapters::memory::MemoryDeadLetterStore::default());
    let processor = tidemark::consumers::processor::Processor::new(
        rebuilt.clone(),
        set_aside.clone(),
        ProcessorSettings::default(),
        Arc::new(SystemClock),
    );
    let mut progress = tidemark::run::rebuild::RebuildProgress::default();
    let reader = adapters.shard_reader();
    let report = tidemark::run::rebuild::rebuild(
        reader.as_ref(),
        &processor,
        tidemark::run::rebuild::TimeWindow::default(),
        &mut progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((report.shards, report.records), (2, 61));
    assert_eq!(set_aside.sequence_numbers().len(), 1);
    let difference =
        tidemark::run::verify::verify(adapters.status_scanner().as_ref(), rebuilt.as_ref(), 10)
            .await
            .unwrap();
    assert_eq!(
        (difference.expected_rows, difference.difference_count),
        (13, 0),
        "{difference:?}"
    );
    let again = tidemark::run::rebuild::rebuild(
        reader.as_ref(),
        &processor,
        tidemark::run::rebuild::TimeWindow::default(),
        &mut progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(again.records, 0);
    let _ = dynamodb.delete_table().table_name(&into).send().await;
}

/// `tidemark verify`'s comparison on DynamoDB: two STATUS tables of more than one Scan page
/// (1 MB) each, equal but for three ids, which it lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_lists_every_id_two_status_tables_disagree_on() {
    let live = Resources::create("verify-live", 1).await;
    let rebuilt = Resources::create("verify-rebuilt", 1).await;
    let (live_rows, rebuilt_rows) = (
        live.adapters().status_writer(),
        rebuilt.adapters().status_writer(),
    );
    let row = |id: &str, status: &str, sequence: &str, updated_at: &str| StatusRow {
        id: id.into(),
        status: status.into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        // 20 KB each: 60 rows are more than one 1 MB Scan page.
        data: Some(format!(r#"{{"pad":"{}"}}"#, "p".repeat(20_000))),
        received_at: "2024-05-01T12:00:00Z".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: SequenceNumber::parse(sequence).unwrap(),
        version: tidemark::domain::VersionKey(format!("v{sequence}")),
        updated_at: updated_at.into(),
    };
    for i in 0..60 {
        let id = format!("same-{i:03}");
        live_rows.apply(row(&id, "s", "1", "t1")).await.unwrap();
        rebuilt_rows.apply(row(&id, "s", "1", "t2")).await.unwrap();
    }
    live_rows
        .apply(row("newer", "shipped", "9", "t1"))
        .await
        .unwrap();
    rebuilt_rows
        .apply(row("newer", "packed", "5", "t2"))
        .await
        .unwrap();
    live_rows
        .apply(row("only-live", "s", "1", "t1"))
        .await
        .unwrap();
    rebuilt_rows
        .apply(row("only-rebuilt", "s", "1", "t2"))
        .await
        .unwrap();

    let (a, b) = (live.adapters(), rebuilt.adapters());
    let report =
        tidemark::run::verify::verify(a.status_scanner().as_ref(), b.status_scanner().as_ref(), 10)
            .await
            .unwrap();
    assert_eq!((report.expected_rows, report.actual_rows), (62, 62));
    let ids: Vec<&str> = report.differences.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["newer", "only-live", "only-rebuilt"]);
    let same =
        tidemark::run::verify::verify(a.status_scanner().as_ref(), a.status_scanner().as_ref(), 10)
            .await
            .unwrap();
    assert_eq!((same.expected_rows, same.difference_count), (62, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_entries_are_retried_alone_and_202_means_on_the_stream() {
    let r = Resources::create("throttle", 2).await;
    let aws = r.adapters();
    let faults = Faults::new(42);
    let pipeline = aws
        .clone()
        .with_stream_writer(Arc::new(Faulty::new(aws.stream_writer(), &faults)));
    let mut settings = quick_settings();
    settings.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    let running = Running::start(pipeline, settings).await;
    let http = reqwest::Client::new();

    faults.set_failure_rate(0.4);
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("id-{i}"), "status": "s"}))
        .collect();
    let (status, body) = post(
        &http,
        format!("{}/events/batch", running.base),
        json!({"events": events}),
    )
    .await;
    assert_eq!(status, 207, "{body}");
    let results = body["results"].as_array().unwrap();
    let accepted: HashSet<(String, String)> = results
        .iter()
        .filter(|r| r.get("sequence_number").is_some())
        .map(|r| {
            (
                r["shard_id"].as_str().unwrap().to_owned(),
                r["sequence_number"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(results
        .iter()
        .filter(|r| r.get("error").is_some())
        .all(|r| r["error"]["code"] == "throttled"));
    assert!(!accepted.is_empty() && accepted.len() < 200);

    faults.set_down(true);
    let response = http
        .post(format!("{}/events", running.base))
        .json(&json!({"id": "x", "status": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    faults.set_down(false);
    faults.set_failure_rate(0.0);

    // The stream holds exactly the accepted records: none twice, none the client was told failed.
    let on_stream: Vec<(String, String)> = all_records(aws.shard_reader().as_ref())
        .await
        .into_iter()
        .flat_map(|(shard, records)| {
            records
                .into_iter()
                .map(move |r| (shard.clone(), r.sequence_number.as_str().to_owned()))
        })
        .collect();
    assert_eq!(on_stream.len(), accepted.len(), "no record was put twice");
    assert_eq!(on_stream.into_iter().collect::<HashSet<_>>(), accepted);
    running.stop().await;
}

/// The mapping gave up on a range and a later batch moved OPLOG past it (what the on-failure
/// queue reports). `tidemark replay`'s function reads the range back from real Kinesis with an
/// AT_SEQUENCE_NUMBER iterator and applies exactly it: older rows come forward, newer ones
/// stay, OPLOG is untouched, and a second replay changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_given_up_range_restores_what_it_held() {
    let r = Resources::create("replay", 1).await;
    let aws = r.adapters();
    let put = |id: &str, status: &str, minute: u32| {
        let record = OutgoingRecord {
            partition_key: id.to_owned(),
            data: event_bytes(id, status, &format!("2026-11-22T10:{minute:02}:00Z")),
        };
        let stream = aws.stream_writer();
        async move { stream.put(&record).await.unwrap() }
    };
    put("a", "created", 0).await;
    let first = put("b", "created", 1).await;
    put("a", "shipped", 5).await;
    let last = put("c", "created", 2).await;
    put("a", "delivered", 9).await;
    let shard = first.shard_id.clone();
    let records = all_records(aws.shard_reader().as_ref())
        .await
        .remove(&shard)
        .unwrap();
    assert_eq!(records.len(), 5);

    let processor = Arc::new(aws.processor(ProcessorSettings::default(), Arc::new(SystemClock)));
    let mapping = CheckpointedConsumer::new(processor.clone(), aws.checkpoint_writer());
    // Records 1..=3 are the given-up range; the batches before and after it were applied.
    assert!(mapping
        .run_batch(&shard, &records[..1])
        .await
        .failure
        .is_none());
    assert!(mapping
        .run_batch(&shard, &records[4..])
        .await
        .failure
        .is_none());
    let oplog = aws.checkpoint_reader().get(&shard).await.unwrap().unwrap();
    assert_eq!(oplog.sequence_number, records[4].sequence_number);
    assert!(aws.status_reader().get("b").await.unwrap().is_none());

    let (from, to) = (first.sequence_number, last.sequence_number);
    let shards = aws.shard_reader();
    let report = replay_range(shards.as_ref(), processor.as_ref(), &shard, &from, &to)
        .await
        .unwrap();
    assert_eq!(report.records, 3, "exactly the range, both ends included");
    assert_eq!(
        aws.status_reader().get("a").await.unwrap().unwrap().status,
        "delivered"
    );
    assert_eq!(
        aws.status_reader().get("b").await.unwrap().unwrap().status,
        "created"
    );
    assert_eq!(
        aws.status_reader().get("c").await.unwrap().unwrap().status,
        "created"
    );
    assert_eq!(
        aws.checkpoint_reader().get(&shard).await.unwrap().unwrap(),
        oplog,
        "OPLOG untouched"
    );

    let again = replay_range(shards.as_ref(), processor.as_ref(), &shard, &from, &to)
        .await
        .unwrap();
    assert_eq!(
        (again.records, again.applied),
        (3, 0),
        "a second replay changes nothing"
    );
}
