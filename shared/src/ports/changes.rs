//! Changes of STATUS rows: what a client told of every change receives. `serve` keeps them in a
//! feed read from a cursor ([`ChangeFeedReader`]); on AWS they leave as events
//! ([`ChangePublisher`], fed by STATUS's DynamoDB stream).

use async_trait::async_trait;

use super::{StatusRow, StoreError};
use crate::domain::{SequenceNumber, VersionKey};

/// One change of a STATUS row: the id moved from `old_status` (none: the id had no row) to the
/// event at `version`. A receiver that may see a change twice (at-least-once delivery) keeps, per
/// id, the greatest version it has seen and drops anything not greater.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub id: String,
    pub old_status: Option<String>,
    pub new_status: String,
    pub version: VersionKey,
    /// The event's own time (the row's `timestamp`).
    pub timestamp: String,
    pub shard_id: String,
    pub sequence_number: SequenceNumber,
    /// When the processor wrote the row (its `updated_at`).
    pub changed_at: String,
}

impl StatusChange {
    /// The change from `old` to `new`, or `None` when `new` is not newer: STATUS's condition
    /// never writes such a row, so an image pair like that is not a change of STATUS.
    pub fn between(old: Option<&StatusRow>, new: &StatusRow) -> Option<Self> {
        if old.is_some_and(|old| old.version >= new.version) {
            return None;
        }
        Some(Self {
            id: new.id.clone(),
            old_status: old.map(|o| o.status.clone()),
            new_status: new.status.clone(),
            version: new.version.clone(),
            timestamp: new.timestamp.clone(),
            shard_id: new.shard_id.clone(),
            sequence_number: new.sequence_number.clone(),
            changed_at: new.updated_at.clone(),
        })
    }

    /// The change as JSON: the body of a feed entry and the `detail` of an EventBridge event.
    /// `version` is the same opaque text `GET /messages/{id}` returns and `newer_than` takes.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "old_status": self.old_status,
            "new_status": self.new_status,
            "version": self.version.to_opaque(),
            "timestamp": self.timestamp,
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "changed_at": self.changed_at,
        })
    }
}

/// A change at its place in a feed: positions increase by one per change, in the order STATUS
/// took them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub position: u64,
    pub change: StatusChange,
}

/// What a read of the feed found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedRead {
    /// The changes from the position asked for, oldest first (none yet: empty), and the
    /// position to read from next.
    Changes { entries: Vec<FeedEntry>, next: u64 },
    /// The feed no longer holds the change at that position: it keeps a bounded number, and
    /// the oldest it still holds is at `oldest`.
    Expired { oldest: u64 },
    /// The position asked for is past any this feed has given out: not a cursor of this feed.
    Ahead,
}

/// The change feed of one STATUS table.
#[async_trait]
pub trait ChangeFeedReader: Send + Sync {
    /// Which feed this is: differs between feeds (and between runs of `serve`), so a cursor
    /// from another is recognised.
    fn feed_id(&self) -> u64;
    /// Up to `limit` changes from position `from` on (`None`: from the oldest kept).
    async fn read_from(&self, from: Option<u64>, limit: usize) -> Result<FeedRead, StoreError>;
    /// The position the next change will take.
    fn end(&self) -> u64;
    /// Returns as soon as the feed holds a change at `position` (or past it), or at `deadline`:
    /// a waiting reader is woken by the change itself, not by its next poll.
    async fn wait_for(&self, position: u64, deadline: tokio::time::Instant);
}

/// Most changes one [`ChangePublisher::publish`] takes (EventBridge PutEvents: 10 entries).
pub const MAX_CHANGES_PER_PUBLISH: usize = 10;

/// Where changes are sent on AWS (an EventBridge bus).
#[async_trait]
pub trait ChangePublisher: Send + Sync {
    /// Sends `changes` (at most [`MAX_CHANGES_PER_PUBLISH`]); one result per change, in order. A
    /// change that failed may still have been delivered (a timeout): the receiver's version
    /// check makes sending it again harmless.
    async fn publish(&self, changes: &[StatusChange]) -> Vec<Result<(), StoreError>>;
}
