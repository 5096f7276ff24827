//! `tidemark bench-snapshot`: what a snapshot saves a rebuild. Records spread over 60 days of
//! arrival go through the processor (STATUS, OPLOG) and the archiver (an in-memory archive); at
//! 90 % a snapshot is taken; then STATUS is rebuilt twice into empty tables, from the whole
//! archive and from the snapshot plus the records after it, and both are compared with the live
//! one. Printed: snapshot time and size, and each rebuild's objects, records and time.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tidemark::adapters::memory::{MemoryBackend, MemoryDeadLetterStore, MemoryStatusStore};
use tidemark::adapters::Adapters;
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::processor::Processor;
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::{Clock, Limits, SystemClock};
use tidemark::ports::StatusRow;
use tidemark::run::rebuild::{
    rebuild_from_archive, ArchiveRebuild, RebuildProgress, RebuildReport,
};
use tidemark::run::snapshot::{load_snapshot, take_snapshot, SnapshotSource, StatusRows};

use super::bench_archive::records;
use super::fail;

#[derive(Args)]
pub struct BenchSnapshotArgs {
    /// Records archived.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    records: u32,
    /// Distinct ids among them.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    ids: u32,
}

/// How long the records' arrivals span: long enough that the archive holds far more than the
/// two weeks a rebuild from a snapshot reads.
const SPAN: Duration = Duration::from_secs(60 * 24 * 3600);
const BATCH: usize = 1_000;
const SHARD: &str = "shardId-000000000000";

pub async fn run(args: BenchSnapshotArgs) -> ExitCode {
    match bench(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn rows(store: &MemoryStatusStore) -> std::collections::BTreeMap<String, (String, String)> {
    store
        .snapshot()
        .into_iter()
        .map(|(id, row): (String, StatusRow)| (id, (row.status, row.version.0)))
        .collect()
}

fn processor_into(store: &Arc<MemoryStatusStore>) -> Processor {
    Processor::new(
        store.clone(),
        Arc::new(MemoryDeadLetterStore::default()),
        Default::default(),
        Arc::new(SystemClock),
    )
}

fn line(what: &str, report: &RebuildReport, elapsed: Duration, equal: bool) {
    println!(
        "| {what} | {} | {} | {:.1} s | {} |",
        report.objects,
        report.records,
        elapsed.as_secs_f64(),
        if equal { "equal to live" } else { "DIFFERS" }
    );
}

async fn bench(args: BenchSnapshotArgs) -> Result<(), String> {
    let mut records = records(args.records, args.ids).await?;
    let start = SystemClock.now().saturating_sub(SPAN);
    let step = SPAN.as_nanos() / records.len().max(1) as u128;
    for (n, record) in records.iter_mut().enumerate() {
        let offset = Duration::from_nanos(u64::try_from(step * n as u128).unwrap_or(u64::MAX));
        record.approximate_arrival = Some(start.saturating_add(offset));
    }
    let memory = MemoryBackend::new(1);
    let adapters = Adapters::in_memory(memory.clone());
    let clock = Arc::new(SystemClock);
    let processing = CheckpointedConsumer::new(
        Arc::new(adapters.processor(Default::default(), clock.clone())),
        adapters.checkpoint_writer(),
    );
    let archiver = Archiver::new(
        memory.archive.clone(),
        None,
        Limits::default(),
        clock.clone(),
    );
    let archiving = CheckpointedConsumer::new(
        Arc::new(archiver),
        adapters
            .checkpoints_of(tidemark::domain::progress::ConsumerName::ARCHIVER)
            .writer,
    );
    let at = records.len() * 9 / 10;
    let mut snapshot = None;
    for (n, batch) in records.chunks(BATCH).enumerate() {
        if (n + 1) * BATCH > at && snapshot.is_none() {
            let started = Instant::now();
            let checkpoints = adapters.checkpoint_reader();
            let source = SnapshotSource {
                checkpoints: checkpoints.as_ref(),
                shards: vec![SHARD.to_owned()],
                rows: &StatusRows(memory.status.as_ref()),
                archive: memory.archive.as_ref(),
            };
            let manifest = take_snapshot(source, SystemClock.now(), "bench")
                .await
                .map_err(|e| e.to_string())?;
            snapshot = Some((manifest, started.elapsed()));
        }
        for consumer in [&processing, &archiving] {
            if let Some(failed) = consumer.run_batch(SHARD, batch).await.failure {
                return Err(format!("a batch failed at {failed}"));
            }
        }
    }
    let (manifest, snapshot_time) = snapshot.ok_or("no snapshot was taken")?;
    let live = rows(&memory.status);
    println!(
        "{} records over {} ids, arrivals over 60 days; the snapshot at 90 %: {} rows, {} bytes \
         ({:.0} bytes per id), taken in {:.2} s ({:.1} s per million ids)",
        records.len(),
        args.ids,
        manifest.rows,
        manifest.body_bytes,
        manifest.body_bytes as f64 / manifest.rows.max(1) as f64,
        snapshot_time.as_secs_f64(),
        snapshot_time.as_secs_f64() * 1e6 / manifest.rows.max(1) as f64,
    );
    println!("| rebuild | archive objects read | records applied | time | result |");
    println!("| --- | --- | --- | --- | --- |");

    let whole = Arc::new(MemoryStatusStore::default());
    let started = Instant::now();
    let report = rebuild_from_archive(
        ArchiveRebuild::new(memory.archive.as_ref(), &processor_into(&whole)),
        &mut RebuildProgress::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    line(
        "the whole archive",
        &report,
        started.elapsed(),
        rows(&whole) == live,
    );

    let from_snapshot = Arc::new(MemoryStatusStore::default());
    let started = Instant::now();
    load_snapshot(memory.archive.as_ref(), &manifest, from_snapshot.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let loaded = started.elapsed();
    let mut progress = RebuildProgress::after_snapshot(&manifest).map_err(|e| e.to_string())?;
    let report = rebuild_from_archive(
        ArchiveRebuild::new(memory.archive.as_ref(), &processor_into(&from_snapshot))
            .after_positions(manifest.positions().map_err(|e| e.to_string())?),
        &mut progress,
    )
    .await
    .map_err(|e| e.to_string())?;
    line(
        &format!(
            "snapshot ({:.1} s to load) + the tail",
            loaded.as_secs_f64()
        ),
        &report,
        started.elapsed(),
        rows(&from_snapshot) == live,
    );
    Ok(())
}
