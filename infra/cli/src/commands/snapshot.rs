//! `tidemark snapshot`: a view's rows (STATUS's, or the status view's with `--view
//! status-view`) and the positions they reflect, into the archive bucket (or a local archive
//! directory), and `--list` to see the snapshots there. A rebuild then
//! starts from one (`tidemark rebuild --from-snapshot latest`) and reads only what came after.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tidemark::adapters::memory::MemoryArchive;
use tidemark::adapters::s3::S3Archive;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::config::{ResourceNames, ARCHIVE_BUCKET_VAR};
use tidemark::ports::ArchiveReader;
use tidemark::run::snapshot::list_snapshots;
use tidemark_cli::serve::{keep_newest, snapshot_view, SnapshotArchive, StoppedDataDir};

use super::fail;
use super::rebuild::View;

#[derive(Args)]
pub struct SnapshotArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The archive bucket the snapshot goes to (default: TIDEMARK_ARCHIVE_BUCKET), under
    /// `snapshots/<view>/`.
    #[arg(long, env = ARCHIVE_BUCKET_VAR, conflicts_with = "archive_dir")]
    archive_bucket: Option<String>,
    /// A local archive directory instead.
    #[arg(long)]
    archive_dir: Option<PathBuf>,
    /// The data directory of a stopped `tidemark serve`: a snapshot of its tables into its
    /// archive (a running serve takes its own with --snapshot-interval-secs).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["archive_bucket", "archive_dir"])]
    data_dir: Option<PathBuf>,
    /// Which view: STATUS (`status`) or the status view (`status-view`: its entries; its
    /// counters and lists are rebuilt from them when loaded).
    #[arg(long, value_enum, default_value = "status")]
    view: View,
    /// List the snapshots in the archive instead of taking one.
    #[arg(long)]
    list: bool,
    /// After taking this one, keep only the newest N snapshots and delete the older ones.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "list")]
    keep: Option<u32>,
}

pub async fn run(args: SnapshotArgs) -> ExitCode {
    if let Some(dir) = &args.data_dir {
        return of_data_dir(dir, &args).await;
    }
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    let archive: Box<dyn SnapshotArchive> = match (&args.archive_dir, &args.archive_bucket) {
        (Some(dir), _) => match MemoryArchive::in_directory(dir) {
            Ok(archive) => Box::new(archive),
            Err(e) => return fail(&e),
        },
        (None, Some(bucket)) => Box::new(S3Archive::new(S3Archive::client(&sdk), bucket)),
        (None, None) => {
            return fail(&format!(
                "no archive: give --archive-bucket ({ARCHIVE_BUCKET_VAR}) or --archive-dir"
            ))
        }
    };
    let view = args.view.snapshots();
    if args.list {
        return list(archive.as_ref(), view).await;
    }
    let adapters = Adapters::aws(&sdk, &ResourceNames::from_env_or_defaults());
    let started = std::time::Instant::now();
    let manifest = match snapshot_view(&adapters, archive.as_ref(), args.view.disk()).await {
        Ok(manifest) => manifest,
        Err(e) => return fail(&e),
    };
    println!(
        "snapshot {}: {} rows, {} bytes, positions of {} shards, in {:.1} s; a rebuild from it \
         reads the archive from {}; rebuild from it with: tidemark rebuild --view {view} \
         --from-snapshot {} --into NEW_TABLE",
        manifest.id,
        manifest.rows,
        manifest.body_bytes,
        manifest.positions.len(),
        started.elapsed().as_secs_f64(),
        if manifest.archive_from.is_empty() {
            "its start (a shard has no checkpoint yet)"
        } else {
            manifest.archive_from.as_str()
        },
        manifest.id
    );
    prune(archive.as_ref(), args.view, args.keep).await
}

/// `--keep N`: the newest N kept, the older ones deleted.
async fn prune(archive: &dyn SnapshotArchive, view: View, keep: Option<u32>) -> ExitCode {
    let Some(keep) = keep else {
        return ExitCode::SUCCESS;
    };
    match keep_newest(archive, view.disk(), keep as usize).await {
        Ok(deleted) if deleted.is_empty() => println!("kept every snapshot (at most {keep})"),
        Ok(deleted) => println!(
            "deleted {} older snapshots: {}",
            deleted.len(),
            deleted.join(", ")
        ),
        Err(e) => return fail(&e),
    }
    ExitCode::SUCCESS
}

async fn list(archive: &dyn ArchiveReader, view: &str) -> ExitCode {
    let listed = match list_snapshots(archive, view).await {
        Ok(listed) => listed,
        Err(e) => return fail(&e),
    };
    if listed.is_empty() {
        println!("no snapshots");
    }
    for entry in listed {
        match entry {
            Ok(m) => println!(
                "{}  taken {}  {} rows  {} bytes  {} shards",
                m.id,
                m.taken_at,
                m.rows,
                m.body_bytes,
                m.positions.len()
            ),
            Err((key, error)) => println!("{key}  UNUSABLE: {error}"),
        }
    }
    ExitCode::SUCCESS
}

/// `--data-dir`: the tables of a stopped `serve`, into its own archive.
async fn of_data_dir(dir: &std::path::Path, args: &SnapshotArgs) -> ExitCode {
    let data = match StoppedDataDir::open(dir) {
        Ok(data) => data,
        Err(e) => return fail(&e),
    };
    if args.list {
        return list(data.archive.as_ref(), args.view.snapshots()).await;
    }
    let started = std::time::Instant::now();
    let manifest =
        match snapshot_view(&data.adapters, data.archive.as_ref(), args.view.disk()).await {
            Ok(manifest) => manifest,
            Err(e) => return fail(&e),
        };
    println!(
        "snapshot {} of {}: {} rows, {} bytes, positions of {} shards, in {:.1} s; rebuild from \
         it with: tidemark rebuild --data-dir {} --view {} --from-snapshot {}",
        manifest.id,
        args.view.snapshots(),
        manifest.rows,
        manifest.body_bytes,
        manifest.positions.len(),
        started.elapsed().as_secs_f64(),
        dir.display(),
        args.view.snapshots(),
        manifest.id
    );
    prune(data.archive.as_ref(), args.view, args.keep).await
}
