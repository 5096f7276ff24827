//! `tidemark bench-dynamodb`: the processor against a real DynamoDB API, with the same writes
//! from the SDK adapter alone and from a minimal client beside it (`scripts/bench-dynamodb`
//! starts DynamoDB Local and runs it, also under Lambda-sized CPU quotas).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tidemark_cli::bench_dynamodb::{self, BenchDynamoOptions, Shape, SHAPES};

use super::fail;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shapes {
    /// 10,000 records over 1,000 ids, 3,000 distinct ids, 2,000 records over 200 ids.
    All,
    /// Only the 3,000-distinct-id batch: what a shard at full rate looks like.
    Distinct,
}

#[derive(Args)]
pub struct BenchDynamoArgs {
    /// The DynamoDB endpoint (DynamoDB Local or LocalStack).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: String,
    #[arg(long, value_enum, default_value = "all")]
    shapes: Shapes,
    /// Rounds of the three runs per shape (the figures are medians).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Writes in flight (the processor's TIDEMARK_WRITE_CONCURRENCY).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=512))]
    write_concurrency: u32,
}

pub async fn run(args: BenchDynamoArgs) -> ExitCode {
    let shapes: Vec<Shape> = match args.shapes {
        Shapes::All => SHAPES.to_vec(),
        Shapes::Distinct => SHAPES.iter().copied().filter(|s| s.per_id == 1).collect(),
    };
    let options = BenchDynamoOptions {
        endpoint: args.endpoint_url,
        shapes,
        rounds: args.rounds as usize,
        write_concurrency: args.write_concurrency as usize,
    };
    println!(
        "tidemark bench-dynamodb: against {}, {} writes in flight",
        options.endpoint, options.write_concurrency
    );
    match bench_dynamodb::run(&options).await {
        Ok(reports) => {
            for report in reports {
                print!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
