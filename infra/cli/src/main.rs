//! `tidemark`: the operator CLI.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tidemark::adapters::bootstrap::ensure_resources;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::{limits_from_env, processor_settings_from_env, ResourceNames};
use tidemark::esm::EsmSettings;
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
