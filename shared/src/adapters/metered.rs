//! Metering wrappers around any adapter: they pass every call through and count what AWS bills
//! for it (Kinesis PUT payload units, DynamoDB write and read units per table, S3 PUTs and
//! bytes), so the cost model (`tidemark cost`) is computed from the calls the real pipeline code
//! makes, not from a guess. Item sizes follow DynamoDB's rule (attribute names plus values,
//! UTF-8), rounded up to 1 KB for writes and 4 KB for strongly consistent reads; a conditional
//! write that loses is billed like one that wins, so both are counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::idempotency::IdempotencyRecord;
use crate::domain::status_view::{commit_items, ViewChange, ViewEntry};
use crate::domain::EventTime;
use crate::ports::*;

/// A Kinesis PUT payload unit: each record is billed in 25 KB units.
const PUT_PAYLOAD_UNIT_BYTES: usize = 25 * 1024;
/// A DynamoDB write unit covers 1 KB of item; a transactional write costs two.
const WRITE_UNIT_BYTES: usize = 1024;
/// A strongly consistent read unit covers 4 KB of item.
const READ_UNIT_BYTES: usize = 4 * 1024;
/// What a few small attributes (numbers, timestamps, key names) add to an item beyond the
/// fields measured exactly: generous, so the estimate errs towards the larger bill.
const ITEM_OVERHEAD_BYTES: usize = 100;

/// The tables Tidemark writes, for a per-table split of the bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Status,
    Oplog,
    History,
    DeadLetter,
    Idempotency,
    StatusView,
}

/// The billable units counted so far. Shared by every wrapper built from it.
#[derive(Default)]
pub struct Meter {
    put_payload_units: AtomicU64,
    put_records: AtomicU64,
    s3_puts: AtomicU64,
    s3_bytes: AtomicU64,
    write_units: [AtomicU64; 6],
    read_units: [AtomicU64; 6],
    written_bytes: [AtomicU64; 6],
}

/// A snapshot of a [`Meter`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub put_payload_units: u64,
    pub put_records: u64,
    pub s3_puts: u64,
    pub s3_bytes: u64,
    pub write_units: HashMap<Table, u64>,
    pub read_units: HashMap<Table, u64>,
    /// Bytes of the items written, per table: what a table that keeps every item (HISTORY)
    /// stores.
    pub written_bytes: HashMap<Table, u64>,
}

impl Usage {
    pub fn write_units_total(&self) -> u64 {
        self.write_units.values().sum()
    }

    pub fn read_units_total(&self) -> u64 {
        self.read_units.values().sum()
    }
}

const TABLES: [Table; 6] = [
    Table::Status,
    Table::Oplog,
    Table::History,
    Table::DeadLetter,
    Table::Idempotency,
    Table::StatusView,
];

impl Meter {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn usage(&self) -> Usage {
        let per_table = |units: &[AtomicU64; 6]| {
            TABLES
                .iter()
                .zip(units)
                .map(|(table, n)| (*table, n.load(Ordering::SeqCst)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Usage {
            put_payload_units: self.put_payload_units.load(Ordering::SeqCst),
            put_records: self.put_records.load(Ordering::SeqCst),
            s3_puts: self.s3_puts.load(Ordering::SeqCst),
            s3_bytes: self.s3_bytes.load(Ordering::SeqCst),
            write_units: per_table(&self.write_units),
            read_units: per_table(&self.read_units),
            written_bytes: per_table(&self.written_bytes),
        }
    }

    fn write(&self, table: Table, item_bytes: usize) {
        self.written_bytes[table as usize].fetch_add(item_bytes as u64, Ordering::SeqCst);
        self.add_write_units(table, item_bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64);
    }

    fn add_write_units(&self, table: Table, units: u64) {
        self.write_units[table as usize].fetch_add(units, Ordering::SeqCst);
    }

    fn read(&self, table: Table, item_bytes: usize) {
        let units = item_bytes.div_ceil(READ_UNIT_BYTES).max(1) as u64;
        self.read_units[table as usize].fetch_add(units, Ordering::SeqCst);
    }

    fn put_record(&self, record: &OutgoingRecord) {
        let units = record.size().div_ceil(PUT_PAYLOAD_UNIT_BYTES).max(1) as u64;
        self.put_payload_units.fetch_add(units, Ordering::SeqCst);
        self.put_records.fetch_add(1, Ordering::SeqCst);
    }
}

/// A STATUS or HISTORY item's size: its named attributes and their values.
fn row_bytes(row: &StatusRow) -> usize {
    let named = [
        ("id", row.id.len()),
        ("status", row.status.len()),
        ("timestamp", row.timestamp.len()),
        ("data", row.data.as_ref().map_or(0, String::len)),
        ("received_at", row.received_at.len()),
        ("shard_id", row.shard_id.len()),
        ("sequence_number", row.sequence_number.as_str().len()),
        ("version", row.version.0.len()),
        ("updated_at", row.updated_at.len()),
    ];
    named.iter().map(|(name, value)| name.len() + value).sum()
}

fn view_entry_bytes(entry: &ViewEntry) -> usize {
    entry.id.len() + entry.status.len() + entry.version.0.len() + entry.shard_id.len()
}

/// Any port with its billable units counted.
pub struct Metered<S> {
    pub inner: S,
    pub meter: Arc<Meter>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, meter: &Arc<Meter>) -> Self {
        Self {
            inner,
            meter: Arc::clone(meter),
        }
    }
}

#[async_trait]
impl<S: StreamWriter> StreamWriter for Metered<S> {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        let ack = self.inner.put(record).await?;
        self.meter.put_record(record);
        Ok(ack)
    }

    /// Only the entries Kinesis accepted are billed.
    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        let results = self.inner.put_many(records).await?;
        for (record, result) in records.iter().zip(&results) {
            if matches!(result, PutEntryResult::Accepted(_)) {
                self.meter.put_record(record);
            }
        }
        Ok(results)
    }
}

#[async_trait]
impl<S: StatusWriter> StatusWriter for Metered<S> {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        let bytes = row_bytes(&row) + ITEM_OVERHEAD_BYTES;
        let outcome = self.inner.apply(row).await?;
        self.meter.write(Table::Status, bytes);
        Ok(outcome)
    }
}

#[async_trait]
impl<S: CheckpointWriter> CheckpointWriter for Metered<S> {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        let outcome = self.inner.advance(checkpoint).await?;
        self.meter.write(Table::Oplog, ITEM_OVERHEAD_BYTES * 2);
        Ok(outcome)
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        self.inner.note_behind(behind).await?;
        self.meter.write(Table::Oplog, ITEM_OVERHEAD_BYTES * 2);
        Ok(())
    }
}

#[async_trait]
impl<S: HistoryWriter> HistoryWriter for Metered<S> {
    async fn put_many(&self, entries: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError> {
        let sizes: Vec<usize> = entries
            .iter()
            .map(|e| row_bytes(e) + ITEM_OVERHEAD_BYTES)
            .collect();
        let written = self.inner.put_many(entries).await?;
        for bytes in sizes {
            self.meter.write(Table::History, bytes);
        }
        Ok(written)
    }
}

#[async_trait]
impl<S: DeadLetterWriter> DeadLetterWriter for Metered<S> {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.inner.put(letter).await?;
        let bytes = letter.raw.len() + letter.reason.len() + ITEM_OVERHEAD_BYTES * 2;
        self.meter.write(Table::DeadLetter, bytes);
        Ok(())
    }
}

#[async_trait]
impl<S: ArchiveWriter> ArchiveWriter for Metered<S> {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let bytes = body.len() as u64;
        self.inner.put(key, body).await?;
        self.meter.s3_puts.fetch_add(1, Ordering::SeqCst);
        self.meter.s3_bytes.fetch_add(bytes, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for Metered<S> {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let holder = self.inner.claim(record, now).await?;
        let bytes = record.key.len() + record.fingerprint.len() + ITEM_OVERHEAD_BYTES;
        self.meter.write(Table::Idempotency, bytes);
        Ok(holder)
    }

    async fn take_over(&self, key: &str, expected: i64, lease: i64) -> Result<bool, StoreError> {
        let taken = self.inner.take_over(key, expected, lease).await?;
        self.meter
            .write(Table::Idempotency, key.len() + ITEM_OVERHEAD_BYTES * 2);
        Ok(taken)
    }

    async fn complete(&self, key: &str, lease: i64, answer: &str) -> Result<bool, StoreError> {
        let stored = self.inner.complete(key, lease, answer).await?;
        self.meter.write(
            Table::Idempotency,
            key.len() + answer.len() + ITEM_OVERHEAD_BYTES * 2,
        );
        Ok(stored)
    }

    async fn release(&self, key: &str, lease: i64) -> Result<bool, StoreError> {
        let released = self.inner.release(key, lease).await?;
        self.meter
            .write(Table::Idempotency, key.len() + ITEM_OVERHEAD_BYTES * 2);
        Ok(released)
    }
}

#[async_trait]
impl<S: StatusViewWriter> StatusViewWriter for Metered<S> {
    /// One strongly consistent read per id asked for, found or not.
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        let found = self.inner.entries(ids).await?;
        for id in ids {
            let bytes = found.get(id).map_or(id.len(), view_entry_bytes) + ITEM_OVERHEAD_BYTES;
            self.meter.read(Table::StatusView, bytes);
        }
        Ok(found)
    }

    /// TransactWriteItems: two write units per item (each well under 1 KB), conflict or not.
    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        let outcome = self.inner.commit(changes).await?;
        self.meter
            .add_write_units(Table::StatusView, commit_items(changes) as u64 * 2);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn units_round_up_per_item() {
        let meter = Meter::new();
        meter.write(Table::Status, 1);
        meter.write(Table::Status, 1024);
        meter.write(Table::Status, 1025);
        meter.read(Table::StatusView, 4096);
        meter.read(Table::StatusView, 4097);
        meter.put_record(&OutgoingRecord {
            partition_key: "k".into(),
            data: Bytes::from(vec![0; 25 * 1024]),
        });
        let usage = meter.usage();
        assert_eq!(usage.write_units[&Table::Status], 1 + 1 + 2);
        assert_eq!(usage.read_units[&Table::StatusView], 1 + 2);
        assert_eq!(
            usage.put_payload_units, 2,
            "25 KiB of data plus the key is two units"
        );
        assert_eq!(usage.put_records, 1);
    }
}
