//! Property tests of the archiver, the stream's second consumer: driven like Lambda's event
//! source mapping over an in-memory stream, with random batch sizes, whole-batch redelivery,
//! failing archive, HISTORY and OPLOG writes (before the write, and after it took effect: a
//! timeout), and crashes between the archive write and the checkpoint.
//! Checked against a simple model of what was put:
//! - the archive holds every record of the stream at least once, bytes as they were;
//! - every id's history is exactly the model's list (every accepted event, none twice, none
//!   missing), newest first, through the paginated history route;
//! - a rebuild from the archive alone equals the live STATUS the processor built.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::memory::{MemoryBackend, MemoryStatusStore};
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, QueryApi};
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::archive::decode_object;
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{Event, EventTime, FixedClock, Limits, SequenceNumber};
use tidemark::ports::*;
use tidemark::run::rebuild::{
    rebuild_from_archive, ArchiveKeys, ArchiveRebuild, RebuildProgress, TimeWindow,
};
use tidemark::run::verify::verify;

fn base() -> EventTime {
    EventTime::parse_rfc3339("2024-01-01T00:00:00Z").unwrap()
}

#[derive(Clone, Debug)]
enum Produced {
    /// An event of `id` at `millis` past the base; `copies` > 1 is a producer retrying.
    Event {
        id: u8,
        millis: u16,
        copies: u8,
    },
    Poison,
}

fn produced() -> impl Strategy<Value = Produced> {
    prop_oneof![
        10 => (0u8..12, 0u16..50, 1u8..=2).prop_map(|(id, millis, copies)| Produced::Event { id, millis, copies }),
        1 => Just(Produced::Poison),
    ]
}

#[derive(Clone, Debug)]
struct Chaos {
    shards: usize,
    max_batch: usize,
    archive_failure_rate: f64,
    history_failure_rate: f64,
    checkpoint_failure_rate: f64,
    /// Per mille chance, after a batch, of a crash: the loop restarts from the archiver's OPLOG.
    crash_per_mille: u32,
    seed: u64,
}

fn chaos() -> impl Strategy<Value = Chaos> {
    (
        1usize..=3,
        1usize..=12,
        0.0f64..0.4,
        0.0f64..0.4,
        0.0f64..0.4,
        0u32..300,
        any::<u64>(),
    )
        .prop_map(
            |(shards, max_batch, a, h, c, crash_per_mille, seed)| Chaos {
                shards,
                max_batch,
                archive_failure_rate: a,
                history_failure_rate: h,
                checkpoint_failure_rate: c,
                crash_per_mille,
                seed,
            },
        )
}

/// Puts the records; answers the model: each id's events as (sequence number, status), and
/// every record's (shard, sequence number) with its bytes.
async fn produce(
    memory: &MemoryBackend,
    records: &[Produced],
) -> (
    BTreeMap<String, Vec<(SequenceNumber, String)>>,
    BTreeMap<(String, String), Bytes>,
) {
    let mut history: BTreeMap<String, Vec<(SequenceNumber, String)>> = BTreeMap::new();
    let mut all = BTreeMap::new();
    for (n, record) in records.iter().enumerate() {
        match record {
            Produced::Event { id, millis, copies } => {
                let time = base().saturating_add(Duration::from_millis(u64::from(*millis)));
                let event = Event {
                    id: format!("id-{id}"),
                    status: format!("s{n}"),
                    timestamp: time.to_rfc3339(),
                    event_time: time,
                    data: None,
                    received_at: time,
                };
                let data = Bytes::from(event.encode().unwrap());
                for _ in 0..*copies {
                    let ack = memory
                        .stream
                        .put(&OutgoingRecord {
                            partition_key: event.id.clone(),
                            data: data.clone(),
                        })
                        .await
                        .unwrap();
                    history
                        .entry(event.id.clone())
                        .or_default()
                        .push((ack.sequence_number.clone(), event.status.clone()));
                    all.insert(
                        (ack.shard_id, ack.sequence_number.as_str().to_owned()),
                        data.clone(),
                    );
                }
            }
            Produced::Poison => {
                let data = Bytes::from_static(b"not an event");
                let ack = memory.stream.put_raw("poison", data.clone()).unwrap();
                all.insert(
                    (ack.shard_id, ack.sequence_number.as_str().to_owned()),
                    data,
                );
            }
        }
    }
    (history, all)
}

/// Runs a consumer over every shard the mapping's way until each is consumed to its end.
async fn drain(
    memory: &MemoryBackend,
    consumer: &CheckpointedConsumer,
    checkpoints: &dyn CheckpointReader,
    chaos: &Chaos,
    rng: &mut fastrand::Rng,
) {
    for shard in memory.stream.list_shards().await.unwrap() {
        let shard_id = shard.shard_id;
        let mut position = match checkpoints.get(&shard_id).await.unwrap() {
            Some(c) => StartPosition::AfterSequence(c.sequence_number),
            None => StartPosition::TrimHorizon,
        };
        for _round in 0..10_000 {
            let iterator = memory
                .stream
                .shard_iterator(&shard_id, &position)
                .await
                .unwrap();
            let size = rng.usize(1..=chaos.max_batch);
            let batch = memory
                .stream
                .get_records(&iterator, size)
                .await
                .unwrap()
                .records;
            if batch.is_empty() {
                break;
            }
            let outcome = consumer.run_batch(&shard_id, &batch).await;
            let crashed = rng.u32(0..1000) < chaos.crash_per_mille;
            position = if let Some(failed) = outcome.failure {
                StartPosition::AtSequence(failed)
            } else if crashed {
                // A restarted loop resumes from OPLOG, whatever it last wrote.
                match checkpoints.get(&shard_id).await.unwrap() {
                    Some(c) => StartPosition::AfterSequence(c.sequence_number),
                    None => StartPosition::TrimHorizon,
                }
            } else {
                StartPosition::AfterSequence(batch.last().unwrap().sequence_number.clone())
            };
        }
    }
}

/// The query API over `adapters`, with HISTORY.
fn history_api(adapters: &Adapters) -> Api {
    Api {
        ingest: None,
        query: Some(adapters.query_api()),
    }
}

/// Every page of an id's history through the route, `limit` per page, following `next_cursor`:
/// the events in order, and each answer's size in bytes.
async fn read_history(api: &Api, id: &str, limit: usize) -> (Vec<serde_json::Value>, Vec<usize>) {
    let mut events = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1000 {
        let query = match &cursor {
            Some(c) => format!("limit={limit}&cursor={c}"),
            None => format!("limit={limit}"),
        };
        let response = api
            .handle(ApiRequest {
                method: http::Method::GET,
                path: format!("/messages/{id}/history"),
                query: Some(query),
                content_type: None,
                idempotency_key: None,
                body: Bytes::new(),
            })
            .await;
        assert_eq!(response.status, http::StatusCode::OK);
        sizes.push(response.body.len());
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        events.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (events, sizes),
        }
    }
    panic!("the history of {id} never ended");
}

async fn run_case(records: Vec<Produced>, chaos: Chaos) -> Result<(), TestCaseError> {
    let memory = MemoryBackend::new(chaos.shards);
    let (model_history, all_records) = produce(&memory, &records).await;
    let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));

    let faults = [
        Faults::new(chaos.seed),
        Faults::new(chaos.seed ^ 1),
        Faults::new(chaos.seed ^ 2),
    ];
    let rates = [
        chaos.archive_failure_rate,
        chaos.history_failure_rate,
        chaos.checkpoint_failure_rate,
    ];
    for (f, rate) in faults.iter().zip(rates) {
        f.set_failure_rate(rate);
        // And half as often, a write that took effect and answered an error (a timeout).
        f.set_fail_after_rate(rate / 2.0);
    }
    let adapters = Adapters::in_memory(memory.clone());
    let archiver = Archiver::new(
        Arc::new(Faulty::new(memory.archive.clone(), &faults[0])),
        Some(Arc::new(Faulty::new(memory.history.clone(), &faults[1]))),
        Limits::default(),
        clock.clone(),
    );
    let archiver_checkpoints = adapters.checkpoints_of(ConsumerName::ARCHIVER).reader;
    let archiving = CheckpointedConsumer::new(
        Arc::new(archiver),
        Arc::new(Faulty::new(
            adapters.checkpoints_of(ConsumerName::ARCHIVER).writer,
            &faults[2],
        )),
    );
    let mut rng = fastrand::Rng::with_seed(chaos.seed);
    drain(
        &memory,
        &archiving,
        archiver_checkpoints.as_ref(),
        &chaos,
        &mut rng,
    )
    .await;
    for f in &faults {
        f.set_failure_rate(0.0);
        f.set_fail_after_rate(0.0);
    }
    // After a failing checkpoint the last batch may need one more (clean) pass.
    drain(
        &memory,
        &archiving,
        archiver_checkpoints.as_ref(),
        &chaos,
        &mut rng,
    )
    .await;

    // The live STATUS, the processor's way, with its own (processor) checkpoints.
    let processing = CheckpointedConsumer::new(
        Arc::new(adapters.processor(Default::default(), clock.clone())),
        adapters.checkpoint_writer(),
    );
    drain(
        &memory,
        &processing,
        adapters.checkpoint_reader().as_ref(),
        &chaos,
        &mut rng,
    )
    .await;

    // Each consumer's checkpoints are its own: both reached every shard's last record.
    for (shard, records) in memory_last_records(&all_records) {
        let archived = archiver_checkpoints.get(&shard).await.unwrap();
        let processed = adapters.checkpoint_reader().get(&shard).await.unwrap();
        prop_assert_eq!(
            archived.map(|c| c.sequence_number.as_str().to_owned()),
            Some(records.clone())
        );
        prop_assert_eq!(
            processed.map(|c| c.sequence_number.as_str().to_owned()),
            Some(records)
        );
    }

    // 1. The archive holds every record, bytes as they were.
    let mut archived = BTreeMap::new();
    let mut keys = ArchiveKeys::after(&memory.archive, None);
    while let Some(key) = keys.next().await.unwrap() {
        for record in decode_object(&memory.archive.get(&key).await.unwrap()).unwrap() {
            archived.insert(
                (
                    record.shard_id.clone(),
                    record.sequence_number.as_str().to_owned(),
                ),
                record.data,
            );
        }
    }
    prop_assert_eq!(&archived, &all_records, "the archive is not every record");

    // 2. Each id's history, read page by page through the route, is the model's list.
    let api = history_api(&adapters);
    for (id, events) in &model_history {
        let mut expected: Vec<(String, String)> = events
            .iter()
            .map(|(seq, status)| (seq.as_str().to_owned(), status.clone()))
            .collect();
        // Newest first by version: event time, then sequence number.
        let time_of = |status: &str| records[status[1..].parse::<usize>().unwrap()].clone();
        expected.sort_by_key(|(seq, status)| {
            let Produced::Event { millis, .. } = time_of(status) else {
                unreachable!()
            };
            (millis, SequenceNumber::parse(seq).unwrap())
        });
        expected.reverse();
        let (read, _) = read_history(&api, id, 3).await;
        let seen: Vec<(String, String)> = read
            .iter()
            .map(|e| {
                (
                    e["sequence_number"].as_str().unwrap().to_owned(),
                    e["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let currents = read.iter().filter(|e| e["current"] == true).count();
        prop_assert_eq!(&seen, &expected, "history of {}", id);
        prop_assert_eq!(currents, 1, "exactly one event of {} is STATUS's", id);
        let statuses: BTreeSet<_> = seen.iter().map(|(_, s)| s).collect();
        prop_assert!(statuses.contains(&memory.status.snapshot()[id.as_str()].status));
    }

    // 3. A rebuild from the archive alone equals the live STATUS.
    let rebuilt = Arc::new(MemoryStatusStore::default());
    let rebuild_into = Adapters::memory(1).with_status_writer(rebuilt.clone());
    let report = rebuild_from_archive(
        ArchiveRebuild::new(
            memory.archive.as_ref(),
            &rebuild_into.processor(Default::default(), clock),
        ),
        &mut RebuildProgress::default(),
    )
    .await
    .unwrap();
    prop_assert!(report.corrupt_objects.is_empty());
    let difference = verify(memory.status.as_ref(), rebuilt.as_ref(), 100)
        .await
        .unwrap();
    prop_assert_eq!(difference.difference_count, 0, "{:?}", difference);
    Ok(())
}

/// Each shard's last sequence number.
fn memory_last_records(all: &BTreeMap<(String, String), Bytes>) -> BTreeMap<String, String> {
    let mut last: BTreeMap<String, SequenceNumber> = BTreeMap::new();
    for (shard, seq) in all.keys() {
        let seq = SequenceNumber::parse(seq).unwrap();
        let entry = last.entry(shard.clone()).or_insert_with(|| seq.clone());
        if seq > *entry {
            *entry = seq;
        }
    }
    last.into_iter()
        .map(|(s, q)| (s, q.as_str().to_owned()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn archive_history_and_rebuild_match_the_model(
        records in prop::collection::vec(produced(), 1..60),
        chaos in chaos(),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_case(records, chaos))?;
    }
}

/// A corrupt object is reported with its key and reason, and the rebuild goes on with the rest.
#[tokio::test]
async fn a_corrupt_archive_object_is_reported_and_the_rest_rebuilt() {
    let memory = MemoryBackend::new(1);
    let records = vec![
        Produced::Event {
            id: 1,
            millis: 1,
            copies: 1,
        },
        Produced::Event {
            id: 2,
            millis: 2,
            copies: 1,
        },
    ];
    produce(&memory, &records).await;
    let adapters = Adapters::in_memory(memory.clone());
    let clock = Arc::new(FixedClock(base()));
    let archiver = Archiver::new(
        memory.archive.clone(),
        None,
        Limits::default(),
        clock.clone(),
    );
    let consumer = CheckpointedConsumer::new(
        Arc::new(archiver),
        adapters.checkpoints_of(ConsumerName::ARCHIVER).writer,
    );
    let shard = memory.stream.list_shards().await.unwrap()[0]
        .shard_id
        .clone();
    let it = memory
        .stream
        .shard_iterator(&shard, &StartPosition::TrimHorizon)
        .await
        .unwrap();
    let all = memory.stream.get_records(&it, 10).await.unwrap().records;
    // Two objects, one record each.
    for record in all.chunks(1) {
        assert_eq!(consumer.run_batch(&shard, record).await.failure, None);
    }
    let keys = memory.archive.list(None).await.unwrap().keys;
    assert_eq!(keys.len(), 2);
    memory
        .archive
        .overwrite(&keys[0], Bytes::from_static(b"\x1f\x8b garbage"));

    let rebuilt = Arc::new(MemoryStatusStore::default());
    let report = rebuild_from_archive(
        ArchiveRebuild::new(
            memory.archive.as_ref(),
            &Adapters::memory(1)
                .with_status_writer(rebuilt.clone())
                .processor(Default::default(), clock),
        ),
        &mut RebuildProgress::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.objects, 2);
    assert_eq!(report.corrupt_objects.len(), 1);
    assert_eq!(report.corrupt_objects[0].key, keys[0]);
    assert!(!report.corrupt_objects[0].reason.is_empty());
    assert_eq!(
        rebuilt.snapshot().len(),
        1,
        "the readable object was applied"
    );
}

async fn get(api: &Api, path: &str, query: Option<&str>) -> (http::StatusCode, serde_json::Value) {
    let response = api
        .handle(ApiRequest {
            method: http::Method::GET,
            path: path.to_owned(),
            query: query.map(str::to_owned),
            content_type: None,
            idempotency_key: None,
            body: Bytes::new(),
        })
        .await;
    (
        response.status,
        serde_json::from_slice(&response.body).unwrap(),
    )
}

/// Bad parameters are a 400 naming the parameter; an unknown id a 404; a stack without history
/// a 501 that says so. Never a 5xx otherwise.
#[tokio::test]
async fn the_history_route_refuses_bad_input_clearly() {
    let adapters = Adapters::memory(1);
    let api = history_api(&adapters);
    let cases: &[(&str, &str)] = &[
        ("limit=0", "limit"),
        ("limit=51", "limit"),
        ("limit=ten", "limit"),
        ("limit=1&limit=2", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        // A valid base64 of something that is not a version key.
        ("cursor=aGVsbG8", "cursor"),
        ("page=2", "page"),
    ];
    for (query, field) in cases {
        let (status, body) = get(&api, "/messages/a/history", Some(query)).await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], *field, "{query}: {body}");
    }
    let long_cursor = format!("cursor={}", "A".repeat(10_000));
    let (status, body) = get(&api, "/messages/a/history", Some(&long_cursor)).await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "cursor");

    let (status, body) = get(&api, "/messages/nobody/history", None).await;
    assert_eq!(status, http::StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = get(&api, "/messages/%FF/history", None).await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST);

    // An id ending in "/history" is read with its slash encoded; unencoded, it names the route.
    let (status, body) = get(&api, "/messages/a%2Fhistory", None).await;
    assert_eq!(status, http::StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "no status for id \"a/history\"");

    let without = Api {
        ingest: None,
        query: Some(QueryApi::new(
            adapters.status_reader(),
            adapters.checkpoint_reader(),
            adapters.shard_reader(),
        )),
    };
    let (status, body) = get(&without, "/messages/a/history", None).await;
    assert_eq!(status, http::StatusCode::NOT_IMPLEMENTED);
    assert_eq!(body["error"]["code"], "history_disabled");
}

/// `--from` / `--until`: only records that arrived in the window are applied, including one
/// inside an object filed under an earlier hour (a batch spanning hours).
#[tokio::test]
async fn a_rebuild_window_applies_the_records_that_arrived_in_it() {
    use tidemark::adapters::memory::MemoryArchive;
    let archive = MemoryArchive::default();
    let at = |text: &str| EventTime::parse_rfc3339(text).unwrap();
    let record = |seq: u32, id: &str, arrival: &str| {
        let time = at(arrival);
        let event = Event {
            id: id.into(),
            status: "s".into(),
            timestamp: time.to_rfc3339(),
            event_time: time,
            data: None,
            received_at: time,
        };
        StreamRecord {
            sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
            partition_key: id.into(),
            data: Bytes::from(event.encode().unwrap()),
            approximate_arrival: Some(time),
        }
    };
    let batches = [
        vec![
            record(1, "early", "2024-05-01T09:00:00Z"),
            record(2, "spanning", "2024-05-01T12:00:00Z"),
        ],
        vec![record(3, "before", "2024-05-01T10:00:00Z")],
        vec![record(4, "inside", "2024-05-01T11:30:00Z")],
        vec![record(5, "after", "2024-05-01T13:00:00Z")],
    ];
    for batch in &batches {
        let (key, body) = Archiver::object("shardId-000000000000", batch).unwrap();
        archive.put(&key, body).await.unwrap();
    }
    let rebuilt = Arc::new(MemoryStatusStore::default());
    let report = rebuild_from_archive(
        ArchiveRebuild::new(
            &archive,
            &Adapters::memory(1)
                .with_status_writer(rebuilt.clone())
                .processor(
                    Default::default(),
                    Arc::new(FixedClock(at("2024-05-02T00:00:00Z"))),
                ),
        )
        .window(TimeWindow {
            from: Some(at("2024-05-01T11:00:00Z")),
            until: Some(at("2024-05-01T12:30:00Z")),
        }),
        &mut RebuildProgress::default(),
    )
    .await
    .unwrap();
    let ids: BTreeSet<String> = rebuilt.snapshot().into_keys().collect();
    assert_eq!(
        ids,
        BTreeSet::from(["inside".to_owned(), "spanning".to_owned()])
    );
    assert_eq!(report.records, 2);
}

/// Events with large `data` (a stack with `MaxDataBytes` raised): a page stops before Lambda's
/// response limit and the next one continues from there; every event is read exactly once.
#[tokio::test]
async fn a_history_page_stays_under_the_answer_size_bound() {
    use tidemark::domain::limits::MAX_HISTORY_ANSWER_BYTES;
    use tidemark::domain::Version;
    let adapters = Adapters::memory(1);
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(300 * 1024));
    let entries: Vec<HistoryEntry> = (1..=40u32)
        .map(|n| {
            let time = base().saturating_add(Duration::from_secs(u64::from(n)));
            let sequence = SequenceNumber::parse(&n.to_string()).unwrap();
            HistoryEntry {
                id: "big".into(),
                status: format!("s{n}"),
                timestamp: time.to_rfc3339(),
                data: Some(big.clone()),
                received_at: time.to_rfc3339(),
                shard_id: "shardId-000000000000".into(),
                version: Version::new(time, sequence.clone()).key(),
                sequence_number: sequence,
                updated_at: time.to_rfc3339(),
            }
        })
        .collect();
    adapters.history_writer().put_many(entries).await.unwrap();
    let (events, sizes) = read_history(&history_api(&adapters), "big", 50).await;
    assert!(
        sizes.iter().all(|size| *size <= MAX_HISTORY_ANSWER_BYTES),
        "{sizes:?}"
    );
    assert!(
        sizes.len() >= 3,
        "40 events of 300 KB take at least three 5 MiB pages"
    );
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=40u32).rev().map(|n| format!("s{n}")).collect();
    assert_eq!(statuses, expected);
}
