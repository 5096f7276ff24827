//! Many clients post events over many ids through `tidemark serve`'s HTTP API, in random order
//! with duplicates and mixed routes, while a reader polls STATUS. Then every accepted event is
//! checked: each id holds its newest accepted version, none is missing, and the reader never saw
//! an id go backwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use tidemark::adapters::Adapters;
use tidemark::domain::{EventTime, SequenceNumber};
use tidemark::ports::{DeadLetterReader, StatusScanner};
use tidemark::run::esm::EsmSettings;
use tidemark_cli::serve::{run, ServeSettings};
use tidemark_tests::kafka::{kafka_log, over_kafka};
use tidemark_tests::{env_usize, message, quick_settings, wait_until_applied, Resources};
use tokio::sync::watch;

/// (event time, sequence number, status) of an accepted event: what decides "newest".
type Accepted = (EventTime, SequenceNumber, String);

fn event(id: usize, rng: &mut fastrand::Rng, serial: usize) -> Value {
    // Few distinct instants so ties (decided by sequence number) are common; mixed offsets.
    let second = rng.u32(0..20);
    let timestamp = match rng.u8(0..3) {
        0 => format!("2024-05-01T12:00:{second:02}Z"),
        1 => format!("2024-05-01T14:00:{second:02}+02:00"),
        _ => format!("2024-05-01T07:00:{second:02}.000-05:00"),
    };
    json!({"id": format!("id-{id}"), "status": format!("s-{serial}"), "timestamp": timestamp})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_every_id_ends_at_its_newest_accepted_version() {
    let adapters = Adapters::memory(4);
    let memory = adapters.memory_backend().unwrap().clone();
    let settings = ServeSettings {
        esm: EsmSettings {
            batch_size: 100,
            batching_window: Duration::from_millis(20),
            idle_poll_interval: Duration::from_millis(5),
            ..EsmSettings::default()
        },
        ..ServeSettings::default()
    };
    let events = env_usize("TIDEMARK_E2E_EVENTS", 4_000);
    let ids = env_usize("TIDEMARK_E2E_IDS", 200);
    let ids_in_status = randomized(adapters, settings, events, ids).await;
    assert_eq!(
        memory.status.snapshot().len(),
        ids_in_status,
        "no id missing, none invented"
    );
    assert_eq!(
        memory.dead_letters.put_calls(),
        0,
        "nothing valid was dead-lettered"
    );
}

/// The same check on `serve`'s storage engine: the log and the tables on disk, in a fresh
/// directory, as `tidemark serve` runs by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_every_id_ends_at_its_newest_accepted_version() {
    use tidemark::adapters::disk::{on_disk, DiskLog, DiskTables};
    let dir = std::env::temp_dir().join(format!(
        "tidemark-randomized-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let log = Arc::new(DiskLog::open(&dir, 4).unwrap());
    let (tables, _) = DiskTables::open(&dir, 16 << 20, None).unwrap();
    let adapters = on_disk(Adapters::memory(4), tables.clone())
        .with_stream_writer(log.clone())
        .with_shard_reader(log);
    let events = env_usize("TIDEMARK_E2E_EVENTS", 4_000);
    let ids = env_usize("TIDEMARK_E2E_IDS", 200);
    let ids_in_status = randomized(adapters, quick_settings(), events, ids).await;
    let mut rows = 0;
    let mut start = None;
    loop {
        let page = tables.scan_page(start.as_deref()).await.unwrap();
        rows += page.rows.len();
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    assert_eq!(rows, ids_in_status, "no id missing, none invented");
    assert!(
        DeadLetterReader::list(tables.as_ref())
            .await
            .unwrap()
            .is_empty(),
        "nothing valid was dead-lettered"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same check through the real Kinesis and DynamoDB adapters against LocalStack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_localstack_every_id_ends_at_its_newest_accepted_version() {
    let resources = Resources::create("random", 4).await;
    let aws = resources.adapters();
    let events = env_usize("TIDEMARK_E2E_LOCALSTACK_EVENTS", 2_000);
    let ids = env_usize("TIDEMARK_E2E_LOCALSTACK_IDS", 100);
    randomized(aws.clone(), quick_settings(), events, ids).await;
    assert!(
        aws.dead_letter_reader().list().await.unwrap().is_empty(),
        "nothing valid was dead-lettered"
    );
}

/// The same check with a real Kafka broker's topic as the log (in-memory tables): partitions
/// as shards, offsets as sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_every_id_ends_at_its_newest_accepted_version() {
    let log = kafka_log("random", 4).await;
    let adapters = over_kafka(Adapters::memory(4), log);
    let memory = adapters.memory_backend().unwrap().clone();
    let events = env_usize("TIDEMARK_E2E_KAFKA_EVENTS", 2_000);
    randomized(adapters, quick_settings(), events, 100).await;
    assert!(
        memory.dead_letters.list().await.unwrap().is_empty(),
        "nothing valid was dead-lettered"
    );
}

/// Runs the check; returns how many ids were accepted.
async fn randomized(
    adapters: Adapters,
    settings: ServeSettings,
    total_events: usize,
    ids: usize,
) -> usize {
    let clients = 8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, shutdown) = watch::channel(false);
    let stream = adapters.shard_reader();
    let server = tokio::spawn(run(adapters, listener, settings, shutdown));

    let accepted: Arc<Mutex<HashMap<String, Vec<Accepted>>>> = Arc::default();
    let http = reqwest::Client::new();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));

    // The reader: polls random ids and remembers the newest version it saw for each.
    let reader = {
        let (http, base, writing) = (http.clone(), base.clone(), writing.clone());
        tokio::spawn(async move {
            let mut seen: HashMap<String, (EventTime, SequenceNumber)> = HashMap::new();
            let mut rng = fastrand::Rng::with_seed(99);
            let mut reads = 0;
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                let id = format!("id-{}", rng.usize(0..ids));
                let response = http
                    .get(format!("{base}/messages/{id}"))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 200 {
                    let row: Value = response.json().await.unwrap();
                    let version = (
                        EventTime::parse_rfc3339(row["timestamp"].as_str().unwrap()).unwrap(),
                        SequenceNumber::parse(row["sequence_number"].as_str().unwrap()).unwrap(),
                    );
                    if let Some(previous) = seen.get(&id) {
                        assert!(
                            version >= *previous,
                            "reader saw {id} go backwards: {previous:?} then {version:?}"
                        );
                    }
                    seen.insert(id, version);
                }
                reads += 1;
            }
            reads
        })
    };

    let per_client = total_events / clients;
    let writers = (0..clients).map(|client| {
        let (http, base, accepted) = (http.clone(), base.clone(), accepted.clone());
        async move {
            let mut rng = fastrand::Rng::with_seed(client as u64);
            let mut sent = 0;
            while sent < per_client {
                let batch = rng.bool();
                let size = if batch {
                    rng.usize(1..=50).min(per_client - sent)
                } else {
                    1
                };
                let events: Vec<Value> = (0..size)
                    .map(|k| event(rng.usize(0..ids), &mut rng, client * per_client + sent + k))
                    .collect();
                // A duplicate: the same events sent again, as a client retrying a timeout does.
                let copies = if rng.u8(0..10) == 0 { 2 } else { 1 };
                for _ in 0..copies {
                    let (url, body) = if batch {
                        (format!("{base}/events/batch"), json!({"events": events}))
                    } else {
                        (format!("{base}/events"), events[0].clone())
                    };
                    let response = http.post(url).json(&body).send().await.unwrap();
                    assert!(response.status() == 202, "{}", response.status());
                    let answer: Value = response.json().await.unwrap();
                    let results = if batch {
                        answer["results"].as_array().unwrap().clone()
                    } else {
                        vec![answer]
                    };
                    let mut accepted = accepted.lock().unwrap();
                    for (event, result) in events.iter().zip(results) {
                        let id = event["id"].as_str().unwrap().to_owned();
                        accepted.entry(id).or_default().push((
                            EventTime::parse_rfc3339(event["timestamp"].as_str().unwrap()).unwrap(),
                            SequenceNumber::parse(result["sequence_number"].as_str().unwrap())
                                .unwrap(),
                            event["status"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                sent += size;
            }
        }
    });
    join_all(writers).await;

    // Once the processor has checkpointed every record on the stream, each id is read once and
    // must hold its newest accepted version: no polling until a match, which a row merely
    // passing through that version would satisfy.
    let newest: HashMap<String, Accepted> = accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(id, events)| (id.clone(), events.iter().max().unwrap().clone()))
        .collect();
    wait_until_applied(&http, &base, stream.as_ref(), 60).await;
    for (id, (time, sequence, status)) in &newest {
        let row = message(&http, &base, id)
            .await
            .unwrap_or_else(|| panic!("{id} is missing once every record was applied"));
        assert_eq!(
            (
                row["sequence_number"].as_str(),
                row["status"].as_str(),
                row["timestamp"].as_str().and_then(EventTime::parse_rfc3339)
            ),
            (Some(sequence.as_str()), Some(status.as_str()), Some(*time)),
            "{id}: not its newest accepted version"
        );
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    let accepted_events: usize = accepted.lock().unwrap().values().map(Vec::len).sum();
    println!(
        "randomized e2e: {accepted_events} accepted events over {} ids, {reads} reads, no regression",
        newest.len()
    );
    newest.len()
}
