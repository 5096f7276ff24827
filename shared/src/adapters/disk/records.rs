//! HISTORY and DEADLETTER on disk: one entry per record, keyed so that writing it again is a
//! no-op, as in DynamoDB.

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::codec::{decode_letter, decode_row, encode_letter, encode_row};
use super::tables::{DiskTables, WriteError};
use crate::adapters::memory::tables::item_size;
use crate::domain::limits::MAX_DYNAMODB_ITEM_BYTES;
use crate::domain::VersionKey;
use crate::ports::*;

/// (id, version) → entry: an id's entries in version order.
const HISTORY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("history");
/// (shard, sequence number) → dead letter.
const DEADLETTER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("deadletter");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(HISTORY)?;
    txn.open_table(DEADLETTER)?;
    Ok(())
}

#[async_trait]
impl HistoryWriter for DiskTables {
    async fn put_many(&self, entries: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(HISTORY)?;
            let mut write = HistoryWrite::default();
            for entry in entries {
                // The same bound as DynamoDB's, so `serve` refuses what the stack would.
                if item_size(&entry) > MAX_DYNAMODB_ITEM_BYTES {
                    write.refused.push((entry.id, entry.sequence_number));
                    continue;
                }
                write.written += 1;
                table.insert(
                    (entry.id.as_str(), entry.version.0.as_str()),
                    encode_row(&entry).as_slice(),
                )?;
            }
            Ok(write)
        })
        .await
    }
}

#[async_trait]
impl HistoryReader for DiskTables {
    async fn page(
        &self,
        id: &str,
        before: Option<&VersionKey>,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(HISTORY)?;
            let high = match before {
                Some(before) => std::ops::Bound::Excluded((id, before.0.as_str())),
                // Versions are ASCII (digits and separators): all of id's sort below this.
                None => std::ops::Bound::Excluded((id, "\u{10FFFF}")),
            };
            let mut entries = Vec::new();
            for item in table
                .range((std::ops::Bound::Included((id, "")), high))?
                .rev()
            {
                if entries.len() > limit {
                    break;
                }
                let (_, bytes) = item?;
                entries.push(decode_row("HISTORY", bytes.value())?);
            }
            Ok(HistoryPage::of(entries, limit, false))
        })
    }
}

#[async_trait]
impl DeadLetterWriter for DiskTables {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let letter = letter.clone();
        self.write(move |txn| {
            txn.open_table(DEADLETTER)?.insert(
                (letter.shard_id.as_str(), letter.sequence_number.as_str()),
                encode_letter(&letter).as_slice(),
            )?;
            Ok::<(), WriteError>(())
        })
        .await
    }
}

#[async_trait]
impl DeadLetterReader for DiskTables {
    async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(DEADLETTER)?;
            let mut letters = Vec::new();
            for item in table.iter()? {
                let (_, bytes) = item?;
                letters.push(decode_letter("DEADLETTER", bytes.value())?);
            }
            Ok(letters)
        })
    }
}
