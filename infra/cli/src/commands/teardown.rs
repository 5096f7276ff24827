//! `tidemark teardown`: after `sam delete`, remove the tables and the archive bucket the stack
//! retained (see `tidemark_cli::teardown`), asking first.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::ResourceNames;
use tidemark_cli::teardown::teardown;

use super::fail;

/// What the operator types to confirm.
const CONFIRMATION: &str = "delete";

#[derive(Args)]
pub struct TeardownArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Delete without asking (for scripts that already asked).
    #[arg(long)]
    yes: bool,
    /// The stack's name, to print the command that schedules its KMS key's deletion.
    #[arg(long)]
    stack: Option<String>,
}

pub async fn run(args: TeardownArgs) -> ExitCode {
    let names = match ResourceNames::from_env() {
        Ok(names) => names,
        Err(e) => {
            return fail(&format!(
                "{e}. Export the TIDEMARK_* names from the stack's outputs first (docs/operations.md, \"Teardown\")"
            ))
        }
    };
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    let confirm = |plan: &[String]| {
        println!("This deletes, with all their data:");
        for line in plan {
            println!("  - {line}");
        }
        if args.yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!("tidemark: not a terminal and no --yes: not asking, not deleting");
            return false;
        }
        print!("Type {CONFIRMATION:?} to go on: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        answer.trim() == CONFIRMATION
    };
    match teardown(&sdk, &names, confirm).await {
        Ok(removed) => {
            for table in &removed.tables {
                println!("deleted table {table}");
            }
            if let Some(bucket) = &removed.bucket {
                println!(
                    "deleted bucket {bucket} ({} object versions and delete markers)",
                    removed.object_versions
                );
            }
            for absent in &removed.absent {
                println!("already gone: {absent}");
            }
            let stack = args.stack.as_deref().unwrap_or("STACK");
            println!(
                "Last, the KMS key (billed monthly until deleted; AWS waits 7 to 30 days):\n  aws kms schedule-key-deletion --key-id alias/tidemark/{stack} --pending-window-in-days 7"
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
