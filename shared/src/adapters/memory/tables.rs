//! The three tables in memory: conditional STATUS and OPLOG writes that compare exactly what the
//! DynamoDB conditions compare, and DEADLETTER keyed as in DynamoDB. Each counts its calls, so
//! tests and benchmarks can check the write economy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::*;

use super::lock;

/// STATUS in memory: the conditional write compares version keys bytewise, as DynamoDB does.
#[derive(Default)]
pub struct MemoryStatusStore {
    rows: Mutex<HashMap<String, StatusRow>>,
    apply_calls: AtomicU64,
}

impl MemoryStatusStore {
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
        let mut rows = lock(&self.rows);
        match rows.get_mut(&row.id) {
            Some(stored) if stored.version >= row.version => Ok(ApplyOutcome::Stale),
            Some(stored) => {
                *stored = row;
                Ok(ApplyOutcome::Applied)
            }
            None => {
                rows.insert(row.id.clone(), row);
                Ok(ApplyOutcome::Applied)
            }
        }
    }
}

#[async_trait]
impl StatusReader for MemoryStatusStore {
    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError> {
        Ok(lock(&self.rows).get(id).cloned())
    }
}

/// OPLOG in memory: moves forward only, accumulating `records_applied`.
#[derive(Default)]
pub struct MemoryCheckpointStore {
    rows: Mutex<BTreeMap<String, Checkpoint>>,
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
        match rows.get_mut(&checkpoint.shard_id) {
            Some(stored) if stored.sequence_number >= checkpoint.sequence_number => {
                Ok(AdvanceOutcome::AlreadyPast)
            }
            Some(stored) => {
                let total = stored.records_applied + checkpoint.records_applied;
                *stored = Checkpoint {
                    records_applied: total,
                    ..checkpoint.clone()
                };
                Ok(AdvanceOutcome::Advanced)
            }
            None => {
                rows.insert(checkpoint.shard_id.clone(), checkpoint.clone());
                Ok(AdvanceOutcome::Advanced)
            }
        }
    }
}

#[async_trait]
impl CheckpointReader for MemoryCheckpointStore {
    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(lock(&self.rows).get(shard_id).cloned())
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
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
