//! `tidemark serve`: the whole pipeline in one process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tidemark::adapters::disk::{on_disk, DiskLog, DiskTables};
use tidemark::adapters::kafka::{KafkaLog, KafkaTopic};
use tidemark::adapters::memory::{MemoryArchive, MemoryBackend, DEFAULT_FEED_CAPACITY};
use tidemark::adapters::Adapters;
use tidemark::config::{
    idempotency_ttl_from_env, limits_from_env, processor_settings_from_env, stuck_after_from_env,
    ResourceNames, IDEMPOTENCY_TTL_HOURS_VAR,
};
use tidemark::run::esm::{EsmSettings, DEFAULT_MAX_RETRY_ATTEMPTS};
use tidemark::run::registry::Registry;
use tidemark_cli::serve::{
    aws_adapters, catch_up, default_poll_interval, restore_from_archive, NetworkSettings,
    ServeSettings, SnapshotSchedule, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT, DEFAULT_SHUTDOWN_GRACE,
};
use tokio::sync::watch;

use super::fail;
use adapters::Built;

mod adapters;

/// With --in-memory, idempotency keys live an hour unless `TIDEMARK_IDEMPOTENCY_TTL_HOURS` says
/// otherwise (on disk they live as long as on AWS): `serve` then holds every live key in memory
/// (0.8 KB each, measured with a 300-byte answer), and a day of keys at a steady keyed load
/// would outgrow a laptop (100 keyed events/s for a day: 7 GB); an hour (290 MB at that rate)
/// covers any client's retries.
const MEMORY_IDEMPOTENCY_TTL: Duration = Duration::from_secs(60 * 60);

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// In this process (the default without an endpoint): the stream and tables in --data-dir,
    /// or only in memory with --in-memory.
    Memory,
    /// Real Kinesis and DynamoDB, at --endpoint-url or wherever the AWS environment points.
    Aws,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the HTTP API (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Where the stream and tables live; default: aws when an endpoint is given, else memory.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Endpoint for Kinesis and DynamoDB (e.g. LocalStack's http://127.0.0.1:4566).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The log: by default the in-memory stream or Kinesis (with the backend); or a Kafka topic,
    /// `kafka://HOST:PORT/TOPIC` (created with --shards partitions when missing), which the
    /// ingest writes with acks=all and every consumer reads (docs/kafka.md).
    #[arg(long, value_name = "URL", value_parser = KafkaTopic::parse)]
    log: Option<KafkaTopic>,
    /// Shards of the in-memory stream, or of the stream created when it is missing.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// Records per batch handed to each consumer (1 to 10,000). The template's default too; on
    /// disk a batch's checkpoint and HISTORY write are one write each, so bigger batches cost
    /// less per record (BENCHMARKS.md).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_size: u32,
    /// Batching window in milliseconds: how long a shard gathers records before a batch
    /// smaller than --batch-size is processed (the "settle" delay).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=300_000))]
    batch_window_ms: u64,
    /// Pause between reads of an idle shard (default: 20 in memory, 200 against an endpoint).
    #[arg(long)]
    poll_interval_ms: Option<u64>,
    /// Retries of a failing batch before its failing records are given up on (logged with the
    /// `tidemark replay` command that applies them), like Lambda's MaximumRetryAttempts.
    #[arg(long, default_value_t = DEFAULT_MAX_RETRY_ATTEMPTS, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    max_retry_attempts: u32,
    /// Connections served at once; past it a new one is answered 503 (Retry-After: 1) and closed.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_connections: u32,
    /// Of those, the most one client (IP address) may hold; past it its new ones get 503.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT as u32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_connections_per_client: u32,
    /// Seconds a client has to send a request's headers (also the keep-alive idle timeout).
    #[arg(long, default_value_t = DEFAULT_HEADER_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, default_value_t = DEFAULT_BODY_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout_secs: u64,
    /// Without an endpoint: keep the stream in DIR/log.redb (every event on disk before its
    /// 202), the tables (STATUS, OPLOG, HISTORY, DEADLETTER, the status view) in DIR/tables.redb
    /// and the archive in DIR/archive (one gzip file per batch); a restart resumes every
    /// consumer from its checkpoint there (docs/serve.md). [default: ./tidemark-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Keep nothing: the stream and tables only in memory, gone when serve stops (tests,
    /// throwaway runs).
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// On disk: MiB of the tables' file kept in memory (the rest is read from disk).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    cache_mib: u32,
    /// Without an endpoint: changes of STATUS kept for `GET /changes` (the oldest go first; a
    /// cursor older than what is kept is answered 410).
    #[arg(long, default_value_t = DEFAULT_FEED_CAPACITY as u32, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    change_feed_capacity: u32,
    /// On disk: every N seconds a snapshot of STATUS and of the status view into
    /// DIR/archive/snapshots/, for `tidemark rebuild --data-dir DIR --from-snapshot latest`
    /// (docs/serve.md#snapshots). Off by default: the tables are durable, so a snapshot only
    /// bounds a rebuild, and each one scans the views.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=30 * 24 * 3600))]
    snapshot_interval_secs: Option<u64>,
    /// With --snapshot-interval-secs: the newest snapshots of each view kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000), requires = "snapshot_interval_secs")]
    keep_snapshots: u32,
    /// Seconds requests in flight get to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_secs: u64,
}

/// Where `serve` keeps its data without an endpoint unless told otherwise: relative to where it
/// is started, so a user who posts events, stops it and starts it again has them back.
const DEFAULT_DATA_DIR: &str = "tidemark-data";

pub async fn run(args: ServeArgs) -> ExitCode {
    let (processor, limits, idempotency_ttl, stuck_after) = match (
        processor_settings_from_env(),
        limits_from_env(),
        idempotency_ttl_from_env(),
        stuck_after_from_env(),
    ) {
        (Ok(p), Ok(l), Ok(t), Ok(s)) => (p, l, t, s),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return fail(&e),
    };
    let snapshots = match args.snapshot_interval_secs {
        Some(_) if !args.local() || args.data_dir().is_none() => {
            return fail(
                &"--snapshot-interval-secs takes snapshots of the tables in a data directory: \
                  not with --in-memory, an endpoint or a Kafka log without --data-dir",
            )
        }
        Some(secs) => Some(SnapshotSchedule {
            every: Duration::from_secs(secs),
            keep: args.keep_snapshots as usize,
        }),
        None => None,
    };
    let keys_in_memory = args.local() && args.data_dir().is_none();
    let idempotency_ttl = if keys_in_memory && std::env::var_os(IDEMPOTENCY_TTL_HOURS_VAR).is_none()
    {
        MEMORY_IDEMPOTENCY_TTL
    } else {
        idempotency_ttl
    };
    let settings = ServeSettings {
        esm: EsmSettings {
            batch_size: args.batch_size as usize,
            batching_window: Duration::from_millis(args.batch_window_ms),
            idle_poll_interval: args
                .poll_interval_ms
                .map_or(default_poll_interval(args.local()), Duration::from_millis),
            max_retry_attempts: Some(args.max_retry_attempts),
            ..EsmSettings::default()
        },
        processor,
        limits,
        idempotency_ttl: Some(idempotency_ttl),
        stuck_after: Some(stuck_after),
        network: NetworkSettings {
            header_read_timeout: Duration::from_secs(args.header_timeout_secs),
            body_read_timeout: Duration::from_secs(args.body_timeout_secs),
            max_connections: args.max_connections as usize,
            max_connections_per_client: args.max_connections_per_client as usize,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        },
        snapshots,
        ..ServeSettings::default()
    };
    let Built {
        adapters,
        description,
        log,
        new_tables,
    } = match args.adapters().await {
        Ok(built) => built,
        Err(e) => return fail(&e),
    };
    // Tables already on disk need nothing: every consumer resumes from its own checkpoint.
    if new_tables {
        match restore_from_archive(&adapters, processor, log.as_deref()).await {
            Ok(report) if report.objects > 0 => {
                println!(
                    "restored from the archive: {} objects, {} records, {} STATUS rows",
                    report.objects, report.records, report.applied
                );
                for corrupt in &report.corrupt_objects {
                    eprintln!(
                        "warning: archive object {} could not be read and was skipped: {}",
                        corrupt.key, corrupt.reason
                    );
                }
            }
            Ok(_) => {}
            Err(e) => return fail(&format!("restoring from the archive: {e}")),
        }
    }
    if log.is_some() {
        let started = std::time::Instant::now();
        let applied = catch_up(&adapters, &Registry::standard(), &settings).await;
        // Only after a crash (a graceful stop consumes everything first): say what it cost.
        if applied.iter().any(|(_, records)| *records > 0) {
            let each: Vec<String> = applied
                .iter()
                .map(|(name, records)| format!("{name} {records}"))
                .collect();
            println!(
                "caught up on the log before listening, in {} ms: records applied again by {}",
                started.elapsed().as_millis(),
                each.join(", ")
            );
        }
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", args.listen)),
    };
    let address = listener.local_addr().map_or(args.listen, |a| a);
    println!(
        "tidemark listening on http://{address} ({description}; batch size {}, window {} ms)",
        args.batch_size, args.batch_window_ms
    );
    if !address.ip().is_loopback() {
        eprintln!(
            "warning: listening on {address}, beyond this machine. serve has no authentication \
             and no TLS: anyone who can reach the port can post and read events."
        );
    }
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    // Kept open until serve ends: dropping the last handle closes the file.
    let _log = log;
    match tidemark_cli::serve::run(adapters, listener, settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
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
