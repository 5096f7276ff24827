//! The status view's consumer: a batch → entries and counters, committed together
//! ([`crate::domain::status_view`] has the rule and why the counts stay exact).
//!
//! Store calls per batch: one read of the batch's distinct ids (DynamoDB: BatchGetItem, 100 ids
//! per call), then one commit per [`MAX_COMMIT_ITEMS`](crate::domain::status_view::MAX_COMMIT_ITEMS)
//! items that change (TransactWriteItems; a store that takes more in one commit says so:
//! `StatusViewWriter::max_commit_items`); ids whose newest event is not newer than their entry
//! cost only the read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::consumers::{BatchOutcome, Consumer};
use crate::domain::status_view::{commits, decide, ViewEntry};
use crate::domain::{
    coalesce, decode_log_record, Clock, Limits, SequenceNumber, Version, VersionedEvent,
};
use crate::ports::{StatusViewWriter, StoreError, StreamRecord, ViewCommit};
use crate::telemetry::BatchReport;

/// Times a commit that found its entries changed underneath is decided again before the
/// batch fails at those ids (the mapping retries it then). Only a second writer of the same ids
/// (a reshard's overlap, a rebuild beside the live view) conflicts at all.
const CONFLICT_RETRIES: usize = 3;

pub struct StatusView {
    store: Arc<dyn StatusViewWriter>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

/// An id's newest event in the batch, as the entry it would become.
struct Candidate {
    entry: ViewEntry,
    lowest_sequence: SequenceNumber,
}

impl StatusView {
    /// `limits`: the processor's decode rules, so that the view applies exactly the records
    /// STATUS applies (poison is the processor's to dead-letter; here it is only skipped).
    pub fn new(store: Arc<dyn StatusViewWriter>, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            limits,
            clock,
        }
    }

    fn candidates(&self, shard_id: &str, records: &[StreamRecord]) -> Vec<Candidate> {
        let decoded = records
            .iter()
            .filter_map(|record| {
                let event =
                    decode_log_record(&record.data, record.approximate_arrival, &self.limits)
                        .ok()?;
                Some(VersionedEvent {
                    version: Version::new(event.event_time, record.sequence_number.clone()),
                    event,
                })
            })
            .collect();
        coalesce(decoded)
            .into_iter()
            .map(|group| Candidate {
                entry: ViewEntry {
                    version: group.newest.version.key(),
                    id: group.newest.event.id,
                    status: group.newest.event.status,
                    shard_id: shard_id.to_owned(),
                },
                lowest_sequence: group.lowest_sequence,
            })
            .collect()
    }

    /// Decides `pending` from a fresh read and commits the changes, taking each id out of
    /// `pending` once it is done (committed, or not newer than its entry).
    async fn apply(
        &self,
        pending: &mut Vec<&ViewEntry>,
        report: &mut BatchReport,
    ) -> Result<(), Halt> {
        let ids: Vec<String> = pending.iter().map(|e| e.id.clone()).collect();
        let stored = self.store.entries(&ids).await.map_err(Halt::Failed)?;
        let changes: Vec<_> = pending
            .iter()
            .filter_map(|e| decide(stored.get(&e.id), (*e).clone()))
            .collect();
        let changing: HashSet<&str> = changes.iter().map(|c| c.after.id.as_str()).collect();
        let before = pending.len();
        pending.retain(|e| changing.contains(e.id.as_str()));
        report.stale += before - pending.len();
        for commit in commits(changes, self.store.max_commit_items()) {
            match self.store.commit(&commit).await.map_err(Halt::Failed)? {
                ViewCommit::Committed => {
                    report.applied += commit.len();
                    let done: HashSet<&str> = commit.iter().map(|c| c.after.id.as_str()).collect();
                    pending.retain(|e| !done.contains(e.id.as_str()));
                }
                ViewCommit::Conflict => return Err(Halt::Conflict),
            }
        }
        Ok(())
    }

    /// Applies `pending` until every entry is committed or not newer than the stored one,
    /// deciding again after a conflict (at most [`CONFLICT_RETRIES`] times); what is left in
    /// `pending` was not applied, and the report says why.
    async fn apply_all(&self, pending: &mut Vec<&ViewEntry>, report: &mut BatchReport) {
        let mut conflicts = 0;
        loop {
            match self.apply(pending, report).await {
                Ok(()) => return,
                Err(Halt::Conflict) if conflicts < CONFLICT_RETRIES => conflicts += 1,
                Err(Halt::Conflict) => {
                    report.last_error = Some(
                        "the status view's entries kept changing while the batch decided".into(),
                    );
                    return;
                }
                Err(Halt::Failed(e)) => {
                    report.last_error = Some(e.to_string());
                    return;
                }
            }
        }
    }

    /// Loads entries (a snapshot's) by the same rule as records: each id's entry is replaced
    /// only by a newer one, with its counters and list item moved in the same commit, so
    /// loading into a table that already holds some of them (an interrupted load run again)
    /// counts nothing twice. Each shard's entries are loaded in order and the shards at once:
    /// a shard's items take only its own entries' writes, so no two commits at once touch the
    /// same item, as when the view is written from the stream (one batch per shard at a time).
    /// Returns the entries written.
    pub async fn load(&self, entries: &[ViewEntry]) -> Result<usize, String> {
        let mut by_shard: std::collections::BTreeMap<&str, Vec<&ViewEntry>> = Default::default();
        for entry in entries {
            by_shard
                .entry(entry.shard_id.as_str())
                .or_default()
                .push(entry);
        }
        let loads = by_shard.into_values().map(|shard| async move {
            let mut report = BatchReport::default();
            for chunk in shard.chunks(self.store.max_commit_items()) {
                let mut pending = chunk.to_vec();
                self.apply_all(&mut pending, &mut report).await;
                if !pending.is_empty() {
                    return Err(report
                        .last_error
                        .unwrap_or_else(|| "entries were left unwritten".into()));
                }
            }
            Ok(report.applied)
        });
        futures::future::try_join_all(loads)
            .await
            .map(|applied| applied.into_iter().sum())
    }

    async fn consume_batch(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        let started = Instant::now();
        let now = self.clock.now();
        let now_text = now.to_rfc3339();
        let mut report = BatchReport::for_batch(shard_id, records, now);
        let candidates = self.candidates(shard_id, records);
        report.distinct_ids = candidates.len();

        let mut pending: Vec<&ViewEntry> = candidates.iter().map(|c| &c.entry).collect();
        self.apply_all(&mut pending, &mut report).await;
        // What is still pending was not committed: the mapping delivers it again.
        report.failed = pending.len();
        let unapplied: HashSet<&str> = pending.iter().map(|e| e.id.as_str()).collect();
        let failed: Vec<SequenceNumber> = candidates
            .iter()
            .filter(|c| unapplied.contains(c.entry.id.as_str()))
            .map(|c| c.lowest_sequence.clone())
            .collect();
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        BatchOutcome::settled(shard_id, records, &failed, now, now_text, report)
    }
}

/// Why a batch stopped committing.
enum Halt {
    /// An entry was not what the batch read: decide again from a fresh read.
    Conflict,
    Failed(StoreError),
}

#[async_trait]
impl Consumer for StatusView {
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        self.consume_batch(shard_id, records).await
    }
}
