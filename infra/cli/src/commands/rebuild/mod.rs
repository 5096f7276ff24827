//! `tidemark rebuild`: STATUS (or the status view) again, from every archived record and then
//! every record the stream still holds, into a new table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tidemark::adapters::bootstrap::ensure_table;
use tidemark::adapters::disk::DiskView;
use tidemark::adapters::dynamodb::{DynamoCheckpointStore, DynamoStatusStore, DynamoStatusView};
use tidemark::adapters::kinesis::KinesisStream;
use tidemark::adapters::memory::{MemoryArchive, MemoryDeadLetterStore};
use tidemark::adapters::s3::S3Archive;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::config::{
    processor_settings_from_env, ARCHIVE_BUCKET_VAR, OPLOG_TABLE_VAR, STATUS_TABLE_VAR,
    STATUS_VIEW_TABLE_VAR, STREAM_NAME_VAR,
};
use tidemark::consumers::processor::Processor;
use tidemark::consumers::views::status::StatusView;
use tidemark::consumers::{Consumer, ConsumerCheckpoints};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{EventTime, SystemClock};
use tidemark::ports::{ArchiveReader, DeadLetterReader};
use tidemark::run::rebuild::follow::Follower;
use tidemark::run::rebuild::{
    rebuild, rebuild_from_archive, ArchiveRebuild, RebuildProgress, RebuildReport, TimeWindow,
};
use tidemark::run::snapshot::{STATUS as STATUS_SNAPSHOTS, STATUS_VIEW as STATUS_VIEW_SNAPSHOTS};

use super::{fail, follow};

mod local;
mod snapshot;

#[derive(Args)]
pub struct RebuildArgs {
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The stream to read after the archive (default: TIDEMARK_STREAM_NAME); without one, only
    /// the archive is read.
    #[arg(long, env = STREAM_NAME_VAR)]
    stream: Option<String>,
    /// The archive bucket to read first (default: TIDEMARK_ARCHIVE_BUCKET).
    #[arg(long, env = ARCHIVE_BUCKET_VAR, conflicts_with = "archive_dir")]
    archive_bucket: Option<String>,
    /// A local archive instead: the `archive` directory under `tidemark serve --data-dir`.
    #[arg(long)]
    archive_dir: Option<PathBuf>,
    /// Apply only records that arrived at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    from: Option<EventTime>,
    /// Apply only records that arrived before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<EventTime>,
    /// The STATUS table (or with `--view status-view`, the status view's table) to rebuild
    /// into; created when missing. Never the live one.
    #[arg(long, required_unless_present = "data_dir")]
    into: Option<String>,
    /// Instead of a new table: the data directory of a stopped `tidemark serve`, whose view is
    /// made again in place: emptied, loaded from --from-snapshot if given, and the next `serve`
    /// applies the log after it (docs/serve.md#snapshots).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["into", "stream", "archive_bucket", "archive_dir", "from", "until", "follow", "state"])]
    data_dir: Option<PathBuf>,
    /// Which view to rebuild: STATUS (`status`) or the status view (`status-view`: ids and
    /// counts by status, the same records through the same version rule).
    #[arg(long, value_enum, default_value = "status")]
    view: View,
    /// Start from a snapshot in the archive (`tidemark snapshot`): an id from `tidemark
    /// snapshot --list`, or `latest`. Its rows are loaded, then only the records after its
    /// positions are applied. Of the view given by --view; not with --from/--until.
    #[arg(long, value_name = "ID", conflicts_with_all = ["from", "until"])]
    from_snapshot: Option<String>,
    /// After the rebuild, keep applying the stream to the new table until the live processor
    /// mirrors into it (`StatusTableSwitch=mirror`) and this follower has passed where it
    /// started to: then readers can be moved to it (`StatusTableSwitch=serve`) with no id going
    /// back. STATUS only; needs --stream and --oplog-table.
    #[arg(long)]
    follow: bool,
    /// How long the follower pauses between passes over the stream.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    follow_pause_ms: u64,
    /// The OPLOG table holding the live processor's checkpoints, which --follow watches
    /// (default: TIDEMARK_OPLOG_TABLE).
    #[arg(long, env = OPLOG_TABLE_VAR)]
    oplog_table: Option<String>,
    /// Where progress is saved after every page; run again with it to continue after an
    /// interruption (default: rebuild-<TABLE>.json).
    #[arg(long)]
    state: Option<PathBuf>,
}

/// A view `rebuild` and `snapshot` work on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    Status,
    StatusView,
}

impl View {
    /// The variable naming the live table of this view, which a rebuild must never write.
    fn live_var(self) -> &'static str {
        match self {
            View::Status => STATUS_TABLE_VAR,
            View::StatusView => STATUS_VIEW_TABLE_VAR,
        }
    }

    /// Its snapshots' folder in the archive.
    pub fn snapshots(self) -> &'static str {
        match self {
            View::Status => STATUS_SNAPSHOTS,
            View::StatusView => STATUS_VIEW_SNAPSHOTS,
        }
    }

    /// The same view in `serve`'s tables.
    pub fn disk(self) -> DiskView {
        match self {
            View::Status => DiskView::Status,
            View::StatusView => DiskView::StatusView,
        }
    }

    /// The consumer that writes it: its checkpoints are a snapshot's positions.
    pub fn consumer(self) -> ConsumerName {
        match self {
            View::Status => ConsumerName::PROCESSOR,
            View::StatusView => ConsumerName::STATUS_VIEW,
        }
    }
}

fn parse_time(text: &str) -> Result<EventTime, String> {
    EventTime::parse_rfc3339(text)
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 time (2024-05-01T12:00:00Z)"))
}

/// Adds a part's counts to the total, or hands its error back.
fn add(
    total: &mut RebuildReport,
    part: Result<RebuildReport, tidemark::run::rebuild::RebuildError>,
) -> Result<(), tidemark::run::rebuild::RebuildError> {
    let part = part?;
    total.shards += part.shards;
    total.objects += part.objects;
    total.records += part.records;
    total.applied += part.applied;
    total.stale += part.stale;
    total.set_aside += part.set_aside;
    total.corrupt_objects.extend(part.corrupt_objects);
    Ok(())
}

fn load(path: &PathBuf) -> Result<RebuildProgress, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a rebuild state file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RebuildProgress::default()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Writes the state through a temporary file, so an interruption never leaves half a file.
fn save(path: &PathBuf, progress: &RebuildProgress) -> Result<(), String> {
    let text = serde_json::to_string_pretty(progress).map_err(|e| e.to_string())?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

pub async fn run(args: RebuildArgs) -> ExitCode {
    if let Some(dir) = &args.data_dir {
        return local::run(dir, args.view, args.from_snapshot.as_deref()).await;
    }
    let Some(table) = args.into.clone() else {
        return fail(&"give --into TABLE (or --data-dir DIR)");
    };
    let live_var = args.view.live_var();
    if std::env::var(live_var).is_ok_and(|live| live == table) {
        return fail(&format!(
            "--into {} is the live table ({live_var}); rebuild into a new table and compare \
             them with tidemark verify",
            table
        ));
    }
    if args.follow {
        if args.view != View::Status {
            return fail(
                &"--follow switches STATUS; the status view is rebuilt and compared with verify",
            );
        }
        if args.stream.is_none() || args.oplog_table.is_none() {
            return fail(&format!(
                "--follow reads the stream and watches the processor's checkpoints: give \
                 --stream ({STREAM_NAME_VAR}) and --oplog-table ({OPLOG_TABLE_VAR})"
            ));
        }
    }
    let settings = match processor_settings_from_env() {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("rebuild-{}.json", table)));
    let mut progress = match load(&state) {
        Ok(progress) => progress,
        Err(e) => return fail(&e),
    };
    let sdk = load_sdk_config(args.endpoint_url.as_deref()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let (hash, range) = match args.view {
        View::Status => ("id", None),
        View::StatusView => ("pk", Some("sk")),
    };
    if let Err(e) = ensure_table(&dynamodb, &table, hash, range).await {
        return fail(&e);
    }
    let archive: Option<Box<dyn ArchiveReader>> = match (&args.archive_dir, &args.archive_bucket) {
        (Some(dir), _) => match MemoryArchive::in_directory(dir) {
            Ok(archive) => Some(Box::new(archive)),
            Err(e) => return fail(&e),
        },
        (None, Some(bucket)) => Some(Box::new(S3Archive::new(S3Archive::client(&sdk), bucket))),
        (None, None) => None,
    };
    if archive.is_none() && args.stream.is_none() {
        return fail(&format!(
            "nothing to read: give --archive-bucket ({ARCHIVE_BUCKET_VAR}), --archive-dir or \
             --stream ({STREAM_NAME_VAR})"
        ));
    }
    let window = TimeWindow {
        from: args.from,
        until: args.until,
    };
    // Poison is listed at the end rather than written to the live DEADLETTER a second time.
    let set_aside = Arc::new(MemoryDeadLetterStore::default());
    let status_into = Arc::new(DynamoStatusStore::new(dynamodb.clone(), &table));
    let view_into = Arc::new(StatusView::new(
        Arc::new(DynamoStatusView::new(dynamodb, &table)),
        settings.limits,
        Arc::new(SystemClock),
    ));
    let processor: Arc<dyn Consumer> = match args.view {
        View::Status => Arc::new(Processor::new(
            status_into.clone(),
            set_aside.clone(),
            settings,
            Arc::new(SystemClock),
        )),
        View::StatusView => view_into.clone(),
    };
    // A snapshot: its rows into the new table once (a resumed rebuild remembers it), and its
    // positions, from which the archive and the stream are read.
    let mut after_positions = Default::default();
    if let Some(id) = &args.from_snapshot {
        let Some(archive) = &archive else {
            return fail(&format!(
                "--from-snapshot reads the snapshot from the archive: give --archive-bucket \
                 ({ARCHIVE_BUCKET_VAR}) or --archive-dir"
            ));
        };
        let into = match args.view {
            View::Status => snapshot::Into::Status(status_into.as_ref()),
            View::StatusView => snapshot::Into::StatusView(view_into.as_ref()),
        };
        let loaded = snapshot::start_from(archive.as_ref(), id, into, &table, &mut progress)
            .await
            .and_then(|positions| save(&state, &progress).map(|()| positions));
        after_positions = match loaded {
            Ok(positions) => positions,
            Err(e) => return fail(&e),
        };
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} records {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut report = RebuildReport::default();
    if let Some(archive) = &archive {
        let mut last = 0;
        let result = rebuild_from_archive(
            ArchiveRebuild::new(archive.as_ref(), processor.as_ref())
                .window(window)
                .after_positions(after_positions.clone())
                .saving(|progress| save(&state, progress))
                .reporting(|key, records| {
                    bar.inc((records - last) as u64);
                    last = records;
                    bar.set_message(format!("(archive: {key})"));
                }),
            &mut progress,
        )
        .await;
        if let Err(e) = add(&mut report, result) {
            bar.finish_and_clear();
            return fail(&format!("{e} (state: {})", state.display()));
        }
    }
    let stream = args
        .stream
        .as_ref()
        .map(|name| KinesisStream::new(aws_sdk_kinesis::Client::new(&sdk), name));
    if let Some(stream) = &stream {
        let result = rebuild(
            stream,
            processor.as_ref(),
            window,
            &mut progress,
            |progress| save(&state, progress),
            |shard, records| {
                bar.inc(records as u64);
                bar.set_message(format!("(stream: {shard})"));
            },
        )
        .await;
        if let Err(e) = add(&mut report, result) {
            bar.finish_and_clear();
            return fail(&format!("{e} (state: {})", state.display()));
        }
    }
    bar.finish_and_clear();
    println!(
        "rebuilt {}: {} archive objects, {} shards of the stream, {} records, {} rows written, \
         {} stale, {} set aside",
        table,
        report.objects,
        report.shards,
        report.records,
        report.applied,
        report.stale,
        report.set_aside
    );
    if let Ok(letters) = set_aside.list().await {
        for letter in letters.iter().take(20) {
            println!(
                "  set aside: {} {}: {}",
                letter.shard_id, letter.sequence_number, letter.reason
            );
        }
    }
    for corrupt in &report.corrupt_objects {
        println!(
            "  unreadable archive object {}: {}",
            corrupt.key, corrupt.reason
        );
    }
    match args.view {
        View::Status => println!(
            "compare it with the live table: tidemark verify --against {}",
            table
        ),
        View::StatusView => println!(
            "compare it with STATUS: tidemark verify --status-view {}",
            table
        ),
    }
    if !report.corrupt_objects.is_empty() {
        return fail(&format!(
            "{} archive objects could not be read (listed above): their records are not in {}",
            report.corrupt_objects.len(),
            table
        ));
    }
    if let (true, Some(stream), Some(oplog)) = (args.follow, &stream, &args.oplog_table) {
        let live = ConsumerCheckpoints::new(
            DynamoCheckpointStore::new(aws_sdk_dynamodb::Client::new(&sdk), oplog),
            ConsumerName::PROCESSOR,
        );
        let follower = Follower {
            stream,
            consumer: processor.as_ref(),
            live: &live,
            into: &table,
        };
        let pause = Duration::from_millis(args.follow_pause_ms);
        if let Err(e) = follow::run(&follower, &mut progress, pause, |p| save(&state, p)).await {
            return fail(&format!("{e} (state: {})", state.display()));
        }
    }
    ExitCode::SUCCESS
}
