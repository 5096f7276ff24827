//! The switch to a rebuilt STATUS table against LocalStack's DynamoDB and Kinesis, stage by
//! stage as docs/operations.md gives it, while events keep arriving and a reader keeps reading
//! every id from whichever table readers are served from: no read is older than an earlier one,
//! and at the end the rebuilt table equals the stack's own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::adapters::memory::MemoryDeadLetterStore;
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::Processor;
use tidemark::domain::{SystemClock, VersionKey};
use tidemark::ports::{ShardReader, StatusReader};
use tidemark::run::rebuild::follow::{Follower, ShardSwitch};
use tidemark::run::rebuild::{rebuild, RebuildProgress};
use tidemark::run::verify::verify;
use tidemark_tests::{quick_settings, wait_until_applied, Resources, Running};

const IDS: u32 = 10;

async fn post(http: &reqwest::Client, base: &str, round: u32) {
    let events: Vec<Value> = (0..30u32)
        .map(|n| {
            json!({
                "id": format!("order-{}", n % IDS),
                "status": format!("r{round}-s{n}"),
                "timestamp": format!("2026-12-04T12:{:02}:{:02}Z", round, (n * 7) % 60),
            })
        })
        .collect();
    let answer: Value = http
        .post(format!("{base}/events/batch"))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 30, "{answer}");
}

/// Reads every id, again and again, from the table readers are currently served from (the
/// rebuilt one once `serve_rebuilt` is set), failing on any id older than before.
fn reader(
    old: Arc<DynamoStatusStore>,
    new: Arc<DynamoStatusStore>,
    serve_rebuilt: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, VersionKey> = BTreeMap::new();
        let (mut reads, mut rebuilt_reads) = (0, 0);
        while !stop.load(Ordering::SeqCst) {
            for n in 0..IDS {
                let id = format!("order-{n}");
                let from_rebuilt = serve_rebuilt.load(Ordering::SeqCst);
                let table = if from_rebuilt { &new } else { &old };
                let Ok(row) = table.get(&id).await else {
                    continue; // a failed read serves nothing, old or new
                };
                reads += 1;
                rebuilt_reads += usize::from(from_rebuilt);
                let now = row.map(|r| r.version);
                if let Some(before) = seen.get(&id) {
                    assert!(
                        now.as_ref() >= Some(before),
                        "{id} went back (rebuilt: {from_rebuilt}): {before:?} then {now:?}"
                    );
                }
                if let Some(now) = now {
                    seen.insert(id, now);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (reads, rebuilt_reads)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_move_to_a_rebuilt_table_without_an_id_going_back_on_localstack() {
    let resources = Resources::create("switch", 2).await;
    let adapters = resources.adapters();
    let http = reqwest::Client::new();
    let stream = adapters.shard_reader();
    let into = format!("{}-rebuilt", resources.names.status_table);
    let dynamodb = resources.dynamodb();
    ensure_table(&dynamodb, &into, "id", None).await.unwrap();
    let old = Arc::new(DynamoStatusStore::new(
        dynamodb.clone(),
        &resources.names.status_table,
    ));
    let new = Arc::new(DynamoStatusStore::new(dynamodb.clone(), &into));

    // Live: STATUS only. Then the first rebuild pass, then more events that only STATUS gets:
    // the gap the follower must fill before readers move.
    let live = Running::start(adapters.clone(), quick_settings()).await;
    post(&http, &live.base, 0).await;
    wait_until_applied(&http, &live.base, stream.as_ref(), 60).await;
    let follower_processor = Processor::new(
        new.clone(),
        Arc::new(MemoryDeadLetterStore::default()),
        Default::default(),
        Arc::new(SystemClock),
    );
    let mut progress = RebuildProgress::default();
    rebuild(
        stream.as_ref(),
        &follower_processor,
        Default::default(),
        &mut progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
    .unwrap();
    post(&http, &live.base, 1).await;
    wait_until_applied(&http, &live.base, stream.as_ref(), 60).await;
    let serve_rebuilt = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(
        old.clone(),
        new.clone(),
        serve_rebuilt.clone(),
        stop.clone(),
    );

    // StatusTableSwitch=mirror: the processor writes the rebuilt table first; readers stay.
    live.stop().await;
    let mirroring = adapters.clone().mirroring_status_table(&into);
    let running = Running::start(mirroring.clone(), quick_settings()).await;
    post(&http, &running.base, 2).await;
    let processor_checkpoints = adapters.checkpoint_reader();
    let follower = Follower {
        stream: stream.as_ref(),
        consumer: &follower_processor,
        live: processor_checkpoints.as_ref(),
        into: &into,
    };
    let mut passes = 0;
    loop {
        let (_, shards) = follower.pass(&mut progress, |_| Ok(())).await.unwrap();
        if shards.iter().all(|s| s.state == ShardSwitch::Done) {
            break;
        }
        passes += 1;
        assert!(passes < 120, "the follower never finished: {shards:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // StatusTableSwitch=serve: readers move while events keep coming.
    running.stop().await;
    let serving = Running::start(mirroring.with_status_reader(new.clone()), quick_settings()).await;
    serve_rebuilt.store(true, Ordering::SeqCst);
    post(&http, &serving.base, 3).await;
    wait_until_applied(&http, &serving.base, stream.as_ref(), 60).await;
    let difference = verify(old.as_ref(), new.as_ref(), IDS as usize)
        .await
        .unwrap();
    assert_eq!(
        (difference.expected_rows, difference.difference_count),
        (u64::from(IDS), 0),
        "while mirroring, both tables hold the same rows: {difference:?}"
    );

    // StatusTableSwitch=done: the rebuilt table only; the stack's own stops moving.
    serving.stop().await;
    let done = Running::start(
        Adapters::clone(&adapters)
            .with_status_writer(new.clone())
            .with_status_reader(new.clone()),
        quick_settings(),
    )
    .await;
    post(&http, &done.base, 4).await;
    wait_until_applied(&http, &done.base, stream.as_ref(), 60).await;
    stop.store(true, Ordering::SeqCst);
    let (reads, rebuilt_reads) = reading.await.unwrap();
    done.stop().await;
    assert!(
        rebuilt_reads > 0 && reads > rebuilt_reads,
        "the reader read both tables: {reads} reads, {rebuilt_reads} from the rebuilt one"
    );
    let last = new.get("order-0").await.unwrap().unwrap();
    assert!(last.status.starts_with("r4-"), "{last:?}");
    let shards = stream.list_shards().await.unwrap();
    assert_eq!(shards.len(), 2);
    let _ = dynamodb.delete_table().table_name(&into).send().await;
}
