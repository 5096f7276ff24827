//! Property test: a snapshot of STATUS taken at a random moment while the processor keeps
//! writing (redelivered batches, crashes before a checkpoint, rows changing between the scan's
//! pages), then more events; loading it into an empty table and applying only the records after
//! its positions (from the archive, then what the stream still holds) rebuilds exactly the live
//! STATUS. The same for the status view, whose snapshot keeps only the entries: its counters
//! and lists are made again when the entries are loaded, and must equal the live ones. Snapshots
//! that cannot be used, and pruning: snapshot_archive.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use proptest::prelude::*;
use support::{put_event, read_batch, row_states, snapshot_source};
use tidemark::adapters::memory::{MemoryBackend, MemoryStatusStore, MemoryStatusView};
use tidemark::adapters::Adapters;
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::views::status::StatusView;
use tidemark::consumers::{CheckpointedConsumer, Consumer};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::status_view::ViewEntry;
use tidemark::domain::{EventTime, FixedClock, Limits};
use tidemark::ports::*;
use tidemark::run::rebuild::{rebuild, rebuild_from_archive, ArchiveRebuild, RebuildProgress};
use tidemark::run::snapshot::{
    find_snapshot, load_snapshot, load_view_snapshot, take_snapshot, StatusRows, StatusViewEntries,
    STATUS, STATUS_VIEW,
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
                let timestamp = base().saturating_add(Duration::from_millis(u64::from(*millis)));
                let id = format!("id-{id}");
                put_event(&memory.stream, &id, STATUSES[*status], timestamp, *copies).await;
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
        let batch = read_batch(&memory.stream, &shard, &from, rng.usize(1..=5)).await;
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
            let pending = read_batch(
                &memory.stream,
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
                    snapshot_source(&memory, processed.as_ref(), &StatusRows(&scan)).await,
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
    let live = row_states(memory.status.snapshot());

    // Snapshot + the tail.
    let found = find_snapshot(memory.archive.as_ref(), STATUS, "latest")
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
    prop_assert_eq!(row_states(rebuilt.snapshot()), live);
    Ok(())
}

/// The status view's scan in pages of two entries, with a view batch applied and checkpointed
/// before each page: entries, counters and checkpoints move while the snapshot reads.
struct BusyEntries {
    view: Arc<MemoryStatusView>,
    between_pages: Mutex<Vec<(String, Vec<StreamRecord>)>>,
    consumer: CheckpointedConsumer,
}

#[async_trait]
impl StatusViewScanner for BusyEntries {
    async fn entry_page(&self, start: Option<&str>) -> Result<EntryPage, StoreError> {
        let next_batch = self.between_pages.lock().unwrap().pop();
        if let Some((shard, batch)) = next_batch {
            let _ = self.consumer.run_batch(&shard, &batch).await;
        }
        let mut page = self.view.entry_page(start).await?;
        if page.entries.len() > 2 {
            page.entries.truncate(2);
            page.next = page.entries.last().map(|e| e.id.clone());
        }
        Ok(page)
    }
}

/// What the view must be rebuilt to: every entry, and every counter that is not zero.
fn view_state(view: &MemoryStatusView) -> (Vec<ViewEntry>, BTreeMap<String, i64>) {
    let mut entries = view.all_entries();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    let counters = view
        .counters()
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| (format!("{}/{}", k.shard_id, k.status), n))
        .collect();
    (entries, counters)
}

async fn run_view_case(
    before: Vec<Produced>,
    after: Vec<Produced>,
    chaos: Chaos,
) -> Result<(), TestCaseError> {
    let memory = MemoryBackend::new(chaos.shards);
    produce(&memory, &before).await;
    let adapters = Adapters::in_memory(memory.clone());
    let clock = Arc::new(FixedClock(base().saturating_add(Duration::from_secs(60))));
    let view_of =
        |store: Arc<dyn StatusViewWriter>| StatusView::new(store, Limits::default(), clock.clone());
    let live_view: Arc<dyn Consumer> = Arc::new(view_of(memory.status_view.clone()));
    let view_checkpoints = adapters.checkpoints_of(ConsumerName::STATUS_VIEW);
    let viewing = CheckpointedConsumer::new(live_view.clone(), view_checkpoints.writer.clone());
    let archiver: Arc<dyn Consumer> = Arc::new(Archiver::new(
        memory.archive.clone(),
        None,
        Limits::default(),
        clock.clone(),
    ));
    let archived = adapters.checkpoints_of(ConsumerName::ARCHIVER);
    let archiving = CheckpointedConsumer::new(archiver.clone(), archived.writer.clone());
    let mut rng = fastrand::Rng::with_seed(chaos.seed);

    let mut snapshot = None;
    for n in 0..60 {
        if n == chaos.snapshot_round {
            let shard = "shardId-000000000000";
            let pending =
                read_batch(&memory.stream, shard, &StartPosition::TrimHorizon, 1000).await;
            let batches: Vec<_> = pending
                .chunks(2)
                .map(|c| (shard.to_owned(), c.to_vec()))
                .rev()
                .collect();
            let scan = BusyEntries {
                view: memory.status_view.clone(),
                between_pages: Mutex::new(batches),
                consumer: CheckpointedConsumer::new(
                    live_view.clone(),
                    view_checkpoints.writer.clone(),
                ),
            };
            let rows = StatusViewEntries(&scan);
            let source = snapshot_source(&memory, view_checkpoints.reader.as_ref(), &rows).await;
            snapshot = Some(take_snapshot(source, clock.0, "v").await.unwrap());
            produce(&memory, &after).await;
        }
        let chaotic = (n < 20).then_some(&chaos);
        let reader = view_checkpoints.reader.as_ref();
        let a = round(
            &memory,
            live_view.as_ref(),
            &viewing,
            reader,
            chaotic,
            &mut rng,
        )
        .await;
        let b = round(
            &memory,
            archiver.as_ref(),
            &archiving,
            archived.reader.as_ref(),
            None,
            &mut rng,
        )
        .await;
        if !a && !b && n > chaos.snapshot_round && n >= 20 {
            break;
        }
    }
    let manifest = snapshot.expect("taken");
    for c in archived.reader.list().await.unwrap() {
        memory.stream.trim_through(&c.shard_id, &c.sequence_number);
    }
    let found = find_snapshot(memory.archive.as_ref(), STATUS_VIEW, "latest")
        .await
        .unwrap();
    prop_assert_eq!(&found, &manifest);
    // Loading a STATUS loader with it is refused: it is another view's.
    prop_assert!(load_snapshot(
        memory.archive.as_ref(),
        &manifest,
        &MemoryStatusStore::default()
    )
    .await
    .is_err());
    let rebuilt = Arc::new(MemoryStatusView::default());
    let rebuilding = view_of(rebuilt.clone());
    let loaded = load_view_snapshot(memory.archive.as_ref(), &manifest, &rebuilding)
        .await
        .unwrap();
    prop_assert_eq!(loaded, manifest.rows);
    let mut progress = RebuildProgress::after_snapshot(&manifest).unwrap();
    rebuild_from_archive(
        ArchiveRebuild::new(memory.archive.as_ref(), &rebuilding)
            .after_positions(manifest.positions().unwrap()),
        &mut progress,
    )
    .await
    .unwrap();
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
    prop_assert_eq!(view_state(&rebuilt), view_state(&memory.status_view));
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

    #[test]
    fn a_snapshot_of_the_status_view_and_the_records_after_it_rebuild_the_view(
        before in proptest::collection::vec(produced(), 1..30),
        after in proptest::collection::vec(produced(), 0..30),
        chaos in chaos(),
    ) {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
            .block_on(run_view_case(before, after, chaos))?;
    }
}
