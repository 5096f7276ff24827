//! The status view's store: entries per id, counters per (shard, status), and the index that
//! lists a status's ids ([`crate::domain::status_view`] has the rule).

use std::collections::HashMap;

use async_trait::async_trait;

use super::StoreError;
use crate::domain::status_view::{ListPosition, StatusCount, ViewChange, ViewEntry};

/// How a commit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewCommit {
    /// Every entry and counter moved.
    Committed,
    /// Nothing moved: some entry was no longer its change's `before` (another writer got there
    /// first). Read again and decide again.
    Conflict,
}

#[async_trait]
pub trait StatusViewWriter: Send + Sync {
    /// The stored entries of `ids` (absent ones left out), read so that a commit made before
    /// the call is seen (strongly consistent).
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError>;

    /// Writes every change and moves the counters by
    /// [`crate::domain::status_view::counter_deltas`], all or nothing, and only if every entry
    /// is still its change's `before`. At most [`Self::max_commit_items`] items (entries,
    /// list items and counters).
    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError>;

    /// The items one commit may write: DynamoDB's transaction limit
    /// ([`crate::domain::status_view::MAX_COMMIT_ITEMS`]) unless the store takes more.
    fn max_commit_items(&self) -> usize {
        crate::domain::status_view::MAX_COMMIT_ITEMS
    }
}

/// A shared writer is a writer too (`Arc<MemoryStatusView>` behind a wrapper).
#[async_trait]
impl<T: StatusViewWriter + ?Sized> StatusViewWriter for std::sync::Arc<T> {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        (**self).entries(ids).await
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        (**self).commit(changes).await
    }

    fn max_commit_items(&self) -> usize {
        (**self).max_commit_items()
    }
}

/// One page of every entry of the view, in the store's own order (a snapshot's scan).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryPage {
    pub entries: Vec<ViewEntry>,
    /// Where the next page starts (pass it back); `None` after the last page. A page may be
    /// empty and still have a next one (DynamoDB filters after it reads).
    pub next: Option<String>,
}

/// Reading every entry of the view, page by page: what a snapshot of it writes.
#[async_trait]
pub trait StatusViewScanner: Send + Sync {
    /// The page after `start` (a previous page's `next`); the first page with `None`.
    async fn entry_page(&self, start: Option<&str>) -> Result<EntryPage, StoreError>;
}

#[async_trait]
impl<T: StatusViewScanner + ?Sized> StatusViewScanner for std::sync::Arc<T> {
    async fn entry_page(&self, start: Option<&str>) -> Result<EntryPage, StoreError> {
        (**self).entry_page(start).await
    }
}

/// One page of a status's ids, newest event time first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberPage {
    pub entries: Vec<ViewEntry>,
    /// Where the next page starts (below it, exclusive); `None` on the last page.
    pub next: Option<ListPosition>,
}

/// Reading the view. Its items are kept per shard (no item takes more than one shard's writes),
/// so each read names the shards to read: every shard the stream lists and every shard the
/// view has a checkpoint of (the routes pass both).
#[async_trait]
pub trait StatusViewReader: Send + Sync {
    /// Every status some id has now, with how many ids have it, sorted by status.
    async fn counts(&self, shards: &[String]) -> Result<Vec<StatusCount>, StoreError>;

    /// Up to `limit` entries with `status`, newest event time first, starting below `below`
    /// (exclusive) when given.
    async fn members(
        &self,
        shards: &[String],
        status: &str,
        below: Option<&ListPosition>,
        limit: usize,
    ) -> Result<MemberPage, StoreError>;
}
