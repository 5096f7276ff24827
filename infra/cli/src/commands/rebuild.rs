//! `tidemark rebuild`: STATUS again, from every record the stream still holds, into a new table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::dynamodb::DynamoStatusStore;
use tidemark::adapters::kinesis::KinesisStream;
use tidemark::adapters::memory::MemoryDeadLetterStore;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::{processor_settings_from_env, STATUS_TABLE_VAR, STREAM_NAME_VAR};
use tidemark::domain::SystemClock;
use tidemark::ports::DeadLetterReader;
use tidemark::processor::Processor;
use tidemark::rebuild::{rebuild, RebuildProgress};

use super::fail;

#[derive(Args)]
pub struct RebuildArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The stream to read (default: TIDEMARK_STREAM_NAME).
    #[arg(long, env = STREAM_NAME_VAR)]
    stream: String,
    /// The STATUS table to rebuild into; created when missing. Never the live one.
    #[arg(long)]
    into: String,
    /// Where progress is saved after every page; run again with it to continue after an
    /// interruption (default: rebuild-<TABLE>.json).
    #[arg(long)]
    state: Option<PathBuf>,
}

fn load(path: &PathBuf) -> Result<RebuildProgress, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a rebuild state file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RebuildProgress::default()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Writes the state through a temporary file, so an interruption never leaves half a file.
fn save(path: &PathBuf, progress: &RebuildProgress) -> Result<(), String> {
    let text = serde_json::to_string_pretty(progress).map_err(|e| e.to_string())?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

pub async fn run(args: RebuildArgs) -> ExitCode {
    if std::env::var(STATUS_TABLE_VAR).is_ok_and(|live| live == args.into) {
        return fail(&format!(
            "--into {} is the live STATUS table ({STATUS_TABLE_VAR}); rebuild into a new table \
             and compare them with tidemark verify",
            args.into
        ));
    }
    let settings = match processor_settings_from_env() {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("rebuild-{}.json", args.into)));
    let mut progress = match load(&state) {
        Ok(progress) => progress,
        Err(e) => return fail(&e),
    };
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    if let Err(e) = ensure_table(&dynamodb, &args.into, "id", None).await {
        return fail(&e);
    }
    let stream = KinesisStream::new(aws_sdk_kinesis::Client::new(&sdk), &args.stream);
    // Poison is listed at the end rather than written to the live DEADLETTER a second time.
    let set_aside = Arc::new(MemoryDeadLetterStore::default());
    let processor = Processor::new(
        Arc::new(DynamoStatusStore::new(dynamodb, &args.into)),
        set_aside.clone(),
        settings,
        Arc::new(SystemClock),
    );
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} records {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let result = rebuild(
        &stream,
        &processor,
        &mut progress,
        |progress| save(&state, progress),
        |shard, records| {
            bar.inc(records as u64);
            bar.set_message(format!("(reading {shard})"));
        },
    )
    .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e) => return fail(&format!("{e} (state: {})", state.display())),
    };
    println!(
        "rebuilt {} from {} shards of {}: {} records, {} rows written, {} stale, {} set aside",
        args.into,
        report.shards,
        args.stream,
        report.records,
        report.applied,
        report.stale,
        report.set_aside
    );
    if let Ok(letters) = set_aside.list().await {
        for letter in letters.iter().take(20) {
            println!(
                "  set aside: {} {}: {}",
                letter.shard_id, letter.sequence_number, letter.reason
            );
        }
    }
    println!(
        "compare it with the live table: tidemark verify --against {}",
        args.into
    );
    ExitCode::SUCCESS
}
