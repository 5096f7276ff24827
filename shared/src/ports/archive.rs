//! The archive (every record of the stream, in S3 or a directory) and HISTORY (every event
//! per id): what the archiver writes and what a rebuild and the history route read.

use super::*;

/// One page of archive object keys, in key order (which is time order: [`crate::domain::archive`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePage {
    pub keys: Vec<String>,
    /// More keys follow the last one of this page.
    pub more: bool,
}

/// Writing the archive: what the archiver needs. `put` replaces an object with the same key, so
/// writing a redelivered batch again is harmless.
#[async_trait]
pub trait ArchiveWriter: Send + Sync {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
}

/// Deleting from the archive: only old snapshots are ever deleted (`tidemark snapshot --keep`);
/// the archive's own objects never are.
#[async_trait]
pub trait ArchivePruner: Send + Sync {
    /// Deletes the object; deleting one that is not there is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Reading the archive: what a rebuild needs.
#[async_trait]
pub trait ArchiveReader: Send + Sync {
    /// Keys after `start_after` (from the first without one), at most 1,000 per page.
    async fn list(&self, start_after: Option<&str>) -> Result<ArchivePage, StoreError>;
    /// The object's bytes; `StoreError::ItemRejected` for an object too large to be one the
    /// archiver wrote (a rebuild reports it and goes on).
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
}

/// One accepted event of an id, as HISTORY keeps it: the STATUS row it would make (its
/// `updated_at` is when it was archived). Keyed by (id, version), so writing it again is a no-op.
pub type HistoryEntry = StatusRow;

/// What writing a set of HISTORY entries did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryWrite {
    pub written: usize,
    /// Entries HISTORY refuses for good (DynamoDB: over 400 KB), by id and sequence number: the
    /// archive still holds them; the history route does not show them.
    pub refused: Vec<(String, SequenceNumber)>,
}

/// Writing HISTORY: what the archiver needs. Unconditional: the key makes redelivery idempotent.
#[async_trait]
pub trait HistoryWriter: Send + Sync {
    async fn put_many(&self, entries: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError>;
}

/// One page of an id's history, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// The version to continue below (pass it as `before`); `None` after the oldest entry.
    pub next: Option<VersionKey>,
}

impl HistoryPage {
    /// A page of at most `limit` of `entries` (newest first); `more` says whether entries past
    /// them exist, and then `next` is the last one's version.
    pub fn of(mut entries: Vec<HistoryEntry>, limit: usize, more: bool) -> Self {
        let more = more || entries.len() > limit;
        entries.truncate(limit);
        Self {
            next: if more {
                entries.last().map(|e| e.version.clone())
            } else {
                None
            },
            entries,
        }
    }
}

/// Reading HISTORY (strongly consistent): what `GET /messages/{id}/history` needs.
#[async_trait]
pub trait HistoryReader: Send + Sync {
    /// At most `limit` entries of `id` with a version below `before` (all without it), newest
    /// first.
    async fn page(
        &self,
        id: &str,
        before: Option<&VersionKey>,
        limit: usize,
    ) -> Result<HistoryPage, StoreError>;
}
