//! The change notifier: a batch of STATUS's own stream (DynamoDB Streams with old and new
//! images) → one status-change event per change. Why a small function and not an EventBridge
//! Pipe: the events carry the same opaque `version` `GET /messages/{id}` returns (a Pipe's input
//! template cannot compute it), so a receiver can drop a duplicate and hand the version to
//! `newer_than`; and this code is tested here, against the fixtures and LocalStack's streams.
//!
//! Why nothing is lost: DynamoDB Streams holds every modification of an item exactly once, in
//! order per item, for 24 hours; the mapping hands each stream shard to one invocation at a
//! time, and a batch reports its first unpublished record, from which the mapping retries. So
//! every change is published at least once; one published before a failure later in its batch,
//! or whose answer timed out, is published again: receivers drop it by (id, version).

use std::sync::Arc;

use crate::ports::{ChangePublisher, StatusChange, StatusRow, StoreError, MAX_CHANGES_PER_PUBLISH};

/// One record of STATUS's stream, its images read as rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusImages {
    /// The stream's sequence number: what a batch item failure names.
    pub position: String,
    pub old: Option<StatusRow>,
    /// `None`: the row was deleted (by an operator; the pipeline never deletes one).
    pub new: Option<StatusRow>,
}

/// What a batch came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyOutcome {
    pub published: usize,
    /// Records that were no change of status: a deletion, or images not newer.
    pub not_changes: usize,
    /// The first record whose change could not be published: the mapping retries from it.
    pub first_failed: Option<String>,
}

pub struct ChangeNotifier {
    publisher: Arc<dyn ChangePublisher>,
}

impl ChangeNotifier {
    pub fn new(publisher: Arc<dyn ChangePublisher>) -> Self {
        Self { publisher }
    }

    /// Publishes the batch's changes in stream order, at most [`MAX_CHANGES_PER_PUBLISH`] a
    /// call, and stops at the first that fails: nothing after it is sent in this invocation,
    /// since the mapping sends it all again.
    pub async fn notify(&self, records: &[StatusImages]) -> NotifyOutcome {
        let mut outcome = NotifyOutcome::default();
        let changes: Vec<(&str, StatusChange)> = records
            .iter()
            .filter_map(|record| {
                let change = record
                    .new
                    .as_ref()
                    .and_then(|new| StatusChange::between(record.old.as_ref(), new));
                if change.is_none() {
                    outcome.not_changes += 1;
                }
                change.map(|c| (record.position.as_str(), c))
            })
            .collect();
        for chunk in changes.chunks(MAX_CHANGES_PER_PUBLISH) {
            let batch: Vec<StatusChange> = chunk.iter().map(|(_, c)| c.clone()).collect();
            let mut results = self.publisher.publish(&batch).await.into_iter();
            for (position, _) in chunk {
                // A result missing from the answer counts as a failure, never as sent.
                match results.next().unwrap_or_else(|| {
                    Err(StoreError::Unavailable("no result for this change".into()))
                }) {
                    Ok(()) => outcome.published += 1,
                    Err(error) => {
                        tracing::warn!(%error, position, "publishing a status change failed");
                        outcome.first_failed = Some((*position).to_owned());
                        return outcome;
                    }
                }
            }
        }
        outcome
    }
}
