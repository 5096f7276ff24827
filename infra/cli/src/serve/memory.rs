//! What `serve` does with its in-memory state: restore the tables from the archive of a data
//! directory that has no tables on disk yet, and trim the in-memory stream to what is not yet
//! consumed.

use super::*;
use tidemark::adapters::disk::DiskLog;

/// How often `serve` in memory drops the records every consumer has checkpointed past.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn consumer_settings(processor: ProcessorSettings) -> ConsumerSettings {
    ConsumerSettings {
        processor,
        clock: Arc::new(SystemClock),
    }
}

/// What `serve --data-dir` does at start-up when the directory has no tables yet, before it
/// serves: STATUS, HISTORY and the status view from the archive (a data directory of a `serve`
/// that kept only the archive; nothing for a new one), and the log on disk numbered past it,
/// so no number is given twice. The consumers then read the log from its start.
pub async fn restore_from_archive(
    adapters: &Adapters,
    settings: ProcessorSettings,
    log: Option<&DiskLog>,
) -> Result<RebuildReport, RebuildError> {
    let registry = Registry::standard();
    let consumer_settings = consumer_settings(settings);
    // Every consumer again over the archive, except that the archiver only rewrites HISTORY:
    // the archive is what is being read.
    let consumers = registry
        .iter()
        .map(|r| -> Arc<dyn Consumer> {
            if r.name == ConsumerName::ARCHIVER {
                Arc::new(Archiver::history_only(
                    adapters.history_writer(),
                    settings.limits,
                    Arc::new(SystemClock),
                ))
            } else {
                r.consumer(adapters, &consumer_settings)
            }
        })
        .collect();
    let restore = Restore {
        consumers,
        newest: std::sync::Mutex::new(None),
    };
    let report = rebuild_from_archive(
        ArchiveRebuild::new(adapters.archive_reader().as_ref(), &restore),
        &mut RebuildProgress::default(),
    )
    .await?;
    let newest = restore
        .newest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let (Some(memory), Some(newest)) = (adapters.memory_backend(), &newest) {
        memory.stream.continue_after(newest);
    }
    if let (Some(log), Some(newest)) = (log, &newest) {
        log.continue_after(newest);
    }
    Ok(report)
}

/// With the tables on disk, after a restart and before `serve` listens: every consumer of
/// `registry` takes each shard from its checkpoint to the end of the log. A row written after
/// its consumer's last durable checkpoint may have been lost in a crash, though a reader may
/// have seen it; it came from a record in the log past that checkpoint (the log is synced before
/// a record can be read), so applying those records again before the first read is served means
/// no read after a restart shows an id older than a read before it. The work is the records
/// past the checkpoints, not the history. How many records each consumer applied, by name.
pub async fn catch_up(
    adapters: &Adapters,
    registry: &Registry,
    settings: &ServeSettings,
) -> Vec<(&'static str, usize)> {
    let consumer_settings = consumer_settings(settings.processor);
    // All at once, as when serving: their writes share the tables' commits.
    futures::future::join_all(registry.iter().map(|registration| {
        let mapping = registration.mapping(adapters, &consumer_settings, settings.esm);
        async move { (registration.name.as_str(), mapping.drain().await) }
    }))
    .await
}

/// Every consumer over the same records, noting the newest sequence number.
struct Restore {
    consumers: Vec<Arc<dyn Consumer>>,
    newest: std::sync::Mutex<Option<SequenceNumber>>,
}

#[async_trait::async_trait]
impl Consumer for Restore {
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        if let Some(last) = records.iter().map(|r| &r.sequence_number).max() {
            let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            if newest.as_ref().is_none_or(|n| last > n) {
                *newest = Some(last.clone());
            }
        }
        // The last consumer's outcome stands for the batch; any failure stops it first.
        let mut outcome = None;
        for consumer in &self.consumers {
            let this = consumer.consume(shard_id, records).await;
            if this.failure.is_some() {
                return this;
            }
            outcome = Some(this);
        }
        outcome.unwrap_or_else(|| BatchOutcome {
            failure: None,
            checkpoint: None,
            processed_at: String::new(),
            report: Default::default(),
        })
    }
}

/// Keeps the in-memory stream to what is not yet consumed, so memory stays flat under a steady
/// load: every `TRIM_INTERVAL`, each shard's records up to the lowest of its consumers'
/// checkpoints (every registered consumer's) are dropped; a shard a consumer has no
/// checkpoint for yet is kept whole. Kinesis keeps records for its retention period instead.
pub(super) async fn trim_consumed(
    stream: Arc<MemoryStream>,
    consumers: Vec<Arc<dyn CheckpointReader>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TRIM_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        // An in-memory read cannot fail; if it ever did, the next round tries again.
        let mut lowest: Option<HashMap<String, SequenceNumber>> = None;
        for consumer in &consumers {
            let Ok(checkpoints) = consumer.list().await else {
                lowest = None;
                break;
            };
            let theirs: HashMap<String, SequenceNumber> = checkpoints
                .into_iter()
                .map(|c| (c.shard_id, c.sequence_number))
                .collect();
            lowest = Some(match lowest {
                None => theirs,
                Some(mut so_far) => {
                    so_far.retain(|shard, sequence| match theirs.get(shard) {
                        Some(other) => {
                            if other < sequence {
                                sequence.clone_from(other);
                            }
                            true
                        }
                        None => false,
                    });
                    so_far
                }
            });
        }
        for (shard_id, sequence_number) in lowest.unwrap_or_default() {
            stream.trim_through(&shard_id, &sequence_number);
        }
    }
}
