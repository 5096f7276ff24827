//! `tidemark`: the operator CLI. Each subcommand lives in its own module under `commands/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// mimalloc (the default feature): the allocator the processor function runs with, so
/// `bench-dynamodb` measures what Lambda runs, and one that gives freed memory back, so `serve`'s
/// memory stays flat over millions of events (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use commands::{
    bench, bench_archive, bench_dynamodb, bench_snapshot, bootstrap, coldstart, cost, rebuild,
    replay, serve, smoke, snapshot, teardown, verify,
};

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

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in one process: HTTP API, stream, processor, tables.
    Serve(serve::ServeArgs),
    /// Drive a running `tidemark serve` over HTTP and print throughput, latency, freshness,
    /// read-your-writes latency, correctness and (with --serve-pid) its peak memory.
    Bench(bench::BenchArgs),
    /// Time the processor against a real DynamoDB API (DynamoDB Local), beside the same
    /// conditional writes from its SDK adapter alone and from a minimal client; print writes/s
    /// and client CPU per write (run by scripts/bench-dynamodb).
    BenchDynamodb(bench_dynamodb::BenchDynamoArgs),
    /// What the archive costs per batch size (S3 and DynamoDB calls, bytes stored) and how fast
    /// a rebuild reads it back, into memory and (with --dynamodb-endpoint) into DynamoDB.
    BenchArchive(bench_archive::BenchArchiveArgs),
    /// What a snapshot saves a rebuild: records over 60 days, a snapshot at 90 %, a rebuild from
    /// the whole archive against one from the snapshot and the tail (in memory).
    BenchSnapshot(bench_snapshot::BenchSnapshotArgs),
    /// Start each function binary against a minimal local Lambda Runtime API, many times, and
    /// print its size, the time from exec to its first `next` request, and its peak memory after
    /// one invocation (a Kinesis batch of --batch-records records for the processor).
    Coldstart(coldstart::ColdstartArgs),
    /// Re-apply one shard's records from --from to --to (both included): the range a message in
    /// the on-failure queue names (KinesisBatchInfo shardId, startSequenceNumber,
    /// endSequenceNumber). Newer rows stay; OPLOG is not written. Names come from TIDEMARK_*.
    Replay(replay::ReplayArgs),
    /// Create the stream and tables at an endpoint if they are missing.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Rebuild STATUS into a new table from the archive (S3 or a directory) and then every record
    /// the stream still holds, through the same processor; resumable (--state), set-aside
    /// records and unreadable archive objects listed at the end.
    Rebuild(rebuild::RebuildArgs),
    /// Snapshot STATUS (its rows and the processor's checkpoints they reflect) into the archive,
    /// or --list the snapshots there; `rebuild --from-snapshot` then reads only what came after.
    Snapshot(snapshot::SnapshotArgs),
    /// The cost per million events for each shape of traffic (single or batched, distinct or
    /// repeated ids, history and idempotency keys on or off), counted by running the pipeline in
    /// memory with metered adapters against the price table; and a stack's monthly cost at rest.
    Cost(cost::CostArgs),
    /// After a deploy (or against `serve`): post an event and read it back with its token, a
    /// newer one too, find both in the history, read the shards and the status counts, and with
    /// --stack check that the template's alarms exist. Exits 1 with the reason on any failure.
    Smoke(smoke::SmokeArgs),
    /// After `sam delete`: delete the tables and the versioned archive bucket the stack
    /// retained (names from TIDEMARK_*), asking first; print the KMS key's deletion command.
    Teardown(teardown::TeardownArgs),
    /// Compare two STATUS tables id by id (the live one and a rebuilt or restored one) and list
    /// every id that differs; exits 1 when any does.
    Verify(verify::VerifyArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tidemark::telemetry::init_tracing(false);
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchDynamodb(args) => bench_dynamodb::run(args).await,
        Command::BenchArchive(args) => bench_archive::run(args).await,
        Command::BenchSnapshot(args) => bench_snapshot::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Cost(args) => cost::run(args).await,
        Command::Smoke(args) => smoke::run(args).await,
        Command::Teardown(args) => teardown::run(args).await,
        Command::Rebuild(args) => rebuild::run(args).await,
        Command::Snapshot(args) => snapshot::run(args).await,
        Command::Coldstart(args) => coldstart::run(args).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Bootstrap(args) => bootstrap::run(args).await,
    }
}
