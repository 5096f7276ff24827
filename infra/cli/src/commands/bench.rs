//! `tidemark bench`: load a running `tidemark serve` over HTTP and print what it measured.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tidemark_cli::bench::{self, BenchOptions};

use super::fail;

#[derive(Args)]
pub struct BenchArgs {
    /// Base URL of the running serve.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    target: String,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    clients: u32,
    /// Run for this many seconds (default 10, unless --events is given).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Stop after this many events instead.
    #[arg(long)]
    events: Option<u64>,
    /// Events per request: 1 uses POST /events, more uses POST /events/batch (at most 500).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Distinct ids the events spread over.
    #[arg(long, default_value_t = 10_000)]
    ids: usize,
    /// Milliseconds between freshness probes.
    #[arg(long, default_value_t = 20)]
    probe_interval_ms: u64,
    /// Seconds the final correctness check may wait for STATUS to catch up.
    #[arg(long, default_value_t = 60)]
    settle_timeout_secs: u64,
    /// Pid of the serve process, to report its peak memory (e.g. $(pgrep -f 'tidemark serve')).
    #[arg(long)]
    serve_pid: Option<u32>,
}

impl From<BenchArgs> for BenchOptions {
    fn from(args: BenchArgs) -> Self {
        BenchOptions {
            target: args.target.trim_end_matches('/').to_owned(),
            clients: args.clients as usize,
            duration: match (args.duration_secs, args.events) {
                (Some(s), _) => Some(Duration::from_secs(s)),
                (None, None) => Some(Duration::from_secs(10)),
                (None, Some(_)) => None,
            },
            events: args.events,
            batch_size: args.batch_size,
            ids: args.ids.max(1),
            probe_interval: Duration::from_millis(args.probe_interval_ms.max(1)),
            settle_timeout: Duration::from_secs(args.settle_timeout_secs),
            serve_pid: args.serve_pid,
        }
    }
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let options = BenchOptions::from(args);
    println!(
        "tidemark bench: {} clients, {} events per request, {} ids, against {}",
        options.clients, options.batch_size, options.ids, options.target
    );
    match bench::run(options).await {
        Ok(report) if report.ids_correct == report.ids_checked => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!("{report}");
            fail(&"some ids did not reach their newest accepted version")
        }
        Err(e) => fail(&e),
    }
}
