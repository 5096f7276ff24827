//! Property tests: the processor, driven like Lambda's event source mapping over an in-memory
//! stream, through random order, duplicates, whole-batch redelivery, injected write failures
//! (before the write, and after it took effect: a timeout) and crashes between the STATUS
//! writes and the OPLOG write, checked against a simple model:
//! STATUS holds the newest accepted event per id, OPLOG never lies and never moves backwards,
//! every poison record is dead-lettered, and nothing valid is.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tidemark::adapters::faults::{Faults, Faulty, RefusesRows};
use tidemark::adapters::memory::{MemoryBackend, MemoryStream};
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::{
    parse_event, EventTime, FixedClock, Limits, SequenceNumber, Version, VersionKey,
};
use tidemark::ports::*;
use time::format_description::well_known::Rfc3339;
use time::UtcOffset;

const BASE: &str = "2024-01-01T00:00:00Z";

fn base() -> EventTime {
    EventTime::parse_rfc3339(BASE).unwrap()
}

/// One record a producer puts on the stream.
#[derive(Clone, Debug)]
enum Produced {
    Event {
        id: u8,
        millis: u16,
        offset_hours: i8,
        with_data: bool,
        copies: u8,
        /// STATUS refuses this event's row for good (as DynamoDB refuses an item over 400 KB):
        /// a record that decodes but can never be applied.
        refused: bool,
    },
    Poison(u8),
}

fn produced() -> impl Strategy<Value = Produced> {
    prop_oneof![
        12 => (0u8..24, 0u16..40, prop::sample::select(vec![-5i8, 0, 2]), any::<bool>(), 1u8..=3, prop::bool::weighted(0.08))
            .prop_map(|(id, millis, offset_hours, with_data, copies, refused)| Produced::Event { id, millis, offset_hours, with_data, copies, refused }),
        1 => (0u8..4).prop_map(Produced::Poison),
    ]
}

/// How the consumer misbehaves.
#[derive(Clone, Debug)]
struct Chaos {
    shards: usize,
    write_concurrency: usize,
    status_failure_rate: f64,
    deadletter_failure_rate: f64,
    checkpoint_failure_rate: f64,
    /// Per mille chance, after a batch, of redelivering the same batch whole.
    redeliver_per_mille: u32,
    /// Per mille chance, after a batch, of a crash: the consumer restarts from OPLOG.
    crash_per_mille: u32,
    seed: u64,
}

fn chaos() -> impl Strategy<Value = Chaos> {
    (
        1usize..=4,
        1usize..=8,
        0.0f64..0.4,
        0.0f64..0.4,
        0.0f64..0.4,
        0u32..300,
        0u32..200,
        any::<u64>(),
    )
        .prop_map(
            |(shards, write_concurrency, s, d, c, redeliver_per_mille, crash_per_mille, seed)| {
                Chaos {
                    shards,
                    write_concurrency,
                    status_failure_rate: s,
                    deadletter_failure_rate: d,
                    checkpoint_failure_rate: c,
                    redeliver_per_mille,
                    crash_per_mille,
                    seed,
                }
            },
        )
}

fn poison_bytes(kind: u8) -> Bytes {
    Bytes::from_static(match kind {
        0 => b"not json at all",
        1 => br#"{"id":"","status":"s","timestamp":"2024-01-01T00:00:00Z","received_at":"2024-01-01T00:00:00Z"}"#,
        2 => br#"{"id":"x","status":"s","timestamp":"yesterday","received_at":"2024-01-01T00:00:00Z"}"#,
        _ => &[0xff, 0x00, 0x12],
    })
}

/// An accepted event as the model sees it: id, version, status, and whether STATUS refuses it.
type ModelEvent = (String, Version, String, bool);

/// What was put: per shard, in order, each record's sequence number and its event (None: poison).
struct Accepted {
    by_shard: BTreeMap<String, Vec<(SequenceNumber, Option<ModelEvent>)>>,
}

impl Accepted {
    /// The model: the newest version per id over every accepted event STATUS can hold.
    fn newest(&self) -> HashMap<String, (Version, String)> {
        let mut newest: HashMap<String, (Version, String)> = HashMap::new();
        for (_, event) in self.by_shard.values().flatten() {
            if let Some((id, version, status, false)) = event {
                let entry = newest
                    .entry(id.clone())
                    .or_insert_with(|| (version.clone(), status.clone()));
                if *version > entry.0 {
                    *entry = (version.clone(), status.clone());
                }
            }
        }
        newest
    }
}

async fn produce(stream: &MemoryStream, records: &[Produced]) -> Accepted {
    let received_at = base();
    let mut by_shard: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for record in records {
        match record {
            Produced::Event {
                id,
                millis,
                offset_hours,
                with_data,
                copies,
                refused,
            } => {
                let instant = time::OffsetDateTime::parse(BASE, &Rfc3339).unwrap()
                    - time::Duration::milliseconds(i64::from(*millis));
                let local = instant.to_offset(UtcOffset::from_hms(*offset_hours, 0, 0).unwrap());
                let data = if *with_data { r#","data":{"n":1}"# } else { "" };
                let mark = if *refused { REFUSED } else { "" };
                let status = format!("{mark}s{millis}-{}", fastrand::u32(..));
                let json = format!(
                    r#"{{"id":"id-{id}","status":"{status}","timestamp":"{}"{data}}}"#,
                    local.format(&Rfc3339).unwrap()
                );
                let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
                let event = parse_event(raw, None, received_at, &Limits::default()).unwrap();
                // A duplicate is the same event put again, as a retrying producer does.
                for _ in 0..*copies {
                    let ack = stream
                        .put(&OutgoingRecord {
                            partition_key: event.id.clone(),
                            data: Bytes::from(event.encode().unwrap()),
                        })
                        .await
                        .unwrap();
                    let seq = ack.sequence_number.clone();
                    let version = Version::new(event.event_time, seq.clone());
                    by_shard.entry(ack.shard_id).or_default().push((
                        seq,
                        Some((event.id.clone(), version, event.status.clone(), *refused)),
                    ));
                }
            }
            Produced::Poison(kind) => {
                let ack = stream
                    .put_raw(&format!("poison-{kind}"), poison_bytes(*kind))
                    .unwrap();
                let seq = ack.sequence_number.clone();
                by_shard.entry(ack.shard_id).or_default().push((seq, None));
            }
        }
    }
    Accepted { by_shard }
}

/// Marks the statuses of events STATUS refuses.
const REFUSED: &str = "refused-";

struct World {
    memory: MemoryBackend,
    faults: [Arc<Faults>; 3],
    /// The processor and its (faulty) OPLOG, run the way the mapping's loop runs them.
    mapping: CheckpointedConsumer,
}

impl World {
    fn new(chaos: &Chaos) -> Self {
        let memory = MemoryBackend::new(chaos.shards);
        let faults = [
            Faults::new(chaos.seed),
            Faults::new(chaos.seed ^ 1),
            Faults::new(chaos.seed ^ 2),
        ];
        let refusing = RefusesRows {
            inner: memory.status.clone(),
            refuse: |row| row.status.starts_with(REFUSED),
        };
        let adapters = Adapters::in_memory(memory.clone())
            .with_status_writer(Arc::new(Faulty::new(refusing, &faults[0])))
            .with_checkpoint_writer(Arc::new(Faulty::new(
                memory.checkpoints.clone(),
                &faults[1],
            )))
            .with_dead_letter_writer(Arc::new(Faulty::new(
                memory.dead_letters.clone(),
                &faults[2],
            )));
        let processor = adapters.processor(
            ProcessorSettings {
                write_concurrency: chaos.write_concurrency,
                ..ProcessorSettings::default()
            },
            // Well after the events, inside no skew window that matters for decoding.
            Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60)))),
        );
        Self {
            mapping: CheckpointedConsumer::new(Arc::new(processor), adapters.checkpoint_writer()),
            memory,
            faults,
        }
    }

    fn set_chaos(&self, chaos: Option<&Chaos>) {
        let rates = chaos.map_or([0.0; 3], |c| {
            [
                c.status_failure_rate,
                c.checkpoint_failure_rate,
                c.deadletter_failure_rate,
            ]
        });
        for (faults, rate) in self.faults.iter().zip(rates) {
            faults.set_failure_rate(rate);
            // And half as often, a write that took effect and answered an error (a timeout).
            faults.set_fail_after_rate(rate / 2.0);
        }
    }

    fn versions(&self) -> HashMap<String, VersionKey> {
        self.memory
            .status
            .snapshot()
            .into_iter()
            .map(|(id, row)| (id, row.version))
            .collect()
    }

    async fn checkpoint(&self, shard: &str) -> Option<SequenceNumber> {
        self.memory
            .checkpoints
            .get(shard)
            .await
            .unwrap()
            .map(|c| c.sequence_number)
    }

    /// The invariants that must hold after every batch, whatever failed.
    async fn check(
        &self,
        accepted: &Accepted,
        before: &HashMap<String, VersionKey>,
        checkpoints_before: &HashMap<String, Option<SequenceNumber>>,
    ) -> Result<(), TestCaseError> {
        let now = self.versions();
        for (id, old) in before {
            let new = now.get(id);
            prop_assert!(
                new.is_some_and(|n| n >= old),
                "STATUS of {id} went backwards or vanished"
            );
        }
        let letters: HashSet<String> = self
            .memory
            .dead_letters
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.sequence_number.as_str().to_owned())
            .collect();
        for (shard, records) in &accepted.by_shard {
            let checkpoint = self.checkpoint(shard).await;
            if let Some(Some(previous)) = checkpoints_before.get(shard) {
                prop_assert!(
                    checkpoint.as_ref().is_some_and(|c| c >= previous),
                    "OPLOG of {shard} moved backwards"
                );
            }
            let Some(checkpoint) = checkpoint else {
                continue;
            };
            // The checkpoint never lies: everything up to it is reflected.
            for (seq, event) in records.iter().filter(|(seq, _)| *seq <= checkpoint) {
                match event {
                    Some((id, version, _, false)) => prop_assert!(
                        now.get(id).is_some_and(|v| *v >= version.key()),
                        "OPLOG of {shard} at {checkpoint} claims {seq} of {id}, which STATUS does not reflect"
                    ),
                    Some((id, version, _, true)) => prop_assert!(
                        now.get(id).is_some_and(|v| *v >= version.key()) || letters.contains(seq.as_str()),
                        "OPLOG of {shard} at {checkpoint} claims refused {seq} of {id}, neither outdated nor dead-lettered"
                    ),
                    None => prop_assert!(letters.contains(seq.as_str()), "OPLOG claims poison {seq} not dead-lettered"),
                }
            }
        }
        Ok(())
    }
}

async fn read_batch(
    stream: &MemoryStream,
    shard: &str,
    from: &StartPosition,
    size: usize,
) -> Vec<StreamRecord> {
    let it = stream.shard_iterator(shard, from).await.unwrap();
    stream.get_records(&it, size).await.unwrap().records
}

async fn run_case(records: Vec<Produced>, chaos: Chaos) -> Result<(), TestCaseError> {
    let world = World::new(&chaos);
    let accepted = produce(&world.memory.stream, &records).await;
    let mut rng = fastrand::Rng::with_seed(chaos.seed);
    world.set_chaos(Some(&chaos));

    // Chaos for a bounded number of steps, then a calm drain: every shard to its end.
    let shards: Vec<String> = accepted.by_shard.keys().cloned().collect();
    let mut positions: HashMap<String, StartPosition> = shards
        .iter()
        .map(|s| (s.clone(), StartPosition::TrimHorizon))
        .collect();
    for step in 0..2_000 {
        let calm = step >= 1_000;
        if calm {
            world.set_chaos(None);
        }
        let mut progressed = false;
        for shard in &shards {
            let batch = read_batch(
                &world.memory.stream,
                shard,
                &positions[shard],
                rng.usize(1..=40),
            )
            .await;
            if batch.is_empty() {
                // A checkpoint write that failed on a shard's last batch leaves OPLOG behind
                // (never ahead). In the calm phase, restart such a shard from OPLOG, as a restart
                // of `serve` would: the replay changes nothing and brings OPLOG to the end.
                let last = accepted.by_shard[shard].last().map(|(s, _)| s.clone());
                let checkpoint = world.checkpoint(shard).await;
                if calm && checkpoint != last {
                    positions.insert(
                        shard.clone(),
                        checkpoint.map_or(StartPosition::TrimHorizon, StartPosition::AfterSequence),
                    );
                    progressed = true;
                }
                continue;
            }
            progressed = true;
            let before = world.versions();
            let mut checkpoints_before = HashMap::new();
            for s in &shards {
                checkpoints_before.insert(s.clone(), world.checkpoint(s).await);
            }
            let outcome = world.mapping.run_batch(shard, &batch).await;
            world.check(&accepted, &before, &checkpoints_before).await?;
            if let Some(failed) = &outcome.failure {
                prop_assert!(
                    batch.iter().any(|r| &r.sequence_number == failed),
                    "reported {failed} is not in the batch"
                );
            }
            if !calm && rng.u32(0..1000) < chaos.redeliver_per_mille {
                // Lambda redelivers the whole batch (a timeout, a lost response): no change.
                let before_again = world.versions();
                world.mapping.run_batch(shard, &batch).await;
                world
                    .check(&accepted, &before_again, &checkpoints_before)
                    .await?;
            }
            let next = if !calm && rng.u32(0..1000) < chaos.crash_per_mille {
                // A crash: the consumer restarts from the OPLOG checkpoint, as `serve` does.
                world
                    .checkpoint(shard)
                    .await
                    .map_or(StartPosition::TrimHorizon, StartPosition::AfterSequence)
            } else if let Some(failed) = outcome.failure {
                StartPosition::AtSequence(failed)
            } else {
                StartPosition::AfterSequence(batch.last().unwrap().sequence_number.clone())
            };
            positions.insert(shard.clone(), next);
        }
        if calm && !progressed {
            break;
        }
    }

    // The model: STATUS is the newest accepted event per id, and nothing else.
    let newest = accepted.newest();
    let rows = world.memory.status.snapshot();
    prop_assert_eq!(
        rows.len(),
        newest.len(),
        "ids in STATUS differ from ids accepted"
    );
    for (id, (version, status)) in &newest {
        let row = &rows[id];
        prop_assert_eq!(&row.version, &version.key(), "wrong version for {}", id);
        prop_assert_eq!(&row.status, status);
        prop_assert_eq!(&row.sequence_number, &version.sequence);
    }
    // Every poison record dead-lettered, nothing valid.
    let letters: HashSet<(String, String)> = world
        .memory
        .dead_letters
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.shard_id, l.sequence_number.as_str().to_owned()))
        .collect();
    let poison: HashSet<(String, String)> = accepted
        .by_shard
        .iter()
        .flat_map(|(shard, records)| {
            records
                .iter()
                .filter(|(_, e)| e.is_none())
                .map(move |(seq, _)| (shard.clone(), seq.as_str().to_owned()))
        })
        .collect();
    // Refused events: each one newer than its id's final row was set aside; no other one was.
    let rows = &rows;
    let refused_newer: HashSet<(String, String)> = accepted
        .by_shard
        .iter()
        .flat_map(|(shard, records)| {
            records.iter().filter_map(move |(seq, e)| match e {
                Some((id, version, _, true))
                    if rows.get(id).is_none_or(|row| row.version < version.key()) =>
                {
                    Some((shard.clone(), seq.as_str().to_owned()))
                }
                _ => None,
            })
        })
        .collect();
    let refused_any: HashSet<(String, String)> = accepted
        .by_shard
        .iter()
        .flat_map(|(shard, records)| {
            records
                .iter()
                .filter(|(_, e)| matches!(e, Some((_, _, _, true))))
                .map(move |(seq, _)| (shard.clone(), seq.as_str().to_owned()))
        })
        .collect();
    prop_assert!(
        poison.is_subset(&letters),
        "a poison record was not dead-lettered"
    );
    prop_assert!(
        refused_newer.is_subset(&letters),
        "a refused event newer than STATUS was lost"
    );
    let expected_at_most: HashSet<_> = poison.union(&refused_any).cloned().collect();
    prop_assert!(
        letters.is_subset(&expected_at_most),
        "a valid, applicable event was dead-lettered"
    );
    // Each shard's checkpoint ends at its last record.
    for (shard, records) in &accepted.by_shard {
        let checkpoint = world.checkpoint(shard).await;
        prop_assert_eq!(checkpoint.as_ref(), records.last().map(|(s, _)| s));
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// About 96 cases of up to 300 produced records (×1–3 copies): tens of thousands of events.
    #[test]
    fn status_and_oplog_match_the_model_under_chaos(records in prop::collection::vec(produced(), 1..300), chaos in chaos()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_case(records, chaos))?;
    }
}

/// Write economy: a fault-free batch costs one STATUS write per distinct id, one dead-letter
/// write per poison record, and one checkpoint write.
#[tokio::test]
async fn dynamodb_calls_per_batch_are_minimal() {
    let chaos = Chaos {
        shards: 1,
        write_concurrency: 16,
        status_failure_rate: 0.0,
        deadletter_failure_rate: 0.0,
        checkpoint_failure_rate: 0.0,
        redeliver_per_mille: 0,
        crash_per_mille: 0,
        seed: 3,
    };
    let world = World::new(&chaos);
    let mut records: Vec<Produced> = (0..1000)
        .map(|i| Produced::Event {
            id: (i % 10) as u8,
            millis: (i % 37) as u16,
            offset_hours: 0,
            with_data: false,
            copies: 1,
            refused: false,
        })
        .collect();
    records.push(Produced::Poison(0));
    records.push(Produced::Poison(1));
    produce(&world.memory.stream, &records).await;
    let batch = read_batch(
        &world.memory.stream,
        "shardId-000000000000",
        &StartPosition::TrimHorizon,
        10_000,
    )
    .await;
    assert_eq!(batch.len(), 1002);
    let outcome = world
        .mapping
        .run_batch("shardId-000000000000", &batch)
        .await;
    assert_eq!(outcome.failure, None);
    assert_eq!(world.memory.status.apply_calls(), 10);
    assert_eq!(world.memory.dead_letters.put_calls(), 2);
    assert_eq!(world.memory.checkpoints.advance_calls(), 1);
    assert_eq!(
        (
            outcome.report.applied,
            outcome.report.dead_lettered,
            outcome.report.distinct_ids
        ),
        (10, 2, 10)
    );
}

/// A failed write reports the lowest sequence number among that id's records, and the
/// checkpoint stops just below it.
/// STATUS failing for one id only, as a throttled partition would.
struct FailsOneId {
    inner: Arc<tidemark::adapters::memory::MemoryStatusStore>,
    id: &'static str,
}

#[async_trait::async_trait]
impl StatusWriter for FailsOneId {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        if row.id == self.id {
            return Err(StoreError::Throttled("this id's partition".into()));
        }
        self.inner.apply(row).await
    }
}

/// Ids in the batch: 2, 1, 3, 1. Only id 1 fails, so the answer must be id 1's lowest record
/// (the second of the batch): not the batch's first record (id 2's, applied), and not the
/// record it tried to write (id 1's newest, the fourth).
#[tokio::test]
async fn a_failed_id_is_reported_at_its_lowest_record() {
    let memory = MemoryBackend::new(1);
    let records: Vec<Produced> = [2u8, 1, 3, 1]
        .iter()
        .map(|&id| Produced::Event {
            id,
            millis: 0,
            offset_hours: 0,
            with_data: false,
            copies: 1,
            refused: false,
        })
        .collect();
    produce(&memory.stream, &records).await;
    let shard = "shardId-000000000000";
    let batch = read_batch(&memory.stream, shard, &StartPosition::TrimHorizon, 100).await;
    assert_eq!(batch.len(), 4);
    let processor = tidemark::consumers::processor::Processor::new(
        Arc::new(FailsOneId {
            inner: memory.status.clone(),
            id: "id-1",
        }),
        memory.dead_letters.clone(),
        ProcessorSettings::default(),
        Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60)))),
    );
    let mapping = CheckpointedConsumer::new(Arc::new(processor), memory.checkpoints.clone());
    let outcome = mapping.run_batch(shard, &batch).await;
    assert_eq!(outcome.failure.as_ref(), Some(&batch[1].sequence_number));
    // Only what lies below the failure is claimed: id 2's record.
    let checkpoint = memory.checkpoints.get(shard).await.unwrap();
    assert_eq!(
        checkpoint.map(|c| c.sequence_number),
        Some(batch[0].sequence_number.clone())
    );
    // The other ids were applied all the same.
    assert!(memory.status.get("id-2").await.unwrap().is_some());
    assert!(memory.status.get("id-3").await.unwrap().is_some());
    assert!(memory.status.get("id-1").await.unwrap().is_none());
}
