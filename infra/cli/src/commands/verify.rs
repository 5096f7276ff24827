//! `tidemark verify`: compare two STATUS tables id by id and list every id that differs.

use std::process::ExitCode;

use clap::Args;
use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::STATUS_TABLE_VAR;
use tidemark::verify::{verify, RowSummary};

use super::fail;

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The table taken as right (default: the live STATUS table, TIDEMARK_STATUS_TABLE).
    #[arg(long, env = STATUS_TABLE_VAR)]
    table: String,
    /// The table compared with it (a rebuilt or restored STATUS table).
    #[arg(long)]
    against: String,
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
    let actual = DynamoStatusStore::new(client, &args.against);
    let report = match verify(&expected, &actual, args.show).await {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    println!(
        "{} ({} rows) against {} ({} rows): {} ids differ",
        args.table, report.expected_rows, args.against, report.actual_rows, report.difference_count
    );
    for difference in &report.differences {
        println!(
            "  {}: {} has {}; {} has {}",
            difference.id,
            args.table,
            describe(difference.expected.as_ref()),
            args.against,
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
