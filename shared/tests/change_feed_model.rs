//! Property test: STATUS's change feed, read through `GET /changes` while the processor runs
//! over random histories with duplicates, redelivered batches, crashes before the checkpoint,
//! and STATUS writes failing before or after they took effect. Against a model built from what
//! STATUS itself held between batches:
//! - each id's changes come in strictly increasing version order, and each starts from the
//!   status the one before it ended on (the first from none): never backwards, nothing skipped;
//! - every row STATUS was seen holding is in the feed (every change appears at least once);
//! - the last change of each id is the row STATUS ends with, and no id without a row has one;
//! - a reader following the feed in pages of random sizes, with waits, reads each change once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use support::put_event;
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest};
use tidemark::consumers::{CheckpointedConsumer, Consumer};
use tidemark::domain::{EventTime, FixedClock};
use tidemark::ports::*;

const BASE: &str = "2024-01-01T00:00:00Z";
const STATUSES: [&str; 4] = ["created", "shipped", "delivered", "failed"];

fn base() -> EventTime {
    EventTime::parse_rfc3339(BASE).unwrap()
}

#[derive(Clone, Debug)]
struct Produced {
    id: u8,
    status: usize,
    millis: u16,
    copies: u8,
}

fn produced() -> impl Strategy<Value = Produced> {
    (0u8..8, 0usize..STATUSES.len(), 0u16..20, 1u8..=3).prop_map(|(id, status, millis, copies)| {
        Produced {
            id,
            status,
            millis,
            copies,
        }
    })
}

#[derive(Clone, Debug)]
struct Chaos {
    shards: usize,
    fail_before: f64,
    fail_after: f64,
    redeliver: u32,
    crash: u32,
    seed: u64,
}

fn chaos() -> impl Strategy<Value = Chaos> {
    (
        1usize..=3,
        0.0..0.3f64,
        0.0..0.3f64,
        0u32..400,
        0u32..300,
        any::<u64>(),
    )
        .prop_map(
            |(shards, fail_before, fail_after, redeliver, crash, seed)| Chaos {
                shards,
                fail_before,
                fail_after,
                redeliver,
                crash,
                seed,
            },
        )
}

async fn produce(memory: &MemoryBackend, records: &[Produced]) {
    for r in records {
        let timestamp = base().saturating_add(Duration::from_millis(u64::from(r.millis)));
        let id = format!("id-{}", r.id);
        put_event(&memory.stream, &id, STATUSES[r.status], timestamp, r.copies).await;
    }
}

/// A reader of `GET /changes`: its cursor, and every change it was given, in order.
#[derive(Default)]
struct Follower {
    cursor: Option<String>,
    read: Vec<Value>,
}

impl Follower {
    async fn read_page(&mut self, api: &Api, limit: usize, wait_ms: u64) -> usize {
        let mut query = format!("limit={limit}&wait_ms={wait_ms}");
        if let Some(cursor) = &self.cursor {
            query.push_str(&format!("&after={cursor}"));
        }
        let response = api
            .handle(ApiRequest {
                method: Method::GET,
                path: "/changes".into(),
                query: Some(query),
                content_type: None,
                idempotency_key: None,
                body: Bytes::new(),
            })
            .await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        let changes = body["changes"].as_array().unwrap().clone();
        assert!(changes.len() <= limit);
        self.cursor = Some(body["cursor"].as_str().unwrap().to_owned());
        let n = changes.len();
        self.read.extend(changes);
        n
    }

    async fn read_to_end(&mut self, api: &Api) {
        while self.read_page(api, 7, 0).await > 0 {}
    }
}

/// Every (id, version) STATUS holds now, added to `seen`.
fn sample(memory: &MemoryBackend, seen: &mut BTreeSet<(String, String)>) {
    for (id, row) in memory.status.snapshot() {
        seen.insert((id, row.version.to_opaque()));
    }
}

async fn run_case(records: Vec<Produced>, chaos: Chaos) -> Result<(), TestCaseError> {
    let memory = MemoryBackend::new(chaos.shards).with_change_feed(100_000);
    produce(&memory, &records).await;
    let faults = Faults::new(chaos.seed);
    faults.set_failure_rate(chaos.fail_before);
    faults.set_fail_after_rate(chaos.fail_after);
    let adapters = Adapters::in_memory(memory.clone())
        .with_status_writer(Arc::new(Faulty::new(memory.status.clone(), &faults)));
    let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));
    let processor = Arc::new(adapters.processor(Default::default(), clock));
    let consumer = CheckpointedConsumer::new(processor.clone(), adapters.checkpoint_writer());
    let api = Api {
        ingest: None,
        query: Some(adapters.query_api()),
    };
    let checkpoints = adapters.checkpoint_reader();
    let mut rng = fastrand::Rng::with_seed(chaos.seed);
    let mut follower = Follower::default();
    let mut seen = BTreeSet::new();

    let shards: Vec<String> = memory
        .stream
        .list_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    // Chaotic rounds, then clean ones until every shard is applied to its end.
    for round in 0..40 {
        if round == 20 {
            faults.set_failure_rate(0.0);
            faults.set_fail_after_rate(0.0);
        }
        let mut moved = false;
        for shard in &shards {
            let from = match checkpoints.get(shard).await.unwrap() {
                Some(c) => StartPosition::AfterSequence(c.sequence_number),
                None => StartPosition::TrimHorizon,
            };
            let it = memory.stream.shard_iterator(shard, &from).await.unwrap();
            let batch = memory
                .stream
                .get_records(&it, rng.usize(1..=6))
                .await
                .unwrap()
                .records;
            if batch.is_empty() {
                continue;
            }
            moved = true;
            if round < 20 && rng.u32(0..1000) < chaos.crash {
                let _ = processor.consume(shard, &batch).await; // crashed before its checkpoint
            } else {
                let _ = consumer.run_batch(shard, &batch).await;
                if round < 20 && rng.u32(0..1000) < chaos.redeliver {
                    let _ = consumer.run_batch(shard, &batch).await;
                }
            }
            sample(&memory, &mut seen);
            if rng.bool() {
                follower.read_page(&api, rng.usize(1..=5), 0).await;
            }
        }
        if !moved && round >= 20 {
            break;
        }
    }
    follower.read_to_end(&api).await;
    // Nothing more: a waiting read answers empty, with a cursor that still reads on.
    prop_assert_eq!(follower.read_page(&api, 10, 20).await, 0);

    // The feed, per id, against STATUS.
    let mut last: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut listed = BTreeSet::new();
    for change in &follower.read {
        let id = change["id"].as_str().unwrap().to_owned();
        let version = change["version"].as_str().unwrap().to_owned();
        let new_status = change["new_status"].as_str().unwrap().to_owned();
        let key = tidemark::domain::VersionKey::from_opaque(&version).unwrap();
        match last.get(&id) {
            Some((previous_version, previous_status)) => {
                let previous = tidemark::domain::VersionKey::from_opaque(previous_version).unwrap();
                prop_assert!(key > previous, "{id}: {change} after {previous_version}");
                prop_assert_eq!(
                    change["old_status"].as_str(),
                    Some(previous_status.as_str())
                );
            }
            None => prop_assert!(change["old_status"].is_null(), "{change}"),
        }
        prop_assert!(
            listed.insert((id.clone(), version.clone())),
            "read twice: {change}"
        );
        last.insert(id, (version, new_status));
    }
    for entry in &seen {
        prop_assert!(
            listed.contains(entry),
            "STATUS held {entry:?}, the feed never said"
        );
    }
    let rows = memory.status.snapshot();
    prop_assert_eq!(rows.len(), last.len());
    for (id, row) in rows {
        let (version, status) = &last[&id];
        prop_assert_eq!(version, &row.version.to_opaque());
        prop_assert_eq!(status, &row.status);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_feed_lists_every_change_in_order(
        records in proptest::collection::vec(produced(), 1..40),
        chaos in chaos(),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(run_case(records, chaos))?;
    }
}
