//! `tidemark verify`: compare two STATUS tables id by id and list every id that differs, or a
//! status view's table with STATUS (its counts and every list).

use std::process::ExitCode;

use clap::Args;
use tidemark::adapters::dynamodb::{DynamoCheckpointStore, DynamoStatusStore, DynamoStatusView};
use tidemark::adapters::kinesis::KinesisStream;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::{OPLOG_TABLE_VAR, STATUS_TABLE_VAR, STREAM_NAME_VAR};
use tidemark::consumers::views::check::compare_with_status;
use tidemark::ports::{CheckpointReader, ShardReader};
use tidemark::run::verify::{verify, RowSummary};

use super::fail;

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The table taken as right (default: the live STATUS table, TIDEMARK_STATUS_TABLE).
    #[arg(long, env = STATUS_TABLE_VAR)]
    table: String,
    /// The table compared with it (a rebuilt or restored STATUS table).
    #[arg(
        long,
        required_unless_present = "status_view",
        conflicts_with = "status_view"
    )]
    against: Option<String>,
    /// Instead: a status view's table (live or rebuilt), compared with STATUS (`--table`).
    #[arg(long)]
    status_view: Option<String>,
    /// OPLOG, whose processor rows name every shard STATUS was built from (default:
    /// TIDEMARK_OPLOG_TABLE); the view is read shard by shard.
    #[arg(long, env = OPLOG_TABLE_VAR)]
    oplog_table: Option<String>,
    /// The stream, whose shards are read too (default: TIDEMARK_STREAM_NAME).
    #[arg(long, env = STREAM_NAME_VAR)]
    stream: Option<String>,
    /// Differences to print; all are counted.
    #[arg(long, default_value_t = 100)]
    show: usize,
}

fn describe(row: Option<&RowSummary>) -> String {
    row.map_or_else(
        || "absent".to_owned(),
        |r| {
            format!(
                "{} at {} (sequence {})",
                r.status, r.timestamp, r.sequence_number
            )
        },
    )
}

/// Exit status 0 when the tables hold the same view, 1 when any id differs.
pub async fn run(args: VerifyArgs) -> ExitCode {
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let expected = DynamoStatusStore::new(client.clone(), &args.table);
    if let Some(view) = &args.status_view {
        return verify_status_view(&args, &sdk, &expected, view).await;
    }
    let against = args.against.clone().unwrap_or_default();
    let actual = DynamoStatusStore::new(client, &against);
    let report = match verify(&expected, &actual, args.show).await {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    println!(
        "{} ({} rows) against {} ({} rows): {} ids differ",
        args.table, report.expected_rows, against, report.actual_rows, report.difference_count
    );
    for difference in &report.differences {
        println!(
            "  {}: {} has {}; {} has {}",
            difference.id,
            args.table,
            describe(difference.expected.as_ref()),
            against,
            describe(difference.actual.as_ref())
        );
    }
    if report.difference_count as usize > report.differences.len() {
        println!(
            "  … and {} more (--show N prints more)",
            report.difference_count as usize - report.differences.len()
        );
    }
    if report.difference_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every shard the view may hold items of: the processor's OPLOG rows and the stream's shards.
async fn shards(args: &VerifyArgs, sdk: &aws_config::SdkConfig) -> Result<Vec<String>, String> {
    let mut shards = Vec::new();
    if let Some(oplog) = &args.oplog_table {
        let checkpoints = DynamoCheckpointStore::new(aws_sdk_dynamodb::Client::new(sdk), oplog);
        let rows = checkpoints.progress().await.map_err(|e| e.to_string())?;
        // The processor's rows are the bare shard ids; other consumers' are `name:shard`.
        shards.extend(
            rows.into_iter()
                .map(|r| r.shard_id)
                .filter(|key| !key.contains(':')),
        );
    }
    if let Some(stream) = &args.stream {
        let stream = KinesisStream::new(aws_sdk_kinesis::Client::new(sdk), stream);
        let listed = stream.list_shards().await.map_err(|e| e.to_string())?;
        shards.extend(listed.into_iter().map(|s| s.shard_id));
    }
    if shards.is_empty() {
        return Err(format!(
            "no shards to read the view by: give --oplog-table ({OPLOG_TABLE_VAR}) or --stream \
             ({STREAM_NAME_VAR})"
        ));
    }
    shards.sort_unstable();
    shards.dedup();
    Ok(shards)
}

async fn verify_status_view(
    args: &VerifyArgs,
    sdk: &aws_config::SdkConfig,
    status: &DynamoStatusStore,
    table: &str,
) -> ExitCode {
    let shards = match shards(args, sdk).await {
        Ok(shards) => shards,
        Err(e) => return fail(&e),
    };
    let view = DynamoStatusView::new(aws_sdk_dynamodb::Client::new(sdk), table);
    let differences = match compare_with_status(status, &view, &shards).await {
        Ok(differences) => differences,
        Err(e) => return fail(&e),
    };
    println!(
        "{table} against {} over {} shards: {} counts and {} lists differ",
        args.table,
        shards.len(),
        differences.counts.len(),
        differences.lists.len()
    );
    for (status, want, got) in differences.counts.iter().take(args.show) {
        println!("  count of {status:?}: STATUS has {want}, the view {got}");
    }
    for status in differences.lists.iter().take(args.show) {
        println!("  the list of {status:?} is not STATUS's ids in that status, newest first");
    }
    if differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
