//! `tidemark replay`: re-apply a shard range the event source mapping gave up on.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::config::{processor_settings_from_env, ResourceNames};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{SequenceNumber, SystemClock};
use tidemark::run::registry::{ConsumerSettings, Registry};
use tidemark::run::replay::replay_range;

use super::fail;

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Shard id, e.g. shardId-000000000000.
    #[arg(long)]
    shard: String,
    /// First sequence number of the range.
    #[arg(long, value_parser = parse_sequence)]
    from: SequenceNumber,
    /// Last sequence number of the range.
    #[arg(long, value_parser = parse_sequence)]
    to: SequenceNumber,
    /// Which registered consumer gave the range up: `processor` (STATUS), `archiver` (the
    /// archive and HISTORY), `status-view`. The on-failure message's
    /// `requestContext.functionArn` names it.
    #[arg(long, default_value = "processor")]
    consumer: String,
}

fn parse_sequence(text: &str) -> Result<SequenceNumber, String> {
    SequenceNumber::parse(text).map_err(|e| e.to_string())
}

pub async fn run(args: ReplayArgs) -> ExitCode {
    // Strict: replaying into default-named tables by mistake would be worse than stopping.
    let (names, settings) = match (ResourceNames::from_env(), processor_settings_from_env()) {
        (Ok(names), Ok(settings)) => (names, settings),
        (Err(e), _) => return fail(&e),
        (_, Err(e)) => return fail(&e),
    };
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    let adapters = Adapters::aws(&sdk, &names);
    let registry = Registry::standard();
    let Some(registration) = registry.get(&args.consumer) else {
        let known: Vec<&str> = registry.names().map(|n| n.as_str()).collect();
        eprintln!(
            "tidemark replay: no consumer named {:?}; the registered ones are {}",
            args.consumer,
            known.join(", ")
        );
        return ExitCode::from(2);
    };
    let consumer = registration.consumer(
        &adapters,
        &ConsumerSettings {
            processor: settings,
            clock: Arc::new(SystemClock),
        },
    );
    let shards = adapters.shard_reader();
    let shard = &args.shard;
    match replay_range(
        shards.as_ref(),
        consumer.as_ref(),
        shard,
        &args.from,
        &args.to,
    )
    .await
    {
        Ok(report) => {
            if registration.name == ConsumerName::ARCHIVER {
                println!(
                    "archived {} records of {shard}: {} HISTORY entries written, {} not events (archived only)",
                    report.records, report.applied, report.dead_lettered
                );
            } else {
                println!(
                    "replayed {} records of {shard} through the {}: {} applied, {} stale (a newer version was already there), {} dead-lettered",
                    report.records, registration.name.as_str(), report.applied, report.stale, report.dead_lettered
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
