//! The tables on disk: STATUS, OPLOG, HISTORY, DEADLETTER, the status view and the idempotency
//! keys, each a redb table in one file, `DIR/tables.redb`, with exactly the conditions of the
//! in-memory adapters. Every write goes through one writer thread in group commits
//! ([`super::writer`]); reads are redb's snapshots, never blocked by a write.
//!
//! ## Durability, and why a crash loses nothing a reader relies on
//! Rows and checkpoints are committed without fsync (`Durability::None`), and every half second
//! of writes one commit is made with it (`Immediate`, [`super::writer`]). redb makes a durable
//! commit durable together with every commit before it, in order, so what is on disk after a
//! crash is the tables as they were at some commit: whatever checkpoint a consumer has there,
//! everything it wrote for the records that checkpoint covers is there too. A crash loses at
//! most the last half second of writes, all of them past the checkpoints on disk, and the
//! consumers apply those records again from the log after the restart (before `serve` listens:
//! `tidemark_cli::serve::catch_up`): every write here is idempotent and monotonic (conditional
//! on the version, keyed by the record), as on AWS. The log, not the tables, is what makes a
//! `202` durable.
//!
//! Memory: redb caches at most `cache_bytes` of pages, whatever the history; rows live on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::codec::{decode_progress, decode_row, decode_version, encode_progress, encode_row};
use super::writer::Writer;
use crate::adapters::memory::tables::item_size;
use crate::adapters::memory::MemoryChangeFeed;
use crate::domain::limits::MAX_DYNAMODB_ITEM_BYTES;
use crate::ports::*;

/// id → row.
pub(super) const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("status");
/// OPLOG key (consumer and shard) → checkpoint and behind.
pub(super) const OPLOG: TableDefinition<&str, &[u8]> = TableDefinition::new("oplog");

/// The file every table lives in, shared by the tables' adapters.
pub struct DiskTables {
    db: Arc<Database>,
    writer: Writer,
    path: PathBuf,
    changes: Option<Arc<MemoryChangeFeed>>,
}

pub(super) fn failed(path: &Path, e: impl std::fmt::Display) -> String {
    format!("the tables {}: {e}", path.display())
}

impl DiskTables {
    /// Opens (or creates) `DIR/tables.redb`, caching at most `cache_bytes` of it in memory; STATUS
    /// appends every change to `changes` when given. The second value says whether the file was
    /// new (a data directory of an older `serve` keeps only the archive and the log).
    pub fn open(
        dir: &Path,
        cache_bytes: usize,
        changes: Option<Arc<MemoryChangeFeed>>,
    ) -> Result<(Arc<Self>, bool), String> {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let path = dir.join("tables.redb");
        let new = !path.exists();
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| format!("the tables {}", super::open_failed(&path, e)))?;
        let mut txn = db.begin_write().map_err(|e| failed(&path, e))?;
        txn.set_quick_repair(true);
        {
            // Every table exists from here on, so a read never meets a missing one.
            txn.open_table(STATUS).map_err(|e| failed(&path, e))?;
            txn.open_table(OPLOG).map_err(|e| failed(&path, e))?;
            super::records::create_tables(&txn).map_err(|e| failed(&path, e))?;
            super::view::create_tables(&txn).map_err(|e| failed(&path, e))?;
            super::keys::create_tables(&txn).map_err(|e| failed(&path, e))?;
        }
        txn.commit().map_err(|e| failed(&path, e))?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), path.clone())?;
        Ok((
            Arc::new(Self {
                db,
                writer,
                path,
                changes,
            }),
            new,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(failed(&self.path, e))
    }

    /// Runs `write` in the writer's next transaction, committed without fsync (see the
    /// module's note); answers once it is committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write(false, write, |_| {}).await
    }

    /// As [`Self::write`], committed with fsync: the commit makes it and every earlier one
    /// durable.
    pub(super) async fn write_durably<T: Send + 'static>(
        &self,
        write: impl FnOnce(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write(true, write, |_| {}).await
    }

    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, WriteError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        match read(&txn) {
            Ok(value) => Ok(value),
            Err(WriteError::Store(e)) => Err(e),
            Err(WriteError::Engine(e)) => Err(self.error(e)),
        }
    }
}

/// What a transaction's body can fail with: the engine, or a decision (a corrupt row).
pub(super) enum WriteError {
    Engine(redb::Error),
    Store(StoreError),
}

impl<E: Into<redb::Error>> From<E> for WriteError {
    fn from(e: E) -> Self {
        Self::Engine(e.into())
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

#[async_trait]
impl StatusWriter for DiskTables {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        let size = item_size(&row);
        if size > MAX_DYNAMODB_ITEM_BYTES {
            return Err(StoreError::ItemRejected(format!(
                "Item size has exceeded the maximum allowed size ({size} bytes)"
            )));
        }
        let wants_before = self.changes.is_some();
        let feed = self.changes.clone();
        let applied = self
            .writer
            .write(
                false,
                move |txn| {
                    let mut table = txn.open_table(STATUS)?;
                    let stored = table.get(row.id.as_str())?;
                    let before = match &stored {
                        Some(bytes) if wants_before => Some(decode_row("STATUS", bytes.value())?),
                        Some(bytes) => {
                            if decode_version("STATUS", bytes.value())? >= row.version {
                                return Ok(None);
                            }
                            None
                        }
                        None => None,
                    };
                    if before.as_ref().is_some_and(|b| b.version >= row.version) {
                        return Ok(None);
                    }
                    drop(stored);
                    table.insert(row.id.as_str(), encode_row(&row).as_slice())?;
                    Ok(Some(StatusChange::between(before.as_ref(), &row)))
                },
                // After the commit, on the writer's thread: the feed gets STATUS's order.
                move |applied: &Option<Option<StatusChange>>| {
                    if let (Some(feed), Some(Some(change))) = (&feed, applied) {
                        feed.append(change.clone());
                    }
                },
            )
            .await?;
        if applied.is_none() {
            return Ok(ApplyOutcome::Stale);
        }
        Ok(ApplyOutcome::Applied)
    }
}

#[async_trait]
impl StatusReader for DiskTables {
    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(STATUS)?;
            let row = table.get(id)?;
            Ok(match row {
                Some(bytes) => Some(decode_row("STATUS", bytes.value())?),
                None => None,
            })
        })
    }
}

/// Rows per page of a scan, as in memory: DynamoDB's pages stop at 1 MB, about a thousand rows.
const SCAN_PAGE_ROWS: usize = 1000;

#[async_trait]
impl StatusScanner for DiskTables {
    async fn scan_page(&self, start: Option<&str>) -> Result<StatusPage, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(STATUS)?;
            let range = match start {
                Some(start) => {
                    table.range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))?
                }
                None => table.range(..)?,
            };
            let mut rows = Vec::new();
            let mut more = false;
            for item in range {
                if rows.len() == SCAN_PAGE_ROWS {
                    more = true;
                    break;
                }
                let (_, bytes) = item?;
                rows.push(decode_row("STATUS", bytes.value())?);
            }
            Ok(StatusPage {
                next: more.then(|| rows.last().map(|r| r.id.clone())).flatten(),
                rows,
            })
        })
    }
}

fn progress_of(
    txn_table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<ShardProgress, WriteError> {
    Ok(match txn_table.get(key)? {
        Some(bytes) => decode_progress("OPLOG", key, bytes.value())?,
        None => ShardProgress::unknown(key),
    })
}

#[async_trait]
impl CheckpointWriter for DiskTables {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        let checkpoint = checkpoint.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(OPLOG)?;
            let mut row = progress_of(&table, &checkpoint.shard_id)?;
            if !row.advance(&checkpoint) {
                return Ok(AdvanceOutcome::AlreadyPast);
            }
            table.insert(
                checkpoint.shard_id.as_str(),
                encode_progress(&row).as_slice(),
            )?;
            Ok(AdvanceOutcome::Advanced)
        })
        .await
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        let behind = behind.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(OPLOG)?;
            let mut row = progress_of(&table, &behind.shard_id)?;
            row.note_behind(&behind);
            table.insert(behind.shard_id.as_str(), encode_progress(&row).as_slice())?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl CheckpointReader for DiskTables {
    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.read(|txn| Ok(progress_of(&txn.open_table(OPLOG)?, shard_id)?.checkpoint))
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self
            .progress()
            .await?
            .into_iter()
            .filter_map(|p| p.checkpoint)
            .collect())
    }

    async fn progress(&self) -> Result<Vec<ShardProgress>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(OPLOG)?;
            let mut rows = Vec::new();
            for item in table.iter()? {
                let (key, bytes) = item?;
                rows.push(decode_progress("OPLOG", key.value(), bytes.value())?);
            }
            Ok(rows)
        })
    }
}
