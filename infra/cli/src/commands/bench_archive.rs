//! `tidemark bench-archive`: what the archive costs and how fast a rebuild reads it back
//! (issue 12). The archiver writes 10,000 records (by default) in batches of 100, 1,000 and
//! 10,000 into a directory archive and an in-memory HISTORY, counting the S3 and DynamoDB calls
//! those batches make on AWS and the bytes stored; then `rebuild_from_archive` reads the
//! directory back into the in-memory STATUS and, with `--dynamodb-endpoint`, into a DynamoDB
//! table there (DynamoDB Local: `scripts/bench-archive` starts one).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::adapters::memory::{
    MemoryArchive, MemoryDeadLetterStore, MemoryHistoryStore, MemoryStatusStore, MemoryStream,
};
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::processor::Processor;
use tidemark::consumers::Consumer;
use tidemark::domain::{Clock, Event, Limits, SystemClock};
use tidemark::ports::{
    OutgoingRecord, ShardReader, StartPosition, StatusWriter, StreamRecord, StreamWriter,
};
use tidemark::run::rebuild::{rebuild_from_archive, ArchiveRebuild, RebuildProgress};

use super::fail;

/// BatchWriteItem takes 25 items per call.
const BATCH_WRITE_ITEMS: usize = 25;

#[derive(Args)]
pub struct BenchArchiveArgs {
    /// Records archived per run.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    records: u32,
    /// Distinct ids among them.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    ids: u32,
    /// A DynamoDB endpoint to rebuild into as well (DynamoDB Local, LocalStack).
    #[arg(long)]
    dynamodb_endpoint: Option<String>,
}

/// Records shaped like real status events: an order id, a status, a timestamp and ~80 bytes of
/// `data`, read back from a one-shard stream as the archiver gets them.
pub(crate) async fn records(count: u32, ids: u32) -> Result<Vec<StreamRecord>, String> {
    let stream = MemoryStream::new(1);
    let statuses = [
        "created",
        "packed",
        "shipped",
        "out_for_delivery",
        "delivered",
    ];
    for n in 0..count {
        let now = SystemClock.now();
        let data = format!(
            r#"{{"carrier":"ups","parcels":{},"depot":"DE-{:04}","note":"left at reception"}}"#,
            n % 5 + 1,
            n % 977
        );
        let event = Event {
            id: format!("order-{:08}", n % ids),
            status: statuses[(n as usize) % statuses.len()].to_owned(),
            timestamp: now.to_rfc3339(),
            event_time: now,
            data: Some(serde_json::value::RawValue::from_string(data).map_err(|e| e.to_string())?),
            received_at: now,
        };
        let data = event.encode().map_err(|e| e.to_string())?;
        stream
            .put(&OutgoingRecord {
                partition_key: event.id.clone(),
                data: data.into(),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    let shard = stream.list_shards().await.map_err(|e| e.to_string())?[0]
        .shard_id
        .clone();
    let mut iterator = stream
        .shard_iterator(&shard, &StartPosition::TrimHorizon)
        .await
        .map_err(|e| e.to_string())?;
    // GetRecords answers at most 10,000 records, as Kinesis does: page through.
    let mut records = Vec::with_capacity(count as usize);
    while records.len() < count as usize {
        let page = stream
            .get_records(&iterator, count as usize - records.len())
            .await
            .map_err(|e| e.to_string())?;
        if page.records.is_empty() {
            break;
        }
        records.extend(page.records);
        match page.next_iterator {
            Some(next) => iterator = next,
            None => break,
        }
    }
    Ok(records)
}

pub async fn run(args: BenchArchiveArgs) -> ExitCode {
    match bench(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn bench(args: BenchArchiveArgs) -> Result<(), String> {
    let records = records(args.records, args.ids).await?;
    let shard = "shardId-000000000000";
    let raw: usize = records.iter().map(|r| r.data.len()).sum();
    let dir = std::env::temp_dir().join(format!("tidemark-bench-archive-{}", std::process::id()));
    println!(
        "{} records over {} ids, {} bytes on the stream ({} per record)",
        records.len(),
        args.ids,
        raw,
        raw / records.len().max(1)
    );
    println!(
        "| batch size | S3 PUTs | HISTORY items | BatchWriteItem calls (computed, 25 items each) | OPLOG writes (computed, 1 per batch) | stored bytes | of raw | archiver time |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rebuild_from = None;
    for batch_size in [100usize, 1_000, 10_000] {
        let run_dir = dir.join(format!("batch-{batch_size}"));
        let _ = std::fs::remove_dir_all(&run_dir);
        let archive = Arc::new(MemoryArchive::in_directory(&run_dir).map_err(|e| e.to_string())?);
        let history = Arc::new(MemoryHistoryStore::default());
        let archiver = Archiver::new(
            archive.clone(),
            Some(history.clone()),
            Limits::default(),
            Arc::new(SystemClock),
        );
        let mut batch_write_calls = 0;
        let started = Instant::now();
        for batch in records.chunks(batch_size) {
            let outcome = archiver.consume(shard, batch).await;
            if let Some(failed) = outcome.failure {
                return Err(format!(
                    "archiving failed at {failed}: {:?}",
                    outcome.report.last_error
                ));
            }
            // Not counted: the in-memory HISTORY takes a batch in one call, and the DynamoDB
            // adapter is what splits it into BatchWriteItem calls of 25. Printed as computed.
            batch_write_calls += outcome.report.applied.div_ceil(BATCH_WRITE_ITEMS);
        }
        let elapsed = started.elapsed();
        let stored: usize = archive.sizes().iter().map(|(_, size)| size).sum();
        println!(
            "| {batch_size} | {} | {} | {batch_write_calls} | {} | {stored} | {:.1} % | {:.0} ms ({:.1} µs/record) |",
            archive.put_calls(),
            history.len(),
            records.len().div_ceil(batch_size),
            100.0 * stored as f64 / raw as f64,
            elapsed.as_secs_f64() * 1000.0,
            elapsed.as_secs_f64() * 1e6 / records.len() as f64,
        );
        if batch_size == 1_000 {
            rebuild_from = Some(run_dir);
        }
    }

    // The archive alone (HistoryEnabled=false): what HISTORY adds to the archiver's time.
    let archive_only = Archiver::new(
        Arc::new(MemoryArchive::default()),
        None,
        Limits::default(),
        Arc::new(SystemClock),
    );
    let started = Instant::now();
    for batch in records.chunks(1_000) {
        archive_only.consume(shard, batch).await;
    }
    println!(
        "archive only (no HISTORY), batches of 1,000: {:.1} µs/record",
        started.elapsed().as_secs_f64() * 1e6 / records.len() as f64
    );

    let Some(archive_dir) = rebuild_from else {
        return Err("no archive to rebuild from".into());
    };
    let archive = MemoryArchive::in_directory(&archive_dir).map_err(|e| e.to_string())?;
    let into_memory = Arc::new(MemoryStatusStore::default());
    let (rate, writes) = rebuild_rate(&archive, into_memory.clone()).await?;
    println!(
        "rebuild from the directory archive (batches of 1,000) into the in-memory STATUS: {rate:.0} records/s ({writes} rows written, {} ids)",
        into_memory.snapshot().len()
    );
    if let Some(endpoint) = &args.dynamodb_endpoint {
        let sdk = load_sdk_config(Some(endpoint)).await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let table = format!("bench-rebuild-{}", std::process::id());
        ensure_table(&client, &table, "id", None)
            .await
            .map_err(|e| e.to_string())?;
        let status = Arc::new(DynamoStatusStore::new(client.clone(), &table));
        let result = rebuild_rate(&archive, status).await;
        let _ = client.delete_table().table_name(&table).send().await;
        let (rate, writes) = result?;
        println!(
            "rebuild from the directory archive into DynamoDB at {endpoint}: {rate:.0} records/s ({writes} conditional writes)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Records per second of a whole rebuild from `archive` into `status`, and the rows written.
async fn rebuild_rate(
    archive: &MemoryArchive,
    status: Arc<dyn StatusWriter>,
) -> Result<(f64, usize), String> {
    let processor = Processor::new(
        status,
        Arc::new(MemoryDeadLetterStore::default()),
        Default::default(),
        Arc::new(SystemClock),
    );
    let started = Instant::now();
    let report = rebuild_from_archive(
        ArchiveRebuild::new(archive, &processor),
        &mut RebuildProgress::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((
        report.records as f64 / started.elapsed().as_secs_f64(),
        report.applied,
    ))
}
