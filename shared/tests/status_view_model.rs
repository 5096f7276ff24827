//! Property tests: the status view, driven like Lambda's event source mapping over an in-memory
//! stream, through random order, duplicates, poison, whole-batch redelivery, store failures
//! before and after a commit took effect, a second writer racing on the same batch, and crashes
//! between the commit and the checkpoint. After the pipeline settles, every status's count and
//! list equal a scan of STATUS (which the processor built from the same records), and every
//! (shard, status) counter equals the number of entries in its bucket: nothing counted twice,
//! nothing lost. The routes are read too, through the same API the Lambda serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use proptest::prelude::*;
use support::read_batch;
use tidemark::adapters::memory::{MemoryBackend, MemoryStream};
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest};
use tidemark::consumers::views::check::compare_with_status;
use tidemark::consumers::views::status::StatusView;
use tidemark::consumers::{CheckpointedConsumer, Consumer};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::status_view::{CounterKey, ViewChange, ViewEntry};
use tidemark::domain::{parse_event, EventTime, FixedClock, Limits};
use tidemark::ports::*;
use tidemark::run::registry::Registry;

const BASE: &str = "2024-01-01T00:00:00Z";

fn base() -> EventTime {
    EventTime::parse_rfc3339(BASE).unwrap()
}

/// Few statuses, so ids move between them and buckets fill; one with a `/`, a `%` and non-ASCII.
const STATUSES: [&str; 5] = ["created", "shipped", "delivered", "failed/retry", "é%20x"];

#[derive(Clone, Debug)]
enum Produced {
    Event {
        id: u8,
        status: usize,
        millis: u16,
        copies: u8,
    },
    Poison,
}

fn produced() -> impl Strategy<Value = Produced> {
    prop_oneof![
        12 => (0u8..16, 0usize..STATUSES.len(), 0u16..30, 1u8..=3)
            .prop_map(|(id, status, millis, copies)| Produced::Event { id, status, millis, copies }),
        1 => Just(Produced::Poison),
    ]
}

#[derive(Clone, Debug)]
struct Chaos {
    shards: usize,
    /// Per mille of store calls that fail before doing anything.
    fail_before: u32,
    /// Per mille of commits that take effect and then answer an error (a timeout after the
    /// transaction committed).
    fail_after: u32,
    /// Per mille of batches delivered twice at once to two consumers (a reshard's overlap, a
    /// rebuild beside the live view): their commits race on the same entries.
    race: u32,
    redeliver: u32,
    /// Per mille of batches after which the consumer crashes before writing its checkpoint.
    crash: u32,
    seed: u64,
}

fn chaos() -> impl Strategy<Value = Chaos> {
    (
        1usize..=3,
        0u32..300,
        0u32..300,
        0u32..300,
        0u32..300,
        0u32..300,
        any::<u64>(),
    )
        .prop_map(
            |(shards, fail_before, fail_after, race, redeliver, crash, seed)| Chaos {
                shards,
                fail_before,
                fail_after,
                race,
                redeliver,
                crash,
                seed,
            },
        )
}

/// The view's store with faults before and after the real call.
struct FaultyView {
    inner: Arc<dyn StatusViewWriter>,
    rng: Mutex<fastrand::Rng>,
    chaos: Mutex<Option<Chaos>>,
}

impl FaultyView {
    fn roll(&self, per_mille: impl Fn(&Chaos) -> u32) -> bool {
        let Some(chaos) = self.chaos.lock().unwrap().clone() else {
            return false;
        };
        self.rng.lock().unwrap().u32(0..1000) < per_mille(&chaos)
    }
}

fn injected() -> StoreError {
    StoreError::Throttled("injected".into())
}

#[async_trait]
impl StatusViewWriter for FaultyView {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        // Every call yields first, as a network call does, so racing consumers interleave.
        tokio::task::yield_now().await;
        if self.roll(|c| c.fail_before) {
            return Err(injected());
        }
        self.inner.entries(ids).await
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        tokio::task::yield_now().await;
        if self.roll(|c| c.fail_before) {
            return Err(injected());
        }
        let outcome = self.inner.commit(changes).await?;
        if self.roll(|c| c.fail_after) {
            return Err(StoreError::Unavailable("timed out after committing".into()));
        }
        Ok(outcome)
    }
}

async fn produce(stream: &MemoryStream, records: &[Produced]) {
    for record in records {
        match record {
            Produced::Event {
                id,
                status,
                millis,
                copies,
            } => {
                let timestamp = base()
                    .saturating_add(Duration::from_millis(u64::from(*millis)))
                    .to_rfc3339();
                let json = serde_json::json!({
                    "id": format!("id-{id}"),
                    "status": STATUSES[*status],
                    "timestamp": timestamp,
                })
                .to_string();
                let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
                let event = parse_event(raw, None, base(), &Limits::default()).unwrap();
                for _ in 0..*copies {
                    stream
                        .put(&OutgoingRecord {
                            partition_key: event.id.clone(),
                            data: Bytes::from(event.encode().unwrap()),
                        })
                        .await
                        .unwrap();
                }
            }
            Produced::Poison => {
                stream
                    .put_raw("poison", Bytes::from_static(b"not json"))
                    .unwrap();
            }
        }
    }
}

/// Runs `consumer` over every shard the way the mapping does (resume from the checkpoint, retry
/// a failed batch from its failure), with the chaos of `chaos` when given.
async fn drive(
    memory: &MemoryBackend,
    view: &Arc<StatusView>,
    checkpoints: &tidemark::consumers::Checkpoints,
    chaos: Option<&Chaos>,
    rng: &mut fastrand::Rng,
) {
    let loop_ = CheckpointedConsumer::new(view.clone(), checkpoints.writer.clone());
    let roll = |rng: &mut fastrand::Rng, per_mille: u32| rng.u32(0..1000) < per_mille;
    for shard in memory.stream.list_shards().await.unwrap() {
        let shard = shard.shard_id;
        // Bounded: a clean run finishes each shard long before; a chaotic one may stop early
        // (the settling run that follows finishes it).
        for _ in 0..200 {
            let from = match checkpoints.reader.get(&shard).await.unwrap() {
                Some(c) => StartPosition::AfterSequence(c.sequence_number),
                None => StartPosition::TrimHorizon,
            };
            let batch = read_batch(&memory.stream, &shard, &from, rng.usize(1..=8)).await;
            if batch.is_empty() {
                break;
            }
            let Some(chaos) = chaos else {
                let outcome = loop_.run_batch(&shard, &batch).await;
                assert!(
                    outcome.failure.is_none(),
                    "a clean batch failed: {outcome:?}"
                );
                continue;
            };
            if roll(rng, chaos.race) {
                let twin = view.clone();
                let (a, b) =
                    tokio::join!(view.consume(&shard, &batch), twin.consume(&shard, &batch));
                let _ = (a, b); // no checkpoint: as if both crashed after their commits
                continue;
            }
            if roll(rng, chaos.crash) {
                let _ = view.consume(&shard, &batch).await;
                continue;
            }
            let outcome = loop_.run_batch(&shard, &batch).await;
            if roll(rng, chaos.redeliver) {
                let _ = loop_.run_batch(&shard, &batch).await;
            }
            let _ = outcome;
        }
    }
}

async fn run_case(records: Vec<Produced>, chaos: Chaos) -> Result<(), TestCaseError> {
    let memory = MemoryBackend::new(chaos.shards);
    produce(&memory.stream, &records).await;
    let faulty = Arc::new(FaultyView {
        inner: memory.status_view.clone(),
        rng: Mutex::new(fastrand::Rng::with_seed(chaos.seed)),
        chaos: Mutex::new(Some(chaos.clone())),
    });
    let adapters = Adapters::in_memory(memory.clone()).with_status_view_writer(faulty.clone());
    let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));
    let view = Arc::new(StatusView::new(
        adapters.status_view_writer(),
        Limits::default(),
        clock.clone(),
    ));
    let checkpoints = adapters.checkpoints_of(ConsumerName::STATUS_VIEW);
    let mut rng = fastrand::Rng::with_seed(chaos.seed);

    drive(&memory, &view, &checkpoints, Some(&chaos), &mut rng).await;
    *faulty.chaos.lock().unwrap() = None;
    drive(&memory, &view, &checkpoints, None, &mut rng).await;

    // STATUS from the same records, cleanly: the scan the view must equal.
    let processor = CheckpointedConsumer::new(
        Arc::new(adapters.processor(Default::default(), clock)),
        adapters.checkpoint_writer(),
    );
    let shards: Vec<String> = memory
        .stream
        .list_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    for shard in &shards {
        let batch = read_batch(&memory.stream, shard, &StartPosition::TrimHorizon, 10_000).await;
        if !batch.is_empty() {
            prop_assert!(processor.run_batch(shard, &batch).await.failure.is_none());
        }
    }

    let differences =
        compare_with_status(memory.status.as_ref(), memory.status_view.as_ref(), &shards)
            .await
            .unwrap();
    prop_assert!(differences.is_empty(), "{differences:?}");

    // Every counter is the size of its bucket: no change was counted twice, in any bucket.
    let mut buckets: BTreeMap<CounterKey, i64> = BTreeMap::new();
    for entry in memory.status_view.all_entries() {
        *buckets.entry(entry.counter()).or_insert(0) += 1;
    }
    let counters: BTreeMap<CounterKey, i64> = memory
        .status_view
        .counters()
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    prop_assert_eq!(counters, buckets);

    check_routes(&adapters, &memory).await
}

fn get(path: &str, query: Option<&str>) -> ApiRequest {
    ApiRequest {
        method: Method::GET,
        path: path.into(),
        query: query.map(str::to_owned),
        content_type: None,
        idempotency_key: None,
        body: Bytes::new(),
    }
}

/// The routes answer what STATUS holds: counts, and each status's rows page by page.
async fn check_routes(adapters: &Adapters, memory: &MemoryBackend) -> Result<(), TestCaseError> {
    let api = Api {
        ingest: None,
        query: Some(Registry::standard().query_api(adapters)),
    };
    let rows = memory.status.snapshot();
    let mut want: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (id, row) in &rows {
        want.entry(row.status.clone())
            .or_default()
            .push((row.version.0.clone(), id.clone()));
    }
    let answer = api.handle(get("/statuses", Some("limit=2"))).await;
    prop_assert_eq!(answer.status, http::StatusCode::OK);
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut page: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    loop {
        for s in page["statuses"].as_array().unwrap() {
            counts.insert(
                s["status"].as_str().unwrap().to_owned(),
                s["count"].as_i64().unwrap(),
            );
        }
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        let answer = api
            .handle(get("/statuses", Some(&format!("limit=2&cursor={cursor}"))))
            .await;
        page = serde_json::from_slice(&answer.body).unwrap();
    }
    let want_counts: BTreeMap<String, i64> = want
        .iter()
        .map(|(s, ids)| (s.clone(), ids.len() as i64))
        .collect();
    prop_assert_eq!(counts, want_counts);

    for (status, ids) in &mut want {
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let path = format!(
            "/statuses/{}/messages",
            percent_encoding::utf8_percent_encode(status, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut listed = Vec::new();
        let mut query = "limit=3".to_owned();
        loop {
            let answer = api.handle(get(&path, Some(&query))).await;
            prop_assert_eq!(answer.status, http::StatusCode::OK);
            let page: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            prop_assert_eq!(page["status"].as_str(), Some(status.as_str()));
            for row in page["messages"].as_array().unwrap() {
                prop_assert_eq!(row["status"].as_str(), Some(status.as_str()));
                listed.push(row["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit=3&cursor={cursor}"),
                None => break,
            }
        }
        let want_ids: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
        prop_assert_eq!(listed, want_ids, "the list of {}", status);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn counts_and_lists_equal_a_scan_of_status(
        records in prop::collection::vec(produced(), 1..80),
        chaos in chaos(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_case(records, chaos))?;
    }
}

/// The property's own teeth: the comparison sees a view that lags STATUS, and a commit whose
/// entry changed since it was read is refused rather than counted again.
#[tokio::test]
async fn a_lagging_view_and_a_second_count_are_caught() {
    let memory = MemoryBackend::new(1);
    let shard = memory.stream.list_shards().await.unwrap()[0]
        .shard_id
        .clone();
    let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));
    let view = StatusView::new(memory.status_view.clone(), Limits::default(), clock.clone());
    let processor = Adapters::in_memory(memory.clone()).processor(Default::default(), clock);
    let event = |status: usize, millis: u16| Produced::Event {
        id: 1,
        status,
        millis,
        copies: 1,
    };

    produce(&memory.stream, &[event(0, 1)]).await;
    let first = read_batch(&memory.stream, &shard, &StartPosition::TrimHorizon, 10).await;
    view.consume(&shard, &first).await;
    processor.consume(&shard, &first).await;
    let compare = || async {
        compare_with_status(
            memory.status.as_ref(),
            memory.status_view.as_ref(),
            std::slice::from_ref(&shard),
        )
        .await
        .unwrap()
    };
    assert!(compare().await.is_empty());

    // STATUS moves on, the view does not (yet): both the counts and the lists differ.
    produce(&memory.stream, &[event(1, 2)]).await;
    let after = StartPosition::AfterSequence(first[0].sequence_number.clone());
    let second = read_batch(&memory.stream, &shard, &after, 10).await;
    processor.consume(&shard, &second).await;
    let differences = compare().await;
    assert_eq!(differences.counts.len(), 2, "{differences:?}");
    assert_eq!(differences.lists, vec![STATUSES[1].to_owned()]);

    // Counting the first change again, as a view without the precondition would on redelivery.
    let entry = memory.status_view.all_entries().remove(0);
    let again = memory
        .status_view
        .commit(&[ViewChange {
            before: None,
            after: entry,
        }])
        .await
        .unwrap();
    assert_eq!(again, ViewCommit::Conflict);
    view.consume(&shard, &second).await;
    assert!(compare().await.is_empty());
}

/// `tidemark rebuild --view status-view`: the view again from the archive alone equals the view
/// the live consumers kept, and both equal a scan of STATUS.
#[tokio::test]
async fn the_view_rebuilt_from_the_archive_equals_the_live_one() {
    let adapters = Adapters::memory(2);
    let memory = adapters.memory_backend().unwrap().clone();
    let records: Vec<Produced> = (0..60)
        .map(|i| Produced::Event {
            id: (i * 7 % 13) as u8,
            status: i % STATUSES.len(),
            millis: (i * 11 % 17) as u16,
            copies: 1 + (i % 2) as u8,
        })
        .chain([Produced::Poison])
        .collect();
    produce(&memory.stream, &records).await;
    let settings = tidemark::run::registry::ConsumerSettings {
        processor: Default::default(),
        clock: Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60)))),
    };
    let shards: Vec<String> = memory
        .stream
        .list_shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    for registration in Registry::standard().iter() {
        let consumer = registration.checkpointed(&adapters, &settings);
        for shard in &shards {
            let mut from = StartPosition::TrimHorizon;
            loop {
                let batch = read_batch(&memory.stream, shard, &from, 9).await;
                let Some(last) = batch.last() else { break };
                from = StartPosition::AfterSequence(last.sequence_number.clone());
                assert!(consumer.run_batch(shard, &batch).await.failure.is_none());
            }
        }
    }
    let rebuilt = Arc::new(tidemark::adapters::memory::MemoryStatusView::default());
    let view = StatusView::new(rebuilt.clone(), Limits::default(), settings.clock.clone());
    tidemark::run::rebuild::rebuild_from_archive(
        tidemark::run::rebuild::ArchiveRebuild::new(adapters.archive_reader().as_ref(), &view),
        &mut tidemark::run::rebuild::RebuildProgress::default(),
    )
    .await
    .unwrap();
    for reader in [memory.status_view.as_ref(), rebuilt.as_ref()] {
        let differences = compare_with_status(memory.status.as_ref(), reader, &shards)
            .await
            .unwrap();
        assert!(differences.is_empty(), "{differences:?}");
    }
    let mut live = memory.status_view.all_entries();
    let mut again = rebuilt.all_entries();
    live.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    again.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(live, again);
    assert!(!live.is_empty());
}
