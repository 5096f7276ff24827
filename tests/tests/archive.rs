//! The archive end to end against LocalStack's S3, Kinesis and DynamoDB: events posted through
//! the HTTP API reach the S3 archive, HISTORY and the archiver's OPLOG rows; a rebuild from the
//! archive alone equals the live STATUS; an archiver killed mid-run loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::adapters::memory::MemoryDeadLetterStore;
use tidemark::consumers::processor::Processor;
use tidemark::domain::archive::decode_object;
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::SystemClock;
use tidemark::ports::*;
use tidemark::run::rebuild::{rebuild_from_archive, ArchiveKeys, ArchiveRebuild, RebuildProgress};
use tidemark::run::registry::{ConsumerSettings, Registration};
use tidemark_tests::{json_answer, quick_settings, wait_for, Resources, Running};

/// Every record in the archive, by (shard, sequence number), with its bytes.
async fn archived(archive: &dyn ArchiveReader) -> BTreeMap<(String, String), Bytes> {
    let mut all = BTreeMap::new();
    let mut keys = ArchiveKeys::after(archive, None);
    while let Some(key) = keys.next().await.unwrap() {
        for record in decode_object(&archive.get(&key).await.unwrap()).unwrap() {
            all.insert(
                (
                    record.shard_id.clone(),
                    record.sequence_number.as_str().to_owned(),
                ),
                record.data,
            );
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_reach_the_archive_and_history_and_rebuild_equals_status() {
    let resources = Resources::create("archive-e2e", 2).await;
    let adapters = resources.adapters();
    let running = Running::start(adapters.clone(), quick_settings()).await;
    let http = reqwest::Client::new();
    // 8 ids, 5 events each, posted out of order in time.
    let mut expected: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    let mut events = Vec::new();
    for n in 0..40u32 {
        let id = format!("order-{}", n % 8);
        let status = format!("s{n}");
        let second = (n * 7) % 50;
        events.push(json!({"id": id, "status": status, "timestamp": format!("2024-05-01T12:00:{second:02}Z"), "data": {"n": n}}));
        expected.entry(id).or_default().push((second, status));
    }
    // Each id's statuses, newest event time first (an id's five seconds are distinct).
    let expected: BTreeMap<String, Vec<String>> = expected
        .into_iter()
        .map(|(id, mut timed)| {
            timed.sort_unstable_by_key(|(second, _)| std::cmp::Reverse(*second));
            (id, timed.into_iter().map(|(_, status)| status).collect())
        })
        .collect();
    let answer: Value = http
        .post(format!("{}/events/batch", running.base))
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 40, "{answer}");

    // Every id's history holds all its events, newest first, one of them current.
    for (id, statuses) in &expected {
        let body: Value = wait_for(&format!("the history of {id}"), 60, || async {
            let response = http
                .get(format!("{}/messages/{id}/history?limit=50", running.base))
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            (body["events"].as_array()?.len() == statuses.len()).then_some(body)
        })
        .await;
        let events = body["events"].as_array().unwrap();
        let times: Vec<&str> = events
            .iter()
            .map(|e| e["timestamp"].as_str().unwrap())
            .collect();
        let mut sorted = times.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "newest first");
        // Every accepted event of the id, by status, newest event time first.
        let listed: Vec<&str> = events
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(listed, *statuses, "the history of {id}");
        // STATUS may lag HISTORY by a batch: wait for the row, then exactly one entry is it.
        let row: Value = wait_for(&format!("STATUS of {id}"), 60, || async {
            let response = http
                .get(format!("{}/messages/{id}", running.base))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())?;
            let row: Value = response.json().await.ok()?;
            (row["status"] == events[0]["status"]).then_some(row)
        })
        .await;
        assert_eq!(row["data"], events[0]["data"]);
        let again: Value =
            json_answer(http.get(format!("{}/messages/{id}/history?limit=50", running.base))).await;
        let current: Vec<&Value> = again["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["current"] == true)
            .collect();
        assert_eq!(current.len(), 1, "exactly one entry is STATUS's: {again}");
        assert_eq!(current[0]["status"], row["status"]);
    }

    // GET /shards shows both consumers' checkpoints; the archiver's rows are its own in OPLOG.
    let shards: Value = wait_for("both consumers at the same checkpoint", 60, || async {
        let shards: Value = http
            .get(format!("{}/shards", running.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        shards["shards"]
            .as_array()?
            .iter()
            .all(|s| {
                s["sequence_number"].is_string()
                    && s["archiver"]["sequence_number"] == s["sequence_number"]
            })
            .then_some(shards)
    })
    .await;
    let first_shard = shards["shards"][0]["shard_id"].as_str().unwrap().to_owned();
    let row = resources
        .dynamodb()
        .get_item()
        .table_name(&resources.names.oplog_table)
        .key(
            "shard_id",
            aws_sdk_dynamodb::types::AttributeValue::S(
                ConsumerName::ARCHIVER.oplog_key(&first_shard),
            ),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(
        row.item()
            .is_some_and(|i| i.contains_key("sequence_number")),
        "the archiver's OPLOG row of {first_shard}"
    );
    running.stop().await;

    // The objects in S3 hold every posted event.
    let archive = adapters.archive_reader();
    let records = archived(archive.as_ref()).await;
    assert_eq!(records.len(), 40);
    let keys = archive.list(None).await.unwrap().keys;
    assert!(
        keys.iter()
            .all(|k| k.starts_with("20") && k.ends_with(".jsonl.gz")),
        "{keys:?}"
    );

    // A rebuild from the archive alone into a new table equals the live one.
    let into = format!("{}-rebuilt", resources.names.status_table);
    let dynamodb = resources.dynamodb();
    ensure_table(&dynamodb, &into, "id", None).await.unwrap();
    let rebuilt = Arc::new(DynamoStatusStore::new(dynamodb.clone(), &into));
    let processor = Processor::new(
        rebuilt.clone(),
        Arc::new(MemoryDeadLetterStore::default()),
        Default::default(),
        Arc::new(SystemClock),
    );
    let report = rebuild_from_archive(
        ArchiveRebuild::new(archive.as_ref(), &processor),
        &mut RebuildProgress::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.records, 40);
    let difference =
        tidemark::run::verify::verify(adapters.status_scanner().as_ref(), rebuilt.as_ref(), 10)
            .await
            .unwrap();
    assert_eq!(
        (difference.expected_rows, difference.difference_count),
        (8, 0),
        "{difference:?}"
    );
    let _ = dynamodb.delete_table().table_name(&into).send().await;
}

/// The archiver killed mid-batch (its task aborted, as a crashed Lambda) and started again
/// from its OPLOG: every record is in the archive, bytes as put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_killed_mid_run_loses_nothing() {
    let resources = Resources::create("archive-kill", 2).await;
    let adapters = resources.adapters();
    let mut put = BTreeMap::new();
    for chunk in 0..4 {
        let records: Vec<OutgoingRecord> = (0..50)
            .map(|n| OutgoingRecord {
                partition_key: format!("id-{n}"),
                data: Bytes::from(format!("record {chunk}-{n}: not even an event")),
            })
            .collect();
        let results = adapters.stream_writer().put_many(&records).await.unwrap();
        for (record, result) in records.iter().zip(results) {
            let PutEntryResult::Accepted(ack) = result else {
                panic!("LocalStack refused an entry: {result:?}");
            };
            put.insert(
                (ack.shard_id, ack.sequence_number.as_str().to_owned()),
                record.data.clone(),
            );
        }
    }
    let mut settings = quick_settings().esm;
    settings.batch_size = 7;
    let start = || {
        let consumer_settings = ConsumerSettings {
            processor: Default::default(),
            clock: Arc::new(SystemClock),
        };
        let mapping =
            Arc::new(Registration::archiver().mapping(&adapters, &consumer_settings, settings));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        (stop, tokio::spawn(mapping.run(shutdown)))
    };
    let checkpoints = adapters.checkpoints_of(ConsumerName::ARCHIVER).reader;
    let (_stop, first) = start();
    wait_for("the archiver's first checkpoint", 60, || async {
        (!checkpoints.list().await.ok()?.is_empty()).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;
    let before = archived(adapters.archive_reader().as_ref()).await.len();
    assert!(
        before < put.len(),
        "killed before it finished ({before} archived)"
    );

    let (stop, second) = start();
    let last: BTreeMap<String, String> =
        put.keys().fold(BTreeMap::new(), |mut last, (shard, seq)| {
            let newer = last.get(shard).is_none_or(|l: &String| {
                tidemark::domain::SequenceNumber::parse(seq).unwrap()
                    > tidemark::domain::SequenceNumber::parse(l).unwrap()
            });
            if newer {
                last.insert(shard.clone(), seq.clone());
            }
            last
        });
    wait_for("the archiver at every shard's last record", 60, || async {
        let reached = checkpoints.list().await.ok()?;
        last.iter()
            .all(|(shard, seq)| {
                reached
                    .iter()
                    .any(|c| &c.shard_id == shard && c.sequence_number.as_str() == seq)
            })
            .then_some(())
    })
    .await;
    stop.send(true).unwrap();
    second.await.unwrap();
    let all = archived(adapters.archive_reader().as_ref()).await;
    assert_eq!(all, put, "every record archived, bytes as put");
}

/// An archive in a directory: a graceful stop archives every event `serve` accepted, and a
/// restart over a directory holding only the archive (as `serve --data-dir` kept before its
/// tables were on disk) has STATUS and HISTORY back before it serves; new records never take
/// the archived ones' keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarted_over_its_data_dir_keeps_the_archive_history_and_status() {
    use tidemark::adapters::memory::{MemoryArchive, MemoryBackend};
    use tidemark::adapters::Adapters;
    let dir = std::env::temp_dir().join(format!(
        "tidemark-data-dir-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let http = reqwest::Client::new();
    let open = || {
        Adapters::in_memory(
            MemoryBackend::new(2).with_archive(MemoryArchive::in_directory(&dir).unwrap()),
        )
    };
    let post = |base: String, id: &'static str, status: &'static str| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{base}/events"))
                .json(&json!({"id": id, "status": status}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
    };
    let history = |base: String, id: &'static str, count: usize| {
        let http = http.clone();
        async move {
            wait_for(
                &format!("{count} events in the history of {id}"),
                30,
                || async {
                    let body: Value = http
                        .get(format!("{base}/messages/{id}/history"))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    (body["events"].as_array()?.len() == count).then_some(body)
                },
            )
            .await
        }
    };

    let first = open();
    let running = Running::start(first, quick_settings()).await;
    post(running.base.clone(), "a", "created").await;
    post(running.base.clone(), "a", "shipped").await;
    post(running.base.clone(), "b", "created").await;
    // Stopped at once, gracefully: what was answered 202 is archived before the process ends.
    running.stop().await;
    let files_before = MemoryArchive::in_directory(&dir).unwrap().sizes();
    assert!(!files_before.is_empty());

    // Restarted over the same directory, in a new process's state.
    let second = open();
    let report = tidemark_cli::serve::restore_from_archive(&second, Default::default(), None)
        .await
        .unwrap();
    assert_eq!(report.records, 3);
    let running = Running::start(second, quick_settings()).await;
    let row: Value = json_answer(http.get(format!("{}/messages/a", running.base))).await;
    assert_eq!(row["status"], "shipped", "STATUS is back: {row}");
    let body = history(running.base.clone(), "a", 2).await;
    assert_eq!(body["events"][0]["current"], true);
    post(running.base.clone(), "a", "delivered").await;
    let body = history(running.base.clone(), "a", 3).await;
    assert_eq!(body["events"][0]["status"], "delivered");
    running.stop().await;
    let files_after = MemoryArchive::in_directory(&dir).unwrap().sizes();
    for file in &files_before {
        assert!(
            files_after.contains(file),
            "{file:?} was overwritten or lost"
        );
    }
    assert!(files_after.len() > files_before.len());
    let _ = std::fs::remove_dir_all(&dir);
}
