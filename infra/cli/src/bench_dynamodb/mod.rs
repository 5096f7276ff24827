//! `tidemark bench-dynamodb`: the processor against a real DynamoDB API (DynamoDB Local, or
//! LocalStack), next to the same conditional writes sent without the processor, so the figures
//! are ratios and CPU per write rather than absolute times on a shared machine.
//!
//! Per shape and round, three runs on fresh tables, alternating:
//! - `processor`: one synthetic Lambda Kinesis event through the processor Lambda's own handler
//!   (`tidemark_processor::Handler::process`: decode, coalesce, conditional UpdateItems through
//!   the SDK adapter, the OPLOG write);
//! - `sdk`: the same STATUS rows through the SDK adapter alone (`StatusWriter::apply`), as many
//!   in flight: what the processor adds on top of its client;
//! - `raw`: the same conditional UpdateItem requests from a minimal HTTP client (reqwest, the
//!   JSON protocol, a placeholder signature the local servers do not check): the ceiling a client
//!   could reach on this machine.
//!
//! CPU is this process's own on-CPU time over all its threads (`/proc/self/task/*/schedstat`,
//! nanoseconds), so "CPU per write" is the client's cost, whatever the server costs.

mod raw;
mod report;

use raw::run_raw;
pub use report::ShapeReport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::json;
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::config::ResourceNames;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::domain::{EventTime, FixedClock, SequenceNumber, Version};
use tidemark::ports::{ApplyOutcome, StatusRow, StatusWriter};
use tidemark_processor::{synthetic, Handler};

/// One batch shape: `records` records over `records / per_id` ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub records: usize,
    pub per_id: usize,
}

impl Shape {
    pub fn ids(self) -> usize {
        (self.records / self.per_id).max(1)
    }
}

/// The shapes issue 15 names: a Lambda-sized batch with repeats, every id distinct, a small batch.
pub const SHAPES: [Shape; 3] = [
    Shape {
        records: 10_000,
        per_id: 10,
    },
    Shape {
        records: 3_000,
        per_id: 1,
    },
    Shape {
        records: 2_000,
        per_id: 10,
    },
];

#[derive(Clone, Debug)]
pub struct BenchDynamoOptions {
    pub endpoint: String,
    pub shapes: Vec<Shape>,
    pub rounds: usize,
    pub write_concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchDynamoError {
    #[error("creating the bench tables at {endpoint} failed: {reason}")]
    Setup { endpoint: String, reason: String },
    #[error("the {run} run failed: {reason}")]
    Run { run: &'static str, reason: String },
    #[error("reading this process's CPU time failed: {0}")]
    CpuTime(String),
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub writes: usize,
    pub wall: Duration,
    pub cpu: Duration,
}

impl Measured {
    pub fn writes_per_second(&self) -> f64 {
        self.writes as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn cpu_ms_per_write(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.writes.max(1) as f64
    }
}

/// The process's on-CPU time so far, all threads (live ones: the runtime's workers persist).
pub fn process_cpu_time() -> Result<Duration, BenchDynamoError> {
    let mut total_ns: u64 = 0;
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| BenchDynamoError::CpuTime(e.to_string()))?;
    for task in tasks {
        let task = task.map_err(|e| BenchDynamoError::CpuTime(e.to_string()))?;
        // A thread may exit between listing and reading: it no longer counts.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| BenchDynamoError::CpuTime(format!("unexpected schedstat {text:?}")))?;
        total_ns += ns;
    }
    Ok(Duration::from_nanos(total_ns))
}

async fn measure<F, Fut>(writes: usize, run: F) -> Result<Measured, BenchDynamoError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), BenchDynamoError>>,
{
    let cpu_before = process_cpu_time()?;
    let started = Instant::now();
    run().await?;
    let wall = started.elapsed();
    let cpu = process_cpu_time()?.saturating_sub(cpu_before);
    Ok(Measured { writes, wall, cpu })
}

/// Fresh STATUS, OPLOG and DEADLETTER tables for one run (the stream is not needed: the batch
/// is handed to the processor as Lambda hands it).
async fn fresh_tables(
    sdk: &aws_config::SdkConfig,
    endpoint: &str,
    run: usize,
) -> Result<ResourceNames, BenchDynamoError> {
    let unique = format!("tmbench-{}-{run}-{}", std::process::id(), fastrand::u32(..));
    let names = ResourceNames {
        stream: format!("{unique}-events"),
        status_table: format!("{unique}-status"),
        oplog_table: format!("{unique}-oplog"),
        deadletter_table: format!("{unique}-deadletter"),
        idempotency_table: format!("{unique}-idempotency"),
        archive_bucket: format!("{unique}-archive"),
        status_view_table: format!("{unique}-status-view"),
        history_table: Some(format!("{unique}-history")),
    };
    let client = aws_sdk_dynamodb::Client::new(sdk);
    for (table, hash, range) in [
        (&names.status_table, "id", None),
        (&names.oplog_table, "shard_id", None),
        (&names.deadletter_table, "shard_id", Some("sequence_number")),
    ] {
        ensure_table(&client, table, hash, range)
            .await
            .map_err(|e| BenchDynamoError::Setup {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
    }
    Ok(names)
}

async fn drop_tables(sdk: &aws_config::SdkConfig, names: &ResourceNames) {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    for table in [
        &names.status_table,
        &names.oplog_table,
        &names.deadletter_table,
    ] {
        let _ = client.delete_table().table_name(table).send().await;
    }
}

/// The STATUS rows the processor writes for a shape: one per id, the newest record of each.
fn rows(shape: Shape) -> Result<Vec<StatusRow>, BenchDynamoError> {
    let ids = shape.ids();
    (0..ids)
        .map(|id| {
            // The processor keeps each id's last record of the batch (its timestamps increase).
            let i = shape.records - ids + id;
            let sequence = SequenceNumber::parse(&format!("4959{:052}", i + 1)).map_err(|e| {
                BenchDynamoError::Run {
                    run: "setup",
                    reason: e.to_string(),
                }
            })?;
            let event_time = EventTime::from_unix_nanos(1_714_564_800_000_000_000 + i as i128);
            Ok(StatusRow {
                id: format!("order-{id:07}"),
                status: format!("status-{i}"),
                timestamp: event_time.to_rfc3339(),
                data: Some(r#"{"carrier":"ups","weight_kg":1.5,"hub":"FRA"}"#.into()),
                received_at: "2024-05-01T12:00:01Z".into(),
                shard_id: "shardId-000000000000".into(),
                version: Version::new(event_time, sequence.clone()).key(),
                sequence_number: sequence,
                updated_at: "2024-05-01T12:00:02Z".into(),
            })
        })
        .collect()
}

async fn run_processor(
    sdk: &aws_config::SdkConfig,
    names: &ResourceNames,
    shape: Shape,
    write_concurrency: usize,
) -> Result<Measured, BenchDynamoError> {
    let event = synthetic::kinesis_event(shape.records, shape.per_id);
    let settings = ProcessorSettings {
        write_concurrency,
        ..ProcessorSettings::default()
    };
    // 2024-05-01T12:00:02Z, just after the synthetic records arrived.
    let now = EventTime::from_unix_nanos(1_714_564_802_000_000_000);
    let handler = Handler::new(
        &Adapters::aws(sdk, names),
        settings,
        Arc::new(FixedClock(now)),
    );
    let ids = shape.ids();
    // Distinct ids' STATUS writes, and the checkpoint.
    measure(ids + 1, || async {
        let (response, report) =
            handler
                .process(event)
                .await
                .map_err(|e| BenchDynamoError::Run {
                    run: "processor",
                    reason: e.to_string(),
                })?;
        if !response.batch_item_failures.is_empty() || report.applied != ids {
            return Err(BenchDynamoError::Run {
                run: "processor",
                reason: format!(
                    "expected {ids} rows applied and no failure, got {} applied, last error {:?}",
                    report.applied, report.last_error
                ),
            });
        }
        Ok(())
    })
    .await
}

async fn run_sdk(
    sdk: &aws_config::SdkConfig,
    names: &ResourceNames,
    shape: Shape,
    write_concurrency: usize,
) -> Result<Measured, BenchDynamoError> {
    let status = Adapters::aws(sdk, names).status_writer();
    let rows = rows(shape)?;
    let writes = rows.len();
    measure(writes, || async {
        let outcomes: Vec<_> = stream::iter(rows)
            .map(|row| status.apply(row))
            .buffer_unordered(write_concurrency)
            .collect()
            .await;
        every_write_applied("sdk", outcomes, |o| matches!(o, Ok(ApplyOutcome::Applied)))
    })
    .await
}

/// A run counts only if every write went through: fresh tables, so none may be stale.
fn every_write_applied<T: std::fmt::Debug>(
    run: &'static str,
    answers: Vec<T>,
    applied: impl Fn(&T) -> bool,
) -> Result<(), BenchDynamoError> {
    match answers.into_iter().find(|answer| !applied(answer)) {
        None => Ok(()),
        Some(other) => Err(BenchDynamoError::Run {
            run,
            reason: format!("a write answered {other:?}"),
        }),
    }
}

pub async fn run(options: &BenchDynamoOptions) -> Result<Vec<ShapeReport>, BenchDynamoError> {
    let sdk = load_sdk_config(Some(&options.endpoint)).await;
    let mut reports = Vec::new();
    let mut run_number = 0;
    // Warm the connections and the server's code paths; not counted.
    let warm_up = Shape {
        records: 200,
        per_id: 1,
    };
    let names = fresh_tables(&sdk, &options.endpoint, run_number).await?;
    run_processor(&sdk, &names, warm_up, options.write_concurrency).await?;
    drop_tables(&sdk, &names).await;
    for &shape in &options.shapes {
        let mut report = ShapeReport {
            shape,
            processor: Vec::new(),
            sdk: Vec::new(),
            raw: Vec::new(),
        };
        for _ in 0..options.rounds {
            for which in 0..3 {
                run_number += 1;
                let names = fresh_tables(&sdk, &options.endpoint, run_number).await?;
                let measured = match which {
                    0 => run_processor(&sdk, &names, shape, options.write_concurrency).await,
                    1 => run_sdk(&sdk, &names, shape, options.write_concurrency).await,
                    _ => run_raw(&options.endpoint, &names, shape, options.write_concurrency).await,
                };
                drop_tables(&sdk, &names).await;
                let measured = measured?;
                match which {
                    0 => report.processor.push(measured),
                    1 => report.sdk.push(measured),
                    _ => report.raw.push(measured),
                }
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_and_moves_forward() {
        let before = process_cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time().unwrap() > before);
    }
}
