//! Drives a consumer (the processor) the way Lambda's Kinesis event source mapping does, for
//! `tidemark serve` and for tests: one poller per shard, one batch at a time per shard; a batch
//! is handed over when it reaches the batch size, when the batching window since its first
//! record has passed, or at the end of a closed shard. On a batch item failure the poller
//! re-reads from the reported record after a backoff, as Lambda does; after
//! `max_retry_attempts` retries of the same records it gives up on them as Lambda does
//! (`MaximumRetryAttempts`): it logs the shard and sequence range with the `tidemark replay`
//! command that applies them, keeps the range in [`EventSourceMapping::given_up`], and moves on,
//! so the next checkpoint of the shard passes over records that were not applied until they are
//! replayed. A child shard starts only once its parents are finished. Each shard starts after its
//! OPLOG checkpoint, or at the trim horizon when it has none.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::consumers::{CheckpointedConsumer, Checkpoints, Consumer};
use crate::domain::limits::MAX_BATCH_SIZE;
use crate::domain::progress::ConsumerName;
use crate::domain::SequenceNumber;
use crate::ports::{CheckpointReader, ShardReader, StartPosition, StreamError, StreamRecord};
use crate::run::shard_pages::ShardPages;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EsmSettings {
    /// Records per batch, at most 10,000 (Lambda's limit).
    pub batch_size: usize,
    /// How long to gather records after the first one before handing over a smaller batch
    /// (`MaximumBatchingWindowInSeconds`, the "settle" delay).
    pub batching_window: Duration,
    /// Pause between reads of a shard that had nothing new. Real Kinesis allows 5 GetRecords
    /// per second per shard, so keep this ≥ 200 ms against a real endpoint.
    pub idle_poll_interval: Duration,
    /// How often the shard list is read to find shards created by resharding.
    pub shard_refresh_interval: Duration,
    /// First pause after a failed batch, doubled per consecutive failure up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Retries of a failing batch before its failing records are given up on (`None`: retry
    /// for ever). Lambda's `MaximumRetryAttempts`; the template's default is 10,000.
    pub max_retry_attempts: Option<u32>,
}

impl Default for EsmSettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            batching_window: Duration::from_secs(1),
            idle_poll_interval: Duration::from_millis(200),
            shard_refresh_interval: Duration::from_secs(5),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_attempts: Some(DEFAULT_MAX_RETRY_ATTEMPTS),
        }
    }
}

/// The template's `MaximumRetryAttempts` default: with backoff capped at 5 s, about 14 hours of
/// retrying, long enough to ride out an outage.
pub const DEFAULT_MAX_RETRY_ATTEMPTS: u32 = 10_000;

/// Records of a shard the mapping gave up on: not applied, to be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenUp {
    pub shard_id: String,
    pub from: SequenceNumber,
    pub to: SequenceNumber,
    pub attempts: u32,
}

impl EsmSettings {
    fn backoff(&self, consecutive_failures: u32) -> Duration {
        self.base_backoff
            .saturating_mul(1u32 << consecutive_failures.saturating_sub(1).min(16))
            .min(self.max_backoff)
    }
}

#[derive(Default)]
struct FinishedShards {
    ids: Mutex<HashSet<String>>,
    changed: Notify,
}

impl FinishedShards {
    fn mark(&self, shard_id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard_id.to_owned());
        self.changed.notify_one();
    }

    fn contains(&self, shard_id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(shard_id)
    }
}

/// The consumer loop of `serve`: it reads, hands batches to the consumer, and owns the
/// checkpoint (read to resume, written after each batch).
pub struct EventSourceMapping {
    shards: Arc<dyn ShardReader>,
    consumer: CheckpointedConsumer,
    /// Whose records these are: named in the `replay` command logged for a range given up on.
    name: ConsumerName,
    checkpoint_reader: Arc<dyn CheckpointReader>,
    settings: EsmSettings,
    given_up: Mutex<Vec<GivenUp>>,
}

/// Sleeps, unless shutdown comes first; true when shutting down.
async fn pause(shutdown: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

impl EventSourceMapping {
    /// A mapping for the consumer `name` over the stream's `shards`, resuming from and writing to
    /// its own `checkpoints`. Usually built by [`crate::run::registry::Registration::mapping`].
    pub fn new(
        name: ConsumerName,
        consumer: Arc<dyn Consumer>,
        checkpoints: Checkpoints,
        shards: Arc<dyn ShardReader>,
        mut settings: EsmSettings,
    ) -> Self {
        settings.batch_size = settings.batch_size.clamp(1, MAX_BATCH_SIZE);
        Self {
            shards,
            consumer: CheckpointedConsumer::new(consumer, checkpoints.writer),
            name,
            checkpoint_reader: checkpoints.reader,
            settings,
            given_up: Mutex::default(),
        }
    }

    /// Every range given up on so far (the on-failure destination of `serve`).
    pub fn given_up(&self) -> Vec<GivenUp> {
        self.given_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until `shutdown` turns true; each poller finishes the batch it is processing.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let finished = Arc::new(FinishedShards::default());
        let mut started = HashSet::new();
        let mut pollers = JoinSet::new();
        loop {
            match self.shards.list_shards().await {
                Ok(shards) => {
                    let listed: HashSet<&str> =
                        shards.iter().map(|s| s.shard_id.as_str()).collect();
                    for shard in &shards {
                        // A parent no longer listed has aged out of the stream: nothing to wait for.
                        let parents_done =
                            [&shard.parent_shard_id, &shard.adjacent_parent_shard_id]
                                .into_iter()
                                .flatten()
                                .all(|p| !listed.contains(p.as_str()) || finished.contains(p));
                        if parents_done && started.insert(shard.shard_id.clone()) {
                            tracing::info!(shard_id = %shard.shard_id, "starting shard poller");
                            pollers.spawn(self.clone().poll_shard(
                                shard.shard_id.clone(),
                                finished.clone(),
                                shutdown.clone(),
                            ));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing shards failed; retrying"),
            }
            while pollers.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(self.settings.shard_refresh_interval) => {}
                _ = finished.changed.notified() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        while pollers.join_next().await.is_some() {}
    }

    /// Once the pollers have stopped: consumes every shard from its checkpoint to the end of
    /// what the stream holds, batch by batch, so that what was accepted before a graceful stop is
    /// consumed before the process ends (`serve` in memory, whose stream does not outlive it). A
    /// shard whose batch fails is left there, with a warning; the others go on. How many records
    /// were consumed.
    pub async fn drain(&self) -> usize {
        let shards = match self.shards.list_shards().await {
            Ok(shards) => shards,
            Err(e) => {
                tracing::warn!(error = %e, "listing shards to drain them failed");
                return 0;
            }
        };
        let mut consumed = 0;
        for shard in shards {
            let shard_id = shard.shard_id;
            if let Err(e) = self.drain_shard(&shard_id, &mut consumed).await {
                tracing::warn!(%shard_id, consumer = self.name.as_str(), error = %e,
                    "records accepted before the stop were not all consumed");
            }
        }
        consumed
    }

    async fn drain_shard(&self, shard_id: &str, consumed: &mut usize) -> Result<(), String> {
        let position = match self
            .checkpoint_reader
            .get(shard_id)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(checkpoint) => StartPosition::AfterSequence(checkpoint.sequence_number),
            None => StartPosition::TrimHorizon,
        };
        let mut pages = ShardPages::open(self.shards.as_ref(), shard_id, &position)
            .await
            .map_err(|e| e.to_string())?
            .with_page_records(self.settings.batch_size);
        while let Some(batch) = pages.next().await.map_err(|e| e.to_string())? {
            let outcome = self.consumer.run_batch(shard_id, &batch).await;
            outcome.report.log();
            if let Some(failed) = outcome.failure {
                return Err(format!("the batch failed at {failed}"));
            }
            *consumed += batch.len();
        }
        Ok(())
    }

    fn give_up(&self, shard_id: &str, from: SequenceNumber, to: SequenceNumber, attempts: u32) {
        let consumer = self.name.as_str();
        tracing::error!(
            %shard_id, from = %from, to = %to, attempts, consumer,
            "gave up on these records after every retry failed: the {consumer} has NOT applied \
             them, and its checkpoint of the shard will pass over them. Once the cause is fixed, \
             apply them with: tidemark replay --consumer {consumer} --shard {shard_id} \
             --from {from} --to {to}"
        );
        self.given_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(GivenUp {
                shard_id: shard_id.to_owned(),
                from,
                to,
                attempts,
            });
    }

    async fn poll_shard(
        self: Arc<Self>,
        shard_id: String,
        finished: Arc<FinishedShards>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let settings = self.settings;
        let mut failures = 0u32;
        let mut position = loop {
            match self.checkpoint_reader.get(&shard_id).await {
                Ok(Some(checkpoint)) => {
                    break StartPosition::AfterSequence(checkpoint.sequence_number)
                }
                Ok(None) => break StartPosition::TrimHorizon,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(%shard_id, error = %e, "reading the checkpoint failed; retrying");
                    if pause(&mut shutdown, settings.backoff(failures)).await {
                        return;
                    }
                }
            }
        };
        let mut iterator: Option<String> = None;
        let mut batch: Vec<StreamRecord> = Vec::new();
        let mut window_ends: Option<Instant> = None;
        failures = 0;
        let mut batch_retries = 0u32;

        loop {
            if *shutdown.borrow() {
                return;
            }
            let current = match iterator.take() {
                Some(it) => it,
                None => match self.shards.shard_iterator(&shard_id, &position).await {
                    Ok(it) => it,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%shard_id, error = %e, "getting a shard iterator failed; retrying");
                        if pause(&mut shutdown, settings.backoff(failures)).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let page = match self
                .shards
                .get_records(&current, settings.batch_size - batch.len())
                .await
            {
                Ok(page) => page,
                // `position` is just after the last record read, so nothing is skipped.
                Err(StreamError::ExpiredIterator) => continue,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(%shard_id, error = %e, "reading the shard failed; retrying");
                    iterator = Some(current);
                    if pause(&mut shutdown, settings.backoff(failures)).await {
                        return;
                    }
                    continue;
                }
            };
            let read_any = !page.records.is_empty();
            if let Some(last) = page.records.last() {
                position = StartPosition::AfterSequence(last.sequence_number.clone());
            }
            batch.extend(page.records);
            if !batch.is_empty() && window_ends.is_none() {
                window_ends = Some(Instant::now() + settings.batching_window);
            }
            let shard_ended = page.next_iterator.is_none();
            iterator = page.next_iterator;

            let ready = !batch.is_empty()
                && (batch.len() >= settings.batch_size
                    || shard_ended
                    || window_ends.is_some_and(|end| Instant::now() >= end));
            if ready {
                let outcome = self.consumer.run_batch(&shard_id, &batch).await;
                outcome.report.log();
                let last = batch.last().map(|r| r.sequence_number.clone());
                batch.clear();
                window_ends = None;
                if let Some(failed) = outcome.failure {
                    iterator = None;
                    if settings
                        .max_retry_attempts
                        .is_some_and(|max| batch_retries >= max)
                    {
                        let to = last.unwrap_or_else(|| failed.clone());
                        self.give_up(&shard_id, failed, to.clone(), batch_retries + 1);
                        position = StartPosition::AfterSequence(to);
                        batch_retries = 0;
                        failures = 0;
                        continue;
                    }
                    batch_retries += 1;
                    failures += 1;
                    position = StartPosition::AtSequence(failed);
                    if pause(&mut shutdown, settings.backoff(failures)).await {
                        return;
                    }
                    continue;
                }
                failures = 0;
                batch_retries = 0;
            }
            if shard_ended && batch.is_empty() {
                tracing::info!(%shard_id, "shard finished");
                finished.mark(&shard_id);
                return;
            }
            if !read_any {
                let wait = window_ends.map_or(settings.idle_poll_interval, |end| {
                    end.saturating_duration_since(Instant::now())
                        .min(settings.idle_poll_interval)
                });
                if pause(&mut shutdown, wait).await {
                    return;
                }
            }
        }
    }
}
