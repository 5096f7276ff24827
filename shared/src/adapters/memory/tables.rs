//! The tables in memory: conditional STATUS and OPLOG writes that compare exactly what the
//! DynamoDB conditions compare, and DEADLETTER keyed as in DynamoDB. Each counts its calls, so
//! tests and benchmarks can check the write economy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::idempotency::{IdempotencyRecord, KeyState};
use crate::domain::limits::MAX_DYNAMODB_ITEM_BYTES;
use crate::domain::EventTime;
use crate::ports::*;

use super::{lock, MemoryChangeFeed};

/// STATUS in memory: the conditional write compares version keys bytewise, as DynamoDB does.
#[derive(Default)]
pub struct MemoryStatusStore {
    rows: Mutex<HashMap<String, StatusRow>>,
    apply_calls: AtomicU64,
    /// Where each write that changes a row is told, as DynamoDB Streams would be.
    changes: Option<Arc<MemoryChangeFeed>>,
}

impl MemoryStatusStore {
    /// An empty STATUS that appends every change to `feed`.
    pub fn with_change_feed(feed: Arc<MemoryChangeFeed>) -> Self {
        Self {
            changes: Some(feed),
            ..Self::default()
        }
    }

    pub fn change_feed(&self) -> Option<Arc<MemoryChangeFeed>> {
        self.changes.clone()
    }

    pub fn apply_calls(&self) -> u64 {
        self.apply_calls.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> HashMap<String, StatusRow> {
        lock(&self.rows).clone()
    }
}

#[async_trait]
impl StatusWriter for MemoryStatusStore {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        self.apply_calls.fetch_add(1, Ordering::Relaxed);
        let size = item_size(&row);
        if size > MAX_DYNAMODB_ITEM_BYTES {
            return Err(StoreError::ItemRejected(format!(
                "Item size has exceeded the maximum allowed size ({size} bytes)"
            )));
        }
        let mut rows = lock(&self.rows);
        let stored = rows.get_mut(&row.id);
        if stored.as_ref().is_some_and(|s| s.version >= row.version) {
            return Ok(ApplyOutcome::Stale);
        }
        if let Some(feed) = &self.changes {
            if let Some(change) = StatusChange::between(stored.as_deref(), &row) {
                feed.append(change);
            }
        }
        match stored {
            Some(stored) => *stored = row,
            None => {
                rows.insert(row.id.clone(), row);
            }
        }
        Ok(ApplyOutcome::Applied)
    }
}

/// Rows per page of a scan: DynamoDB's pages stop at 1 MB, about a thousand small rows.
const SCAN_PAGE_ROWS: usize = 1000;

#[async_trait]
impl StatusScanner for MemoryStatusStore {
    async fn scan_page(&self, start: Option<&str>) -> Result<StatusPage, StoreError> {
        let rows = lock(&self.rows);
        let mut ids: Vec<&String> = rows
            .keys()
            .filter(|id| start.is_none_or(|start| id.as_str() > start))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > SCAN_PAGE_ROWS;
        ids.truncate(SCAN_PAGE_ROWS);
        let page: Vec<StatusRow> = ids.iter().filter_map(|id| rows.get(*id).cloned()).collect();
        Ok(StatusPage {
            next: if more {
                page.last().map(|r| r.id.clone())
            } else {
                None
            },
            rows: page,
        })
    }
}

/// A STATUS row's size as DynamoDB counts it: attribute names and values, in bytes.
pub(crate) fn item_size(row: &StatusRow) -> usize {
    let attribute = |name: &str, value: &str| name.len() + value.len();
    attribute("id", &row.id)
        + attribute("status", &row.status)
        + attribute("timestamp", &row.timestamp)
        + row
            .data
            .as_deref()
            .map_or(0, |data| attribute("data", data))
        + attribute("received_at", &row.received_at)
        + attribute("shard_id", &row.shard_id)
        + attribute("sequence_number", row.sequence_number.as_str())
        + attribute("version", &row.version.0)
        + attribute("updated_at", &row.updated_at)
}

#[async_trait]
impl StatusReader for MemoryStatusStore {
    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError> {
        Ok(lock(&self.rows).get(id).cloned())
    }
}

/// OPLOG in memory: moves forward only, accumulating `records_applied`; a shard can be behind
/// before it has a checkpoint, as in DynamoDB.
#[derive(Default)]
pub struct MemoryCheckpointStore {
    rows: Mutex<BTreeMap<String, ShardProgress>>,
    advance_calls: AtomicU64,
}

impl MemoryCheckpointStore {
    pub fn advance_calls(&self) -> u64 {
        self.advance_calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl CheckpointWriter for MemoryCheckpointStore {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        self.advance_calls.fetch_add(1, Ordering::Relaxed);
        let mut rows = lock(&self.rows);
        let row = rows
            .entry(checkpoint.shard_id.clone())
            .or_insert_with(|| ShardProgress::unknown(&checkpoint.shard_id));
        if !row.advance(checkpoint) {
            return Ok(AdvanceOutcome::AlreadyPast);
        }
        Ok(AdvanceOutcome::Advanced)
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        lock(&self.rows)
            .entry(behind.shard_id.clone())
            .or_insert_with(|| ShardProgress::unknown(&behind.shard_id))
            .note_behind(behind);
        Ok(())
    }
}

#[async_trait]
impl CheckpointReader for MemoryCheckpointStore {
    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(lock(&self.rows)
            .get(shard_id)
            .and_then(|row| row.checkpoint.clone()))
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(lock(&self.rows)
            .values()
            .filter_map(|row| row.checkpoint.clone())
            .collect())
    }

    async fn progress(&self) -> Result<Vec<ShardProgress>, StoreError> {
        Ok(lock(&self.rows).values().cloned().collect())
    }
}

/// DEADLETTER in memory, keyed by (shard, sequence number).
#[derive(Default)]
pub struct MemoryDeadLetterStore {
    letters: Mutex<BTreeMap<(String, String), DeadLetter>>,
    put_calls: AtomicU64,
}

impl MemoryDeadLetterStore {
    pub fn put_calls(&self) -> u64 {
        self.put_calls.load(Ordering::Relaxed)
    }

    /// The sequence numbers set aside so far (what tests compare with the records they expect).
    pub fn sequence_numbers(&self) -> std::collections::BTreeSet<String> {
        lock(&self.letters)
            .keys()
            .map(|(_, sequence)| sequence.clone())
            .collect()
    }
}

#[async_trait]
impl DeadLetterWriter for MemoryDeadLetterStore {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        lock(&self.letters).insert(
            (
                letter.shard_id.clone(),
                letter.sequence_number.as_str().to_owned(),
            ),
            letter.clone(),
        );
        Ok(())
    }
}

#[async_trait]
impl DeadLetterReader for MemoryDeadLetterStore {
    async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(lock(&self.letters).values().cloned().collect())
    }
}

/// Idempotency keys in memory, with the conditions of the DynamoDB adapter. Expired records are
/// swept whenever the map has doubled since the last sweep, so `serve` under a steady keyed load
/// holds about two TTLs' worth of keys, not every key ever sent.
#[derive(Default)]
pub struct MemoryIdempotencyStore {
    state: Mutex<IdempotencyKeys>,
}

#[derive(Default)]
struct IdempotencyKeys {
    records: HashMap<String, IdempotencyRecord>,
    sweep_at_len: usize,
}

/// Below this many keys, sweeping is not worth a pass over the map.
const MIN_SWEEP_LEN: usize = 1024;

impl MemoryIdempotencyStore {
    pub fn get(&self, key: &str) -> Option<IdempotencyRecord> {
        lock(&self.state).records.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.state).records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `change` on the in-progress record of `key` held under `lease_ms`; false otherwise.
    fn with_held(
        &self,
        key: &str,
        lease_ms: i64,
        change: impl FnOnce(&mut HashMap<String, IdempotencyRecord>),
    ) -> bool {
        let mut state = lock(&self.state);
        let held = matches!(
            state.records.get(key).map(|r| &r.state),
            Some(KeyState::InProgress { lease_until_ms }) if *lease_until_ms == lease_ms
        );
        if held {
            change(&mut state.records);
        }
        held
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut state = lock(&self.state);
        if state.records.len() >= state.sweep_at_len.max(MIN_SWEEP_LEN) {
            state.records.retain(|_, r| r.is_live(now));
            state.sweep_at_len = state.records.len() * 2;
        }
        match state.records.get(&record.key) {
            Some(held) if held.is_live(now) => Ok(Some(held.clone())),
            _ => {
                state.records.insert(record.key.clone(), record.clone());
                Ok(None)
            }
        }
    }

    async fn take_over(
        &self,
        key: &str,
        expected_lease_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.with_held(key, expected_lease_ms, |records| {
            if let Some(record) = records.get_mut(key) {
                record.state = KeyState::InProgress { lease_until_ms };
            }
        }))
    }

    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError> {
        Ok(self.with_held(key, lease_ms, |records| {
            if let Some(record) = records.get_mut(key) {
                record.state = KeyState::Completed {
                    answer: answer.to_owned(),
                };
            }
        }))
    }

    async fn release(&self, key: &str, lease_ms: i64) -> Result<bool, StoreError> {
        Ok(self.with_held(key, lease_ms, |records| {
            records.remove(key);
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::{SequenceNumber, VersionKey};

    fn row(data_bytes: usize) -> StatusRow {
        StatusRow {
            id: "a".into(),
            status: "s".into(),
            timestamp: "t".into(),
            data: Some("x".repeat(data_bytes)),
            received_at: "r".into(),
            shard_id: "s".into(),
            sequence_number: SequenceNumber::parse("1").unwrap(),
            version: VersionKey("1".into()),
            updated_at: "u".into(),
        }
    }

    /// Like DynamoDB, STATUS in memory refuses a row over 400 KB as that item's own fault.
    #[tokio::test]
    async fn rows_over_the_item_limit_are_refused_as_the_items_fault() {
        let store = MemoryStatusStore::default();
        let overhead = item_size(&row(0));
        let at_limit = row(MAX_DYNAMODB_ITEM_BYTES - overhead);
        assert_eq!(item_size(&at_limit), MAX_DYNAMODB_ITEM_BYTES);
        assert_eq!(store.apply(at_limit).await, Ok(ApplyOutcome::Applied));
        let over = row(MAX_DYNAMODB_ITEM_BYTES - overhead + 1);
        assert!(matches!(
            store.apply(over).await,
            Err(StoreError::ItemRejected(_))
        ));
    }
}
