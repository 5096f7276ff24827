//! Fault-injecting wrappers around any adapter: random failures at a set rate, or "down" until
//! told otherwise. The real engines used in tests (LocalStack, DynamoDB Local) never throttle,
//! so throttling and partial failures are exercised through these.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::*;

/// Decides which calls fail. Shared by every wrapper built from it.
pub struct Faults {
    rng: Mutex<fastrand::Rng>,
    rate_per_million: AtomicU32,
    down: AtomicBool,
    injected: AtomicU64,
}

impl Faults {
    /// No faults until a rate is set or the target is taken down; `seed` makes runs repeatable.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            rate_per_million: AtomicU32::new(0),
            down: AtomicBool::new(false),
            injected: AtomicU64::new(0),
        })
    }

    /// Fraction of calls (or entries) that fail, from 0.0 to 1.0.
    pub fn set_failure_rate(&self, rate: f64) {
        let per_million = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32;
        self.rate_per_million.store(per_million, Ordering::SeqCst);
    }

    /// While down, every call fails.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn strikes(&self) -> bool {
        let hit = self.down.load(Ordering::SeqCst) || {
            let rate = self.rate_per_million.load(Ordering::SeqCst);
            rate > 0 && {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                rng.u32(0..1_000_000) < rate
            }
        };
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    fn store_error(&self) -> StoreError {
        StoreError::Throttled("injected fault".into())
    }
}

/// A stream whose calls, and PutRecords entries one by one, fail as throttled.
pub struct FaultyStream<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl<S: EventStream> EventStream for FaultyStream<S> {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        if self.faults.strikes() {
            return Err(StreamError::Throttled("injected fault".into()));
        }
        self.inner.put(record).await
    }

    /// Entries picked to fail are never sent; the others go through in one real call, so the
    /// answer mixes real acknowledgements with injected rejections, as PutRecords does.
    async fn put_many(
        &self,
        records: &[OutgoingRecord],
    ) -> Result<Vec<PutEntryResult>, StreamError> {
        let fail: Vec<bool> = records.iter().map(|_| self.faults.strikes()).collect();
        let to_send: Vec<OutgoingRecord> = records
            .iter()
            .zip(&fail)
            .filter(|(_, f)| !**f)
            .map(|(r, _)| r.clone())
            .collect();
        let mut sent = if to_send.is_empty() {
            Vec::new()
        } else {
            self.inner.put_many(&to_send).await?
        }
        .into_iter();
        Ok(fail
            .iter()
            .map(|failed| match failed {
                true => PutEntryResult::Rejected {
                    throttled: true,
                    message: "injected fault: ProvisionedThroughputExceededException".into(),
                },
                false => sent.next().unwrap_or(PutEntryResult::Rejected {
                    throttled: false,
                    message: "missing result".into(),
                }),
            })
            .collect())
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        self.inner.list_shards().await
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        self.inner.shard_iterator(shard_id, start).await
    }

    async fn get_records(&self, iterator: &str, limit: usize) -> Result<RecordsPage, StreamError> {
        self.inner.get_records(iterator, limit).await
    }
}

/// STATUS writes that fail (before reaching the store) when the faults strike.
pub struct FaultyStatusStore<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl<S: StatusStore> StatusStore for FaultyStatusStore<S> {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.inner.apply(row).await
    }

    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError> {
        self.inner.get(id).await
    }
}

pub struct FaultyCheckpointStore<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl<S: CheckpointStore> CheckpointStore for FaultyCheckpointStore<S> {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.inner.advance(checkpoint).await
    }

    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.get(shard_id).await
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.list().await
    }
}

pub struct FaultyDeadLetterStore<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl<S: DeadLetterStore> DeadLetterStore for FaultyDeadLetterStore<S> {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.inner.put(letter).await
    }

    async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.list().await
    }
}
