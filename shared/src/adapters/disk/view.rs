//! The status view on disk: entries, counters and lists as three redb tables written in one
//! transaction per commit, so a commit is all or nothing exactly as the in-memory view's lock
//! and DynamoDB's transaction make it (the rule: [`crate::domain::status_view`]).

use std::collections::HashMap;
use std::ops::Bound;

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::codec::{decode_entry, encode_entry};
use super::tables::{DiskTables, WriteError};
use crate::domain::status_view::{
    counter_deltas, sum_counts, CounterKey, ListPosition, StatusCount, ViewChange, ViewEntry,
};
use crate::ports::{
    EntryPage, MemberPage, StatusViewReader, StatusViewScanner, StatusViewWriter, StoreError,
    ViewCommit,
};

/// id → entry.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("view_entries");
/// (shard, status) → count.
const COUNTERS: TableDefinition<(&str, &str), i64> = TableDefinition::new("view_counters");
/// (status, version, shard) → id: every status's list, in list order.
const LISTS: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("view_lists");

/// See [`StatusViewWriter::max_commit_items`] for the disk.
const DISK_COMMIT_ITEMS: usize = 50_000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(ENTRIES)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(LISTS)?;
    Ok(())
}

/// The view's tables, emptied.
pub(super) fn recreate_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.delete_table(ENTRIES)?;
    txn.delete_table(COUNTERS)?;
    txn.delete_table(LISTS)?;
    create_tables(txn)
}

fn entry_of(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<ViewEntry>, WriteError> {
    Ok(match table.get(id)? {
        Some(bytes) => Some(decode_entry("the status view", id, bytes.value())?),
        None => None,
    })
}

#[async_trait]
impl StatusViewWriter for DiskTables {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ENTRIES)?;
            let mut found = HashMap::new();
            for id in ids {
                if let Some(entry) = entry_of(&table, id)? {
                    found.insert(id.clone(), entry);
                }
            }
            Ok(found)
        })
    }

    /// One local transaction takes a whole batch's changes (a batch of 10,000 records moves at
    /// most 50,000 items): one trip through the tables' writer per batch instead of one per
    /// 100 items, which held the view to a fraction of the other consumers' pace.
    fn max_commit_items(&self) -> usize {
        DISK_COMMIT_ITEMS
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        let changes = changes.to_vec();
        self.write(move |txn| {
            let mut entries = txn.open_table(ENTRIES)?;
            for change in &changes {
                if entry_of(&entries, &change.after.id)? != change.before {
                    // Nothing is written: the transaction is dropped, not committed.
                    return Ok(ViewCommit::Conflict);
                }
            }
            let mut counters = txn.open_table(COUNTERS)?;
            for (CounterKey { shard_id, status }, delta) in counter_deltas(&changes) {
                let key = (shard_id.as_str(), status.as_str());
                let count = counters.get(key)?.map_or(0, |c| c.value()) + delta;
                counters.insert(key, count)?;
            }
            let mut lists = txn.open_table(LISTS)?;
            for change in &changes {
                if let Some(before) = &change.before {
                    lists.remove((
                        before.status.as_str(),
                        before.version.0.as_str(),
                        before.shard_id.as_str(),
                    ))?;
                }
                let after = &change.after;
                lists.insert(
                    (
                        after.status.as_str(),
                        after.version.0.as_str(),
                        after.shard_id.as_str(),
                    ),
                    after.id.as_str(),
                )?;
                entries.insert(after.id.as_str(), encode_entry(after).as_slice())?;
            }
            Ok(ViewCommit::Committed)
        })
        .await
    }
}

/// Entries per page of the scan, like a DynamoDB page of small items.
const ENTRY_PAGE: usize = 1000;

#[async_trait]
impl StatusViewScanner for DiskTables {
    async fn entry_page(&self, start: Option<&str>) -> Result<EntryPage, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ENTRIES)?;
            let low = start.map_or(Bound::Unbounded, Bound::Excluded);
            let mut entries = Vec::new();
            let mut more = false;
            for item in table.range((low, Bound::Unbounded))? {
                if entries.len() == ENTRY_PAGE {
                    more = true;
                    break;
                }
                let (id, bytes) = item?;
                entries.push(decode_entry("the status view", id.value(), bytes.value())?);
            }
            Ok(EntryPage {
                next: more.then(|| entries.last().map(|e| e.id.clone())).flatten(),
                entries,
            })
        })
    }
}

#[async_trait]
impl StatusViewReader for DiskTables {
    async fn counts(&self, shards: &[String]) -> Result<Vec<StatusCount>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(COUNTERS)?;
            let mut counts = Vec::new();
            for shard in shards {
                let high = format!("{shard}\0");
                for item in table.range((shard.as_str(), "")..(high.as_str(), ""))? {
                    let (key, count) = item?;
                    let (shard_id, status) = key.value();
                    counts.push((
                        CounterKey {
                            shard_id: shard_id.to_owned(),
                            status: status.to_owned(),
                        },
                        count.value(),
                    ));
                }
            }
            Ok(sum_counts(counts))
        })
    }

    async fn members(
        &self,
        shards: &[String],
        status: &str,
        below: Option<&ListPosition>,
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        self.read(|txn| {
            let lists = txn.open_table(LISTS)?;
            let entries_table = txn.open_table(ENTRIES)?;
            // Every key of `status` sorts below (status + NUL, "", ""): no status lies between.
            let next_status = format!("{status}\0");
            let high = match below {
                Some(p) => Bound::Excluded((status, p.version.0.as_str(), p.shard_id.as_str())),
                None => Bound::Excluded((next_status.as_str(), "", "")),
            };
            let mut entries = Vec::new();
            let mut more = false;
            for item in lists
                .range((Bound::Included((status, "", "")), high))?
                .rev()
            {
                let (key, id) = item?;
                let (_, _, shard) = key.value();
                if !shards.iter().any(|s| s == shard) {
                    continue;
                }
                if entries.len() == limit {
                    more = true;
                    break;
                }
                if let Some(entry) = entry_of(&entries_table, id.value())? {
                    entries.push(entry);
                }
            }
            let next = more
                .then(|| entries.last().map(ViewEntry::position))
                .flatten();
            Ok(MemberPage { entries, next })
        })
    }
}
