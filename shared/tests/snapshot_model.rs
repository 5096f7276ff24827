//! Property test: a snapshot of STATUS taken at a random moment while the processor keeps
//! writing (redelivered batches, crashes before a checkpoint, rows changing between the scan's
//! pages), then more events; loading it into an empty table and applying only the records after
//! its positions (from the archive, then what the stream still holds) rebuilds exactly the live
//! STATUS. A snapshot whose rows were altered or cut short is refused, naming why, and the
//! rebuild from the whole archive still works.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use proptest::prelude::*;
use tidemark::adapters::memory::{MemoryBackend, MemoryStatusStore};
use tidemark::adapters::Adapters;
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::{CheckpointedConsumer, Consumer};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::snapshot::{SnapshotError, SnapshotManifest};
use tidemark::domain::{parse_event, EventTime, FixedClock, Limits};
use tidemark::ports::*;
use tidemark::run::rebuild::{rebuild, rebuild_from_archive, ArchiveRebuild, RebuildProgress};
use tidemark::run::snapshot::{
    find_snapshot, list_snapshots, load_snapshot, take_snapshot, SnapshotRunError, SnapshotSource,
};

const BASE: &str = "2026-12-04T00:00:00Z";
const STATUSES: [&str; 4] = ["created", "shipped", "delivered", "failed"];

fn base() -> EventTime {
    EventTime::parse_rfc3339(BASE).unwrap()
}

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
        10 => (0u8..12, 0usize..STATUSES.len(), 0u16..40, 1u8..=2)
            .prop_map(|(id, status, millis, copies)| Produced::Event { id, status, millis, copies }),
        1 => Just(Produced::Poison),
    ]
}

async fn produce(memory: &MemoryBackend, records: &[Produced]) {
    for record in records {
        match record {
            Produced::Event {
                id,
                status,
                millis,
                copies,
            } => {
                let json = serde_json::json!({
                    "id": format!("id-{id}"),
                    "status": STATUSES[*status],
                    "timestamp": base().saturating_add(Duration::from_millis(u64::from(*millis))).to_rfc3339(),
                })
                .to_string();
                let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
                let event = parse_event(raw, None, base(), &Limits::default()).unwrap();
                for _ in 0..*copies {
                    memory
                        .stream
                        .put(&OutgoingRecord {
                            partition_key: event.id.clone(),
                            data: Bytes::from(event.encode().unwrap()),
                        })
                        .await
                        .unwrap();
                }
            }
            Produced::Poison => {
                memory
                    .stream
                    .put_raw("poison", Bytes::from_static(b"not json"))
                    .unwrap();
            }
        }
    }
}

/// STATUS's scan in pages of two rows, with a processor batch applied and checkpointed before
/// each page: the snapshot's rows and the checkpoints move while it reads.
struct BusyScan {
    status: Arc<MemoryStatusStore>,
    between_pages: Mutex<Vec<(String, Vec<StreamRecord>)>>,
    consumer: CheckpointedConsumer,
}

#[async_trait]
impl StatusScanner for BusyScan {
    async fn scan_page(&self, start: Option<&str>) -> Result<StatusPage, StoreError> {
        let next_batch = self.between_pages.lock().unwrap().pop();
        if let Some((shard, batch)) = next_batch {
            let _ = self.consumer.run_batch(&shard, &batch).await;
        }
        let mut page = self.status.scan_page(start).await?;
        if page.rows.len() > 2 {
            page.rows.truncate(2);
            page.next = page.rows.last().map(|r| r.id.clone());
        }
        Ok(page)
    }
}

/// A snapshot of `status` with the processor's `checkpoints` into the backend's archive.
async fn source<'a>(
    memory: &'a MemoryBackend,
    checkpoints: &'a dyn CheckpointReader,
    status: &'a dyn StatusScanner,
) -> SnapshotSource<'a> {
    SnapshotSource {
        checkpoints,
        shards: memory
            .stream
            .list_shards()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.shard_id)
            .collect(),
        status,
        archive: memory.archive.as_ref(),
    }
}

#[derive(Clone, Debug)]
struct Chaos {
    shards: usize,
    snapshot_round: usize,
    redeliver: u32,
    crash: u32,
    seed: u64,
}

fn chaos() -> impl Strategy<Value = Chaos> {
    (1usize..=3, 0usize..8, 0u32..400, 0u32..300, any::<u64>()).prop_map(
        |(shards, snapshot_round, redeliver, crash, seed)| Chaos {
            shards,
            snapshot_round,
            redeliver,
            crash,
            seed,
        },
    )
}

async fn read(
    memory: &MemoryBackend,
    shard: &str,
    from: &StartPosition,
    size: usize,
) -> Vec<StreamRecord> {
    let it = memory.stream.shard_iterator(shard, from).await.unwrap();
    memory.stream.get_records(&it, size).await.unwrap().records
}

/// One batch of each shard through `consumer` from its checkpoint; whether any shard moved.
async fn round(
    memory: &MemoryBackend,
    raw: &dyn Consumer,
    consumer: &CheckpointedConsumer,
    checkpoints: &dyn CheckpointReader,
    chaos: Option<&Chaos>,
    rng: &mut fastrand::Rng,
) -> bool {
    let mut moved = false;
    for shard in memory.stream.list_shards().await.unwrap() {
        let shard = shard.shard_id;
        let from = match checkpoints.get(&shard).await.unwrap() {
            Some(c) => StartPosition::AfterSequence(c.sequence_number),
            None => StartPosition::TrimHorizon,
        };
        let batch = read(memory, &shard, &from, rng.usize(1..=5)).await;
        if batch.is_empty() {
            continue;
        }
        moved = true;
        match chaos {
            Some(c) if rng.u32(0..1000) < c.crash => {
                let _ = raw.consume(&shard, &batch).await; // crashed before its checkpoint
            }
            _ => {
                let _ = consumer.run_batch(&shard, &batch).await;
                if chaos.is_some_and(|c| rng.u32(0..1000) < c.redeliver) {
                    let _ = consumer.run_batch(&shard, &batch).await;
                }
            }
        }
    }
    moved
}

fn comparable(
    rows: impl IntoIterator<Item = (String, StatusRow)>,
) -> BTreeMap<String, (String, String, Option<String>)> {
    rows.into_iter()
        .map(|(id, r)| (id, (r.status, r.version.0, r.data)))
        .collect()
}

async fn run_case(
    before: Vec<Produced>,
    after: Vec<Produced>,
    chaos: Chaos,
) -> Result<(), TestCaseError> {
    let memory = MemoryBackend::new(chaos.shards);
    produce(&memory, &before).await;
    let adapters = Adapters::in_memory(memory.clone());
    let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));
    let processor: Arc<dyn Consumer> =
        Arc::new(adapters.processor(Default::default(), clock.clone()));
    let processing = CheckpointedConsumer::new(processor.clone(), adapters.checkpoint_writer());
    let archiver: Arc<dyn Consumer> = Arc::new(Archiver::new(
        memory.archive.clone(),
        None,
        Limits::default(),
        clock.clone(),
    ));
    let archiving = CheckpointedConsumer::new(
        archiver.clone(),
        adapters.checkpoints_of(ConsumerName::ARCHIVER).writer,
    );
    let archived = adapters.checkpoints_of(ConsumerName::ARCHIVER).reader;
    let processed = adapters.checkpoint_reader();
    let mut rng = fastrand::Rng::with_seed(chaos.seed);

    let mut snapshot = None;
    for n in 0..60 {
        if n == chaos.snapshot_round {
            // Batches the processor applies while the snapshot reads: the next ones of shard 0.
            let pending = read(
                &memory,
                "shardId-000000000000",
                &StartPosition::TrimHorizon,
                1000,
            )
            .await;
            let batches: Vec<_> = pending
                .chunks(2)
                .map(|c| ("shardId-000000000000".to_owned(), c.to_vec()))
                .rev()
                .collect();
            let scan = BusyScan {
                status: memory.status.clone(),
                between_pages: Mutex::new(batches),
                consumer: CheckpointedConsumer::new(
                    processor.clone(),
                    adapters.checkpoint_writer(),
                ),
            };
            snapshot = Some(
                take_snapshot(
                    source(&memory, processed.as_ref(), &scan).await,
                    clock.0,
                    "t",
                )
                .await
                .unwrap(),
            );
            produce(&memory, &after).await;
        }
        let chaotic = (n < 20).then_some(&chaos);
        let a = round(
            &memory,
            processor.as_ref(),
            &processing,
            processed.as_ref(),
            chaotic,
            &mut rng,
        )
        .await;
        let b = round(
            &memory,
            archiver.as_ref(),
            &archiving,
            archived.as_ref(),
            None,
            &mut rng,
        )
        .await;
        if !a && !b && n > chaos.snapshot_round && n >= 20 {
            break;
        }
    }
    let manifest = snapshot.expect("taken");
    // The stream keeps only what the archiver has not taken, as serve and a short retention do.
    for (shard, c) in archived
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.shard_id.clone(), c))
    {
        memory.stream.trim_through(&shard, &c.sequence_number);
    }
    let live = comparable(memory.status.snapshot());

    // Snapshot + the tail.
    let found = find_snapshot(memory.archive.as_ref(), "latest")
        .await
        .unwrap();
    prop_assert_eq!(&found, &manifest);
    let rebuilt = Arc::new(MemoryStatusStore::default());
    let loaded = load_snapshot(memory.archive.as_ref(), &manifest, rebuilt.as_ref())
        .await
        .unwrap();
    prop_assert_eq!(loaded, manifest.rows);
    let rebuilding = adapters
        .clone()
        .with_status_writer(rebuilt.clone())
        .processor(Default::default(), clock.clone());
    let mut progress = RebuildProgress::after_snapshot(&manifest).unwrap();
    let from_archive = rebuild_from_archive(
        ArchiveRebuild::new(memory.archive.as_ref(), &rebuilding)
            .after_positions(manifest.positions().unwrap()),
        &mut progress,
    )
    .await
    .unwrap();
    prop_assert!(
        from_archive.corrupt_objects.is_empty(),
        "{:?}",
        from_archive.corrupt_objects
    );
    rebuild(
        memory.stream.as_ref(),
        &rebuilding,
        Default::default(),
        &mut progress,
        |_| Ok(()),
        |_, _| {},
    )
    .await
    .unwrap();
    prop_assert_eq!(comparable(rebuilt.snapshot()), live);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_and_the_records_after_it_rebuild_status(
        before in proptest::collection::vec(produced(), 1..30),
        after in proptest::collection::vec(produced(), 0..30),
        chaos in chaos(),
    ) {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
            .block_on(run_case(before, after, chaos))?;
    }
}

/// A small settled pipeline and a snapshot of it.
async fn settled_with_snapshot() -> (MemoryBackend, Adapters, SnapshotManifest) {
    let memory = MemoryBackend::new(2);
    let records: Vec<Produced> = (0..12)
        .map(|i| Produced::Event {
            id: i % 5,
            status: usize::from(i) % STATUSES.len(),
            millis: u16::from(i),
            copies: 1,
        })
        .collect();
    produce(&memory, &records).await;
    let adapters = Adapters::in_memory(memory.clone());
    let clock = Arc::new(FixedClock(base()));
    let processing = CheckpointedConsumer::new(
        Arc::new(adapters.processor(Default::default(), clock.clone())),
        adapters.checkpoint_writer(),
    );
    let checkpoints = adapters.checkpoint_reader();
    let mut rng = fastrand::Rng::with_seed(7);
    let raw = adapters.processor(Default::default(), clock.clone());
    while round(
        &memory,
        &raw,
        &processing,
        checkpoints.as_ref(),
        None,
        &mut rng,
    )
    .await
    {}
    let manifest = take_snapshot(
        source(&memory, checkpoints.as_ref(), memory.status.as_ref()).await,
        clock.0,
        "a",
    )
    .await
    .unwrap();
    (memory, adapters, manifest)
}

#[tokio::test]
async fn an_altered_or_truncated_snapshot_is_refused_before_any_row_is_written() {
    let (memory, _, manifest) = settled_with_snapshot().await;
    assert_eq!(manifest.rows, 5);
    let body = memory.archive.get(&manifest.body_key).await.unwrap();
    let mut flipped = body.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let truncated = body.slice(..body.len() - 10);
    for (what, bad) in [("altered", Bytes::from(flipped)), ("truncated", truncated)] {
        memory.archive.put(&manifest.body_key, bad).await.unwrap();
        let target = MemoryStatusStore::default();
        let error = load_snapshot(memory.archive.as_ref(), &manifest, &target)
            .await
            .unwrap_err();
        assert!(
            matches!(error, SnapshotRunError::Snapshot(SnapshotError::Corrupt(_))),
            "{what}: {error}"
        );
        assert!(error.to_string().contains("SHA-256"), "{what}: {error}");
        assert!(target.snapshot().is_empty(), "{what}: rows were written");
    }
}

#[tokio::test]
async fn an_unreadable_manifest_is_listed_with_its_reason_and_latest_skips_it() {
    let (memory, _, manifest) = settled_with_snapshot().await;
    let mut newer = serde_json::to_value(&manifest).unwrap();
    newer["id"] = "29991231T000000Z-z".into();
    newer["format"] = 2.into();
    let key = SnapshotManifest::manifest_key("status", "29991231T000000Z-z");
    memory
        .archive
        .put(&key, Bytes::from(newer.to_string()))
        .await
        .unwrap();
    memory
        .archive
        .put(
            &SnapshotManifest::manifest_key("status", "29991231T000001Z-y"),
            Bytes::from_static(b"{not json"),
        )
        .await
        .unwrap();
    let listed = list_snapshots(memory.archive.as_ref()).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let errors: Vec<String> = listed
        .iter()
        .filter_map(|e| e.as_ref().err().map(|(k, e)| format!("{k}: {e}")))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("format 2")), "{errors:?}");
    // The newest readable one is the real snapshot; the broken one, asked for by name, says why.
    let latest = find_snapshot(memory.archive.as_ref(), "latest")
        .await
        .unwrap();
    assert_eq!(latest, manifest);
    let named = find_snapshot(memory.archive.as_ref(), "29991231T000000Z-z")
        .await
        .unwrap_err();
    assert!(named.to_string().contains("format 2"), "{named}");
    assert!(matches!(
        find_snapshot(memory.archive.as_ref(), "nope").await,
        Err(SnapshotRunError::NotFound(_))
    ));
}

/// Without a snapshot (or after refusing one) the whole archive still rebuilds STATUS, and the
/// snapshot's own objects in the archive are not read as archive objects.
#[tokio::test]
async fn the_whole_archive_rebuilds_status_beside_a_snapshot() {
    let (memory, adapters, _) = settled_with_snapshot().await;
    let clock = Arc::new(FixedClock(base()));
    let archiving = CheckpointedConsumer::new(
        Arc::new(Archiver::new(
            memory.archive.clone(),
            None,
            Limits::default(),
            clock.clone(),
        )),
        adapters.checkpoints_of(ConsumerName::ARCHIVER).writer,
    );
    let archived = adapters.checkpoints_of(ConsumerName::ARCHIVER).reader;
    let raw = Archiver::new(
        memory.archive.clone(),
        None,
        Limits::default(),
        clock.clone(),
    );
    let mut rng = fastrand::Rng::with_seed(3);
    while round(&memory, &raw, &archiving, archived.as_ref(), None, &mut rng).await {}
    let rebuilt = Arc::new(MemoryStatusStore::default());
    let rebuilding = adapters
        .clone()
        .with_status_writer(rebuilt.clone())
        .processor(Default::default(), clock);
    let report = rebuild_from_archive(
        ArchiveRebuild::new(memory.archive.as_ref(), &rebuilding),
        &mut RebuildProgress::default(),
    )
    .await
    .unwrap();
    assert!(
        report.corrupt_objects.is_empty(),
        "{:?}",
        report.corrupt_objects
    );
    assert_eq!(
        comparable(rebuilt.snapshot()),
        comparable(memory.status.snapshot())
    );
}
