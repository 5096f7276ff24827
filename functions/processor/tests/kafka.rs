//! The consumers' handler over Lambda's Kafka event (MSK and self-managed Kafka):
//! `events/kafka/status-batch.json` (two topic-partitions; Tidemark's own records, plain events
//! from another producer, poison, a tombstone), the partial batch response the Kafka event source
//! reads, events Lambda could not have sent, and a property test against a model: random events
//! over random partitions, delivered in random batches with redelivery and failing writes, end
//! with every id at its newest event.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use proptest::prelude::*;
use tidemark::adapters::memory::MemoryStatusStore;
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::domain::partition::sequence_of;
use tidemark::domain::{EventTime, FixedClock};
use tidemark::ports::{
    ApplyOutcome, CheckpointReader, DeadLetterReader, StatusRow, StatusWriter, StoreError,
};
use tidemark_processor::kafka::{InvalidKafkaEvent, KafkaEvent};
use tidemark_processor::Handler;

const BATCH: &str = include_str!("../../../events/kafka/status-batch.json");

fn batch() -> KafkaEvent {
    serde_json::from_str(BATCH).unwrap()
}

fn handler(adapters: &Adapters) -> Handler {
    let now = EventTime::parse_rfc3339("2026-11-22T10:10:01Z").unwrap();
    Handler::new(
        adapters,
        ProcessorSettings::default(),
        Arc::new(FixedClock(now)),
    )
}

#[tokio::test]
async fn each_topic_partition_is_a_shard_and_foreign_plain_events_are_read_by_the_api_rules() {
    let adapters = Adapters::memory(1);
    let memory = adapters.memory_backend().unwrap().clone();
    let (response, reports) = handler(&adapters).process_kafka(batch()).await.unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(reports.len(), 2, "one report per topic-partition");

    let rows = memory.status.snapshot();
    assert_eq!(
        rows["order-1"].status, "shipped",
        "10:05 beats 10:02 and 10:00"
    );
    assert_eq!(rows["order-1"].shard_id, "tidemark-events-0");
    assert_eq!(
        rows["order-1"].sequence_number.as_str(),
        "4100000",
        "offset 41 of partition 0"
    );
    assert_eq!(rows["order-2"].status, "delivered", "a plain event, newer");
    assert_eq!(rows["order-2"].data, None);
    assert_eq!(
        rows["order-4"].timestamp, "2026-11-22T10:06:00.02Z",
        "a plain event without a timestamp happened when Kafka stamped it"
    );
    assert_eq!(rows.len(), 3);

    let letters = memory.dead_letters.list().await.unwrap();
    let dead: BTreeSet<(&str, &str)> = letters
        .iter()
        .map(|l| (l.shard_id.as_str(), l.sequence_number.as_str()))
        .collect();
    assert_eq!(
        dead,
        BTreeSet::from([
            ("tidemark-events-0", "4300000"), // offset 43: not JSON
            ("tidemark-events-0", "4400000"), // offset 44: a tombstone, no value
            ("tidemark-events-1", "1000001"), // offset 10: an unknown field, as the API refuses it
        ])
    );
    for (partition, last) in [
        ("tidemark-events-0", "4400000"),
        ("tidemark-events-1", "1000001"),
    ] {
        let checkpoint = memory.checkpoints.get(partition).await.unwrap().unwrap();
        assert_eq!(checkpoint.sequence_number.as_str(), last);
    }
}

/// STATUS failing every write of one id, as a throttle would.
struct FailsId(&'static str, MemoryStatusStore);

#[async_trait]
impl StatusWriter for FailsId {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        if row.id == self.0 {
            return Err(StoreError::Throttled("refused by the test".into()));
        }
        self.1.apply(row).await
    }
}

#[tokio::test]
async fn a_failed_record_is_reported_as_its_partition_and_offset_and_the_others_go_on() {
    let adapters = Adapters::memory(1)
        .with_status_writer(Arc::new(FailsId("order-2", MemoryStatusStore::default())));
    let (response, _) = handler(&adapters).process_kafka(batch()).await.unwrap();
    // order-2's first record in its partition is offset 7: the mapping resumes there.
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        serde_json::json!({
            "batchItemFailures": [
                {"itemIdentifier": {"partition": "tidemark-events-1", "offset": 7}}
            ]
        })
    );
    let memory = adapters.memory_backend().unwrap();
    let checkpoint = memory.checkpoints.get("tidemark-events-0").await.unwrap();
    assert_eq!(checkpoint.unwrap().sequence_number.as_str(), "4400000");
    assert_eq!(
        memory.checkpoints.get("tidemark-events-1").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn an_event_lambda_could_not_have_sent_fails_the_invocation() {
    let adapters = Adapters::memory(1);
    let handler = handler(&adapters);
    let altered = |edit: fn(&mut serde_json::Value)| {
        let mut event: serde_json::Value = serde_json::from_str(BATCH).unwrap();
        edit(&mut event);
        serde_json::from_value::<KafkaEvent>(event).unwrap()
    };
    let negative = altered(|e| e["records"]["tidemark-events-1"][0]["offset"] = (-1).into());
    assert!(matches!(
        handler.process_kafka(negative).await,
        Err(InvalidKafkaEvent::Offset { offset: -1, .. })
    ));
    let misfiled = altered(|e| e["records"]["tidemark-events-1"][1]["partition"] = 3.into());
    assert!(matches!(
        handler.process_kafka(misfiled).await,
        Err(InvalidKafkaEvent::Partition { index: 1, .. })
    ));
    let unordered = altered(|e| e["records"]["tidemark-events-0"][2]["offset"] = 40.into());
    assert!(matches!(
        handler.process_kafka(unordered).await,
        Err(InvalidKafkaEvent::Order { index: 2, .. })
    ));
    let memory = adapters.memory_backend().unwrap();
    assert!(
        memory.status.snapshot().is_empty(),
        "nothing applied from a refused event"
    );
}

/// STATUS failing a write now and then, before or after it took effect.
struct Flaky {
    inner: MemoryStatusStore,
    calls: AtomicU32,
    every: u32,
}

#[async_trait]
impl StatusWriter for Flaky {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.every > 0 && n.is_multiple_of(self.every) {
            return Err(StoreError::Throttled("refused by the test".into()));
        }
        let outcome = self.inner.apply(row).await;
        if self.every > 0 && n % self.every == 1 {
            return Err(StoreError::Unavailable(
                "timed out after it took effect".into(),
            ));
        }
        outcome
    }
}

fn kafka_record(
    partition: u8,
    offset: i64,
    id: &str,
    status: &str,
    second: u32,
) -> serde_json::Value {
    let event = serde_json::json!({
        "id": id,
        "status": status,
        "timestamp": format!("2026-11-22T10:00:{second:02}Z"),
        "received_at": "2026-11-22T10:06:00Z",
    });
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    serde_json::json!({
        "topic": "events",
        "partition": partition,
        "offset": offset,
        "timestamp": 1_795_341_960_000_i64 + offset,
        "timestampType": "CREATE_TIME",
        "key": encode(id),
        "value": encode(&event.to_string()),
        "headers": [],
    })
}

/// One id's events always go to one partition (keyed), as a Kafka producer keyed by id does.
fn partition_of(id: u8, partitions: u8) -> u8 {
    id % partitions
}

/// Each partition's records in offset order, as `kafka_record`s.
type Log = BTreeMap<u8, Vec<serde_json::Value>>;

/// The Kafka event source mapping over `log`: each invocation carries a batch of some of the
/// partitions with records left (each partition on its own, so any interleaving of partitions
/// happens); a reported failure resumes its partition there; a partition's batch is now and then
/// delivered again (a lost response). `after` looks at the state after every invocation.
async fn deliver(
    handler: &Handler,
    log: &Log,
    batch_size: usize,
    rng: &mut fastrand::Rng,
    mut after: impl FnMut() -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut next: BTreeMap<u8, usize> = log.keys().map(|p| (*p, 0)).collect();
    for _ in 0..10_000 {
        let pending: Vec<u8> = next
            .iter()
            .filter(|(p, at)| **at < log[*p].len())
            .map(|(p, _)| *p)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let chosen: Vec<u8> = pending.iter().copied().filter(|_| rng.bool()).collect();
        let chosen = if chosen.is_empty() {
            vec![pending[rng.usize(..pending.len())]]
        } else {
            chosen
        };
        let mut records = serde_json::Map::new();
        let mut sizes = BTreeMap::new();
        for p in &chosen {
            let from = next[p];
            let to = (from + rng.usize(1..=batch_size)).min(log[p].len());
            records.insert(format!("events-{p}"), log[p][from..to].to_vec().into());
            sizes.insert(*p, to - from);
        }
        let event: KafkaEvent = serde_json::from_value(serde_json::json!({
            "eventSource": "aws:kafka", "records": records,
        }))
        .unwrap();
        let (response, _) = handler.process_kafka(event).await.unwrap();
        for p in &chosen {
            let failed = response
                .batch_item_failures
                .iter()
                .find(|f| f.item_identifier.partition == format!("events-{p}"));
            let at = next.get_mut(p).unwrap();
            match failed {
                // Resume at the reported offset (offsets are the positions here).
                Some(f) => *at = f.item_identifier.offset as usize,
                None if rng.u8(0..5) == 0 => {}
                None => *at += sizes[p],
            }
        }
        after()?;
    }
    Err(TestCaseError::fail("the mapping never finished"))
}

/// The model: an id's row is its event with the greatest (event time, sequence number), the
/// sequence number ordering by offset, then partition.
fn newest_of(log: &Log) -> BTreeMap<String, (u32, i64, u8, String)> {
    let mut newest: BTreeMap<String, (u32, i64, u8, String)> = BTreeMap::new();
    for (p, records) in log {
        for record in records {
            let value = base64::engine::general_purpose::STANDARD
                .decode(record["value"].as_str().unwrap())
                .unwrap();
            let event: serde_json::Value = serde_json::from_slice(&value).unwrap();
            let timestamp = event["timestamp"].as_str().unwrap();
            let second: u32 = timestamp[17..19].parse().unwrap();
            let candidate = (
                second,
                record["offset"].as_i64().unwrap(),
                *p,
                event["status"].as_str().unwrap().to_owned(),
            );
            let id = event["id"].as_str().unwrap().to_owned();
            let entry = newest.entry(id).or_insert_with(|| candidate.clone());
            if (candidate.0, candidate.1, candidate.2) > (entry.0, entry.1, entry.2) {
                *entry = candidate;
            }
        }
    }
    newest
}

fn push(log: &mut Log, partition: u8, id: u8, status: u8, second: u32) {
    let records = log.entry(partition).or_default();
    let offset = records.len() as i64;
    records.push(kafka_record(
        partition,
        offset,
        &format!("id-{id}"),
        &format!("s{status}"),
        second,
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redelivered_partial_kafka_batches_end_every_id_at_its_newest(
        events in proptest::collection::vec((0u8..8, 0u32..60, 0u8..4), 1..60),
        partitions in 1u8..4,
        batch_size in 1usize..8,
        every in prop_oneof![Just(0u32), 3u32..7],
        seed in any::<u64>(),
    ) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut log = Log::new();
            for (id, second, status) in &events {
                push(&mut log, partition_of(*id, partitions), *id, *status, *second);
            }
            let flaky = Arc::new(Flaky { inner: MemoryStatusStore::default(), calls: AtomicU32::new(0), every });
            let adapters = Adapters::memory(1).with_status_writer(flaky.clone());
            let handler = handler(&adapters);
            deliver(&handler, &log, batch_size, &mut rng, || Ok(())).await?;
            let rows = flaky.inner.snapshot();
            let newest = newest_of(&log);
            prop_assert_eq!(rows.len(), newest.len());
            for (id, (_, offset, p, status)) in &newest {
                let row = &rows[id];
                prop_assert_eq!(&row.status, status, "{}", id);
                prop_assert_eq!(row.shard_id.clone(), format!("events-{p}"));
                prop_assert_eq!(&row.sequence_number, &sequence_of(i64::from(*p), *offset).unwrap());
            }
            Ok(())
        })?;
    }

    /// Partitions added to the topic (2 → 4): an id's later events go to its new partition while
    /// older ones may still wait in the old one, and the partitions are applied in any
    /// interleaving. No row ever goes back, no event is taken for another's redelivery, and
    /// every id ends at its greatest (event time, sequence number): newest by time always wins;
    /// only a tie in event time is settled by the offsets of two partitions, which say nothing
    /// about which came later (docs/kafka.md).
    #[test]
    fn adding_partitions_never_moves_a_row_back(
        before in proptest::collection::vec((0u8..8, 0u32..60, 0u8..4), 1..30),
        after in proptest::collection::vec((0u8..8, 0u32..60, 0u8..4), 1..30),
        batch_size in 1usize..6,
        seed in any::<u64>(),
    ) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut log = Log::new();
            for (id, second, status) in &before {
                push(&mut log, partition_of(*id, 2), *id, *status, *second);
            }
            for (id, second, status) in &after {
                push(&mut log, partition_of(*id, 4), *id, *status, *second);
            }
            let adapters = Adapters::memory(1);
            let memory = adapters.memory_backend().unwrap().clone();
            let handler = handler(&adapters);
            let mut seen: BTreeMap<String, tidemark::domain::VersionKey> = BTreeMap::new();
            deliver(&handler, &log, batch_size, &mut rng, || {
                for (id, row) in memory.status.snapshot() {
                    if let Some(before) = seen.get(&id) {
                        prop_assert!(row.version >= *before, "{} went back", id);
                    }
                    seen.insert(id, row.version);
                }
                Ok(())
            })
            .await?;
            let rows = memory.status.snapshot();
            for (id, (_, offset, p, status)) in newest_of(&log) {
                let row = &rows[&id];
                prop_assert_eq!(&row.status, &status, "{}", id);
                prop_assert_eq!(row.shard_id.clone(), format!("events-{p}"));
                prop_assert_eq!(&row.sequence_number, &sequence_of(i64::from(p), offset).unwrap());
            }
            Ok(())
        })?;
    }
}

/// The tie-break the repartition changes: two events of one id at the same instant, the later
/// one on the new partition at a lower offset. The one with the higher offset wins, although it
/// was produced first: offsets of two partitions do not order them.
#[tokio::test]
async fn after_a_repartition_a_tie_in_event_time_goes_to_the_higher_offset_not_the_later_event() {
    let mut log = Log::new();
    for _ in 0..5 {
        push(&mut log, 0, 1, 0, 10); // earlier traffic on the old partition: offsets 0..4
    }
    push(&mut log, 0, 1, 1, 30); // "s1" at :30, offset 5 of the old partition
    push(&mut log, 3, 1, 2, 30); // later, "s2" at :30 too, offset 0 of the new partition
    let adapters = Adapters::memory(1);
    let memory = adapters.memory_backend().unwrap().clone();
    let mut rng = fastrand::Rng::with_seed(1);
    deliver(&handler(&adapters), &log, 10, &mut rng, || Ok(()))
        .await
        .unwrap();
    assert_eq!(memory.status.snapshot()["id-1"].status, "s1");
}
