//! STATUS's change feed in memory, as DynamoDB Streams is STATUS's on AWS: every write that
//! changed a row, in the order the table took them, the newest `capacity` kept.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::ports::{
    ChangeFeedReader, ChangePublisher, FeedEntry, FeedRead, StatusChange, StoreError,
};

/// Changes `serve` keeps by default: at a few hundred bytes each, tens of MB at most, and at a
/// thousand changes a second a reader may fall a minute and a half behind before its cursor
/// expires.
pub const DEFAULT_FEED_CAPACITY: usize = 100_000;

pub struct MemoryChangeFeed {
    feed_id: u64,
    capacity: usize,
    state: Mutex<FeedState>,
    /// The position after the newest change: waiting readers watch it.
    end: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct FeedState {
    /// Position of the front entry of `entries` (the next one's, when empty).
    first: u64,
    entries: VecDeque<StatusChange>,
}

impl MemoryChangeFeed {
    /// An empty feed keeping the newest `capacity` changes (at least one), with an id of its
    /// own: random, so a cursor from another run of `serve` is told apart.
    pub fn new(capacity: usize) -> Self {
        Self {
            feed_id: RandomState::new().hash_one(std::time::SystemTime::now()),
            capacity: capacity.max(1),
            state: Mutex::default(),
            end: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Called by STATUS with its rows locked, so positions follow the order it took the writes.
    pub(crate) fn append(&self, change: StatusChange) {
        let mut state = lock(&self.state);
        if state.entries.len() == self.capacity {
            state.entries.pop_front();
            state.first += 1;
        }
        state.entries.push_back(change);
        self.end
            .send_replace(state.first + state.entries.len() as u64);
    }
}

#[async_trait]
impl ChangeFeedReader for MemoryChangeFeed {
    fn feed_id(&self) -> u64 {
        self.feed_id
    }

    async fn read_from(&self, from: Option<u64>, limit: usize) -> Result<FeedRead, StoreError> {
        let state = lock(&self.state);
        let end = state.first + state.entries.len() as u64;
        let start = from.unwrap_or(state.first);
        if start < state.first {
            return Ok(FeedRead::Expired {
                oldest: state.first,
            });
        }
        if start > end {
            return Ok(FeedRead::Ahead);
        }
        let skip = usize::try_from(start - state.first).unwrap_or(usize::MAX);
        let entries: Vec<FeedEntry> = state
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .zip(start..)
            .map(|(change, position)| FeedEntry {
                position,
                change: change.clone(),
            })
            .collect();
        let next = start + entries.len() as u64;
        Ok(FeedRead::Changes { entries, next })
    }

    fn end(&self) -> u64 {
        *self.end.borrow()
    }

    async fn wait_for(&self, position: u64, deadline: tokio::time::Instant) {
        let mut end = self.end.subscribe();
        // Times out, or the sender (this feed) is gone: either way the reader answers now.
        let _ = tokio::time::timeout_at(deadline, end.wait_for(|end| *end > position)).await;
    }
}

/// An event bus in memory: keeps what was published, for tests.
#[derive(Default)]
pub struct MemoryChangeBus {
    published: Mutex<Vec<StatusChange>>,
}

impl MemoryChangeBus {
    pub fn published(&self) -> Vec<StatusChange> {
        lock(&self.published).clone()
    }
}

#[async_trait]
impl ChangePublisher for MemoryChangeBus {
    async fn publish(&self, changes: &[StatusChange]) -> Vec<Result<(), StoreError>> {
        lock(&self.published).extend_from_slice(changes);
        changes.iter().map(|_| Ok(())).collect()
    }
}
