//! `tidemark`: the operator CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tidemark::adapters::bootstrap::ensure_resources;
use tidemark::adapters::sdk::{load_sdk_config, AwsAdapters};
use tidemark::config::{limits_from_env, processor_settings_from_env, ResourceNames};
use tidemark::domain::{SequenceNumber, SystemClock};
use tidemark::esm::EsmSettings;
use tidemark::processor::Processor;
use tidemark::replay::replay_range;
use tidemark_cli::bench::{self, BenchOptions};
use tidemark_cli::coldstart::{self, ColdStart};
use tidemark_cli::serve::{default_poll_interval, run, MemoryPipeline, Pipeline, ServeSettings};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Tidemark: the newest status per id, from a stream of events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// In-memory stream and tables (the default without an endpoint).
    Memory,
    /// Real Kinesis and DynamoDB, at --endpoint-url or wherever the AWS environment points.
    Aws,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in one process: HTTP API, stream, processor, tables.
    Serve {
        /// Address of the HTTP API (port 0 picks a free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Where the stream and tables live; default: aws when an endpoint is given, else memory.
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Endpoint for Kinesis and DynamoDB (e.g. LocalStack's http://127.0.0.1:4566).
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        endpoint_url: Option<String>,
        /// Shards of the in-memory stream, or of the stream created when it is missing.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        shards: u32,
        /// Records per batch handed to the processor (1 to 10,000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
        /// Batching window in milliseconds: how long a shard gathers records before a batch
        /// smaller than --batch-size is processed (the "settle" delay).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=300_000))]
        batch_window_ms: u64,
        /// Pause between reads of an idle shard (default: 20 in memory, 200 against an endpoint).
        #[arg(long)]
        poll_interval_ms: Option<u64>,
    },
    /// Drive a running `tidemark serve` over HTTP and print throughput, latency, freshness,
    /// correctness and (with --serve-pid) its peak memory.
    Bench {
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
    },
    /// Start each function binary against a minimal local Lambda Runtime API, many times, and
    /// print its size, the time from exec to its first `next` request, and its peak memory after
    /// one invocation (a Kinesis batch of --batch-records records for the processor).
    Coldstart {
        /// Function binaries (e.g. target/release/ingest target/release/query target/release/processor).
        #[arg(required = true)]
        binaries: Vec<PathBuf>,
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        runs: u32,
        #[arg(long, default_value_t = 10_000)]
        batch_records: usize,
    },
    /// Re-apply one shard's records from --from to --to (both included): the range a message in
    /// the on-failure queue names (KinesisBatchInfo shardId, startSequenceNumber,
    /// endSequenceNumber). Newer rows stay; OPLOG is not written. Names come from TIDEMARK_*.
    Replay {
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        endpoint_url: Option<String>,
        /// Shard id, e.g. shardId-000000000000.
        #[arg(long)]
        shard: String,
        /// First sequence number of the range.
        #[arg(long)]
        from: String,
        /// Last sequence number of the range.
        #[arg(long)]
        to: String,
    },
    /// Create the stream and tables at an endpoint if they are missing.
    Bootstrap {
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        endpoint_url: Option<String>,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        shards: u32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tidemark::telemetry::init_tracing(false);
    match Cli::parse().command {
        Command::Serve {
            listen,
            backend,
            endpoint_url,
            shards,
            batch_size,
            batch_window_ms,
            poll_interval_ms,
        } => {
            let in_memory = match backend {
                Some(b) => b == Backend::Memory,
                None => endpoint_url.is_none(),
            };
            let (processor, limits) = match (processor_settings_from_env(), limits_from_env()) {
                (Ok(p), Ok(l)) => (p, l),
                (Err(e), _) | (_, Err(e)) => return fail(&e),
            };
            let settings = ServeSettings {
                esm: EsmSettings {
                    batch_size: batch_size as usize,
                    batching_window: Duration::from_millis(batch_window_ms),
                    idle_poll_interval: poll_interval_ms
                        .map_or(default_poll_interval(in_memory), Duration::from_millis),
                    ..EsmSettings::default()
                },
                processor,
                limits,
                ..ServeSettings::default()
            };
            let (pipeline, description) = if in_memory {
                (
                    MemoryPipeline::new(shards as usize).pipeline(),
                    format!("in-memory, {shards} shards"),
                )
            } else {
                let names = ResourceNames::from_env_or_defaults();
                match Pipeline::aws(endpoint_url.as_deref(), &names, shards).await {
                    Ok(p) => (
                        p,
                        format!(
                            "stream {} and tables {}, {}, {} at {}",
                            names.stream,
                            names.status_table,
                            names.oplog_table,
                            names.deadletter_table,
                            endpoint_url
                                .as_deref()
                                .unwrap_or("the AWS environment's endpoints")
                        ),
                    ),
                    Err(e) => return fail(&e),
                }
            };
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => l,
                Err(e) => return fail(&format!("cannot listen on {listen}: {e}")),
            };
            let address = listener.local_addr().map_or(listen, |a| a);
            println!("tidemark listening on http://{address} ({description}; batch size {batch_size}, window {batch_window_ms} ms)");
            let (stop, shutdown) = watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                let _ = stop.send(true);
            });
            match run(pipeline, listener, settings, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Bench {
            target,
            clients,
            duration_secs,
            events,
            batch_size,
            ids,
            probe_interval_ms,
            settle_timeout_secs,
            serve_pid,
        } => {
            let options = BenchOptions {
                target: target.trim_end_matches('/').to_owned(),
                clients: clients as usize,
                duration: match (duration_secs, events) {
                    (Some(s), _) => Some(Duration::from_secs(s)),
                    (None, None) => Some(Duration::from_secs(10)),
                    (None, Some(_)) => None,
                },
                events,
                batch_size,
                ids: ids.max(1),
                probe_interval: Duration::from_millis(probe_interval_ms.max(1)),
                settle_timeout: Duration::from_secs(settle_timeout_secs),
                serve_pid,
            };
            println!(
                "tidemark bench: {} clients, {} events per request, {} ids, against {}",
                options.clients, options.batch_size, options.ids, options.target
            );
            match bench::run(options).await {
                Ok(report) => {
                    println!("{report}");
                    if report.ids_correct == report.ids_checked {
                        ExitCode::SUCCESS
                    } else {
                        fail(&"some ids did not reach their newest accepted version")
                    }
                }
                Err(e) => fail(&e),
            }
        }
        Command::Coldstart {
            binaries,
            runs,
            batch_records,
        } => {
            let server = match ColdStart::start().await {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            println!(
                "{:<12} {:>10} {:>12} {:>12} {:>12} {:>14} {:>12}",
                "function",
                "size",
                "start p50",
                "start p90",
                "start max",
                "invocation p50",
                "peak memory"
            );
            for binary in &binaries {
                let size = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
                let event = coldstart::event_for(binary, batch_records);
                let mut measured = Vec::new();
                for _ in 0..runs {
                    match server.measure(binary, &event).await {
                        Ok(run) => measured.push(run),
                        Err(e) => return fail(&e),
                    }
                }
                let mut startups: Vec<_> = measured.iter().map(|r| r.startup).collect();
                let mut invocations: Vec<_> = measured.iter().map(|r| r.invocation).collect();
                startups.sort();
                invocations.sort();
                let at = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
                let peak = measured
                    .iter()
                    .map(|r| r.peak_memory_kib)
                    .max()
                    .unwrap_or(0);
                println!(
                    "{:<12} {:>8.2}MB {:>12} {:>12} {:>12} {:>14} {:>8.1} MiB",
                    binary.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                    size as f64 / 1_000_000.0,
                    ms(at(&startups, 0.5)),
                    ms(at(&startups, 0.9)),
                    ms(at(&startups, 1.0)),
                    ms(at(&invocations, 0.5)),
                    peak as f64 / 1024.0
                );
            }
            println!("({runs} runs each; the processor's invocation is a {batch_records}-record batch; sizes in decimal MB)");
            ExitCode::SUCCESS
        }
        Command::Replay {
            endpoint_url,
            shard,
            from,
            to,
        } => replay(endpoint_url, &shard, &from, &to).await,
        Command::Bootstrap {
            endpoint_url,
            shards,
        } => {
            let names = ResourceNames::from_env_or_defaults();
            let sdk = load_sdk_config(endpoint_url.as_deref()).await;
            match ensure_resources(&sdk, &names, shards).await {
                Ok(created) => {
                    println!(
                        "stream {} and tables {}, {}, {} are ready (created: {})",
                        names.stream,
                        names.status_table,
                        names.oplog_table,
                        names.deadletter_table,
                        if created.is_empty() {
                            "none".to_owned()
                        } else {
                            created.join(", ")
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

async fn replay(endpoint_url: Option<String>, shard: &str, from: &str, to: &str) -> ExitCode {
    let (from, to) = match (SequenceNumber::parse(from), SequenceNumber::parse(to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) => return fail(&format!("--from: {e}")),
        (_, Err(e)) => return fail(&format!("--to: {e}")),
    };
    // Strict: replaying into default-named tables by mistake would be worse than stopping.
    let (names, settings) = match (ResourceNames::from_env(), processor_settings_from_env()) {
        (Ok(names), Ok(settings)) => (names, settings),
        (Err(e), _) => return fail(&e),
        (_, Err(e)) => return fail(&e),
    };
    let sdk = load_sdk_config(endpoint_url.as_deref()).await;
    let aws = AwsAdapters::new(&sdk, &names);
    let processor = Processor::new(
        aws.status,
        aws.checkpoints,
        aws.dead_letters,
        settings,
        Arc::new(SystemClock),
    );
    match replay_range(aws.stream.as_ref(), &processor, shard, &from, &to).await {
        Ok(report) => {
            println!(
                "replayed {} records of {shard}: {} applied, {} stale (a newer version was already there), {} dead-lettered",
                report.records, report.applied, report.stale, report.dead_lettered
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tidemark: {error}");
    ExitCode::FAILURE
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
