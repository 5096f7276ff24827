//! `tidemark bootstrap`: create the stream and tables if they are missing.

use std::process::ExitCode;

use clap::Args;
use tidemark::adapters::bootstrap::ensure_resources;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::ResourceNames;

use super::fail;

#[derive(Args)]
pub struct BootstrapArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
}

pub async fn run(args: BootstrapArgs) -> ExitCode {
    let names = ResourceNames::from_env_or_defaults();
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    match ensure_resources(&sdk, &names, args.shards).await {
        Ok(created) => {
            let created = if created.is_empty() {
                "none".to_owned()
            } else {
                created.join(", ")
            };
            println!(
                "stream {} and tables {}, {}, {}, {} are ready (created: {created})",
                names.stream,
                names.status_table,
                names.oplog_table,
                names.deadletter_table,
                names.idempotency_table,
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
