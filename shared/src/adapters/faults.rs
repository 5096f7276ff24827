//! Fault-injecting wrappers around any adapter: random failures at a set rate, or "down" until
//! told otherwise; and, at a rate of their own, calls that take effect and then fail (the
//! timeout a real network gives after the write was applied), so a test meets both outcomes.
//! The real engines used in tests (LocalStack, DynamoDB Local) never throttle, so throttling
//! and partial failures are exercised through these.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::*;

/// Decides which calls fail. Shared by every wrapper built from it.
pub struct Faults {
    rng: Mutex<fastrand::Rng>,
    rate_per_million: AtomicU32,
    after_per_million: AtomicU32,
    down: AtomicBool,
    injected: AtomicU64,
    injected_after: AtomicU64,
}

impl Faults {
    /// No faults until a rate is set or the target is taken down; `seed` makes runs repeatable.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            rate_per_million: AtomicU32::new(0),
            after_per_million: AtomicU32::new(0),
            down: AtomicBool::new(false),
            injected: AtomicU64::new(0),
            injected_after: AtomicU64::new(0),
        })
    }

    /// Fraction of calls (or entries) that fail, from 0.0 to 1.0.
    pub fn set_failure_rate(&self, rate: f64) {
        let per_million = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32;
        self.rate_per_million.store(per_million, Ordering::SeqCst);
    }

    /// Fraction of the calls that got through which then fail anyway, their effect kept: the
    /// caller cannot tell them from a call that never happened, as after a real timeout.
    pub fn set_fail_after_rate(&self, rate: f64) {
        let per_million = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32;
        self.after_per_million.store(per_million, Ordering::SeqCst);
    }

    /// While down, every call fails.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// How many of those failures came after the call took effect: each is a write the caller
    /// was told failed but that happened (a record on the stream, a row written).
    pub fn injected_after(&self) -> u64 {
        self.injected_after.load(Ordering::SeqCst)
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

    /// Whether a call that took effect fails anyway.
    fn strikes_after(&self) -> bool {
        let rate = self.after_per_million.load(Ordering::SeqCst);
        let hit = rate > 0 && {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            rng.u32(0..1_000_000) < rate
        };
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
            self.injected_after.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// `result`, unless the call is to fail after taking effect.
    fn after<T, E>(&self, result: Result<T, E>, timed_out: impl FnOnce() -> E) -> Result<T, E> {
        match result {
            Ok(_) if self.strikes_after() => Err(timed_out()),
            other => other,
        }
    }
}

fn store_timed_out() -> StoreError {
    StoreError::Unavailable("injected fault: timed out after the write took effect".into())
}

fn stream_timed_out() -> StreamError {
    StreamError::Unavailable("injected fault: timed out after the put took effect".into())
}

/// Any write port with faults injected: the write fails (as a throttle) when the faults strike,
/// otherwise it goes to `inner` and, when they strike after, fails as timed out anyway. For the
/// stream, each PutRecords entry is struck on its own, so partial failures happen as they do on
/// Kinesis.
pub struct Faulty<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

impl<S> Faulty<S> {
    pub fn new(inner: S, faults: &Arc<Faults>) -> Self {
        Self {
            inner,
            faults: Arc::clone(faults),
        }
    }
}

#[async_trait]
impl<S: StreamWriter> StreamWriter for Faulty<S> {
    async fn put(&self, record: &OutgoingRecord) -> Result<PutAck, StreamError> {
        if self.faults.strikes() {
            return Err(StreamError::Throttled("injected fault".into()));
        }
        self.faults
            .after(self.inner.put(record).await, stream_timed_out)
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
            // A timeout after the call: its entries are on the stream, the caller knows none.
            self.faults
                .after(self.inner.put_many(&to_send).await, stream_timed_out)?
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
}

/// The table writes: one method each, failing as a throttle when the faults strike.
macro_rules! faulty_store_write {
    ($trait:ident :: $method:ident($arg:ident: $ty:ty) -> $ok:ty) => {
        #[async_trait]
        impl<S: $trait> $trait for Faulty<S> {
            async fn $method(&self, $arg: $ty) -> Result<$ok, StoreError> {
                if self.faults.strikes() {
                    return Err(self.faults.store_error());
                }
                self.faults
                    .after(self.inner.$method($arg).await, store_timed_out)
            }
        }
    };
}

faulty_store_write!(StatusWriter::apply(row: StatusRow) -> ApplyOutcome);
/// OPLOG: both writes fail when the faults strike.
#[async_trait]
impl<S: CheckpointWriter> CheckpointWriter for Faulty<S> {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults
            .after(self.inner.advance(checkpoint).await, store_timed_out)
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults
            .after(self.inner.note_behind(behind).await, store_timed_out)
    }
}
faulty_store_write!(DeadLetterWriter::put(letter: &DeadLetter) -> ());
faulty_store_write!(HistoryWriter::put_many(entries: Vec<HistoryEntry>) -> HistoryWrite);

#[async_trait]
impl<S: ArchiveWriter> ArchiveWriter for Faulty<S> {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults
            .after(self.inner.put(key, body).await, store_timed_out)
    }
}

/// Every idempotency-key call can fail, so tests reach each crash point of a keyed request:
/// before the claim, between the put and the answer being stored, and at release.
#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for Faulty<S> {
    async fn claim(
        &self,
        record: &crate::domain::idempotency::IdempotencyRecord,
        now: crate::domain::EventTime,
    ) -> Result<Option<crate::domain::idempotency::IdempotencyRecord>, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults
            .after(self.inner.claim(record, now).await, store_timed_out)
    }

    async fn take_over(
        &self,
        key: &str,
        expected_lease_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults.after(
            self.inner
                .take_over(key, expected_lease_ms, lease_until_ms)
                .await,
            store_timed_out,
        )
    }

    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults.after(
            self.inner.complete(key, lease_ms, answer).await,
            store_timed_out,
        )
    }

    async fn release(&self, key: &str, lease_ms: i64) -> Result<bool, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.faults
            .after(self.inner.release(key, lease_ms).await, store_timed_out)
    }
}

/// STATUS refusing chosen rows for good, the way DynamoDB refuses an item over 400 KB
/// (`StoreError::ItemRejected`): the field bounds make such a row unreachable through the API,
/// so tests of the processor's fallback choose the rows to refuse instead.
pub struct RefusesRows<S> {
    pub inner: S,
    pub refuse: fn(&StatusRow) -> bool,
}

#[async_trait]
impl<S: StatusWriter> StatusWriter for RefusesRows<S> {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        if (self.refuse)(&row) {
            return Err(StoreError::ItemRejected(
                "Item size has exceeded the maximum allowed size (refused by the test)".into(),
            ));
        }
        self.inner.apply(row).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::adapters::memory::MemoryStatusStore;
    use crate::domain::{SequenceNumber, VersionKey};

    fn row(id: &str) -> StatusRow {
        StatusRow {
            id: id.into(),
            status: "s".into(),
            timestamp: "2024-01-01T00:00:00Z".into(),
            data: None,
            received_at: "2024-01-01T00:00:00Z".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: SequenceNumber::parse("1").unwrap(),
            version: VersionKey("1".into()),
            updated_at: "2024-01-01T00:00:00Z".into(),
        }
    }

    /// A fault before the call leaves nothing; a fault after it keeps the write and still
    /// answers an error, as a timeout after the write does.
    #[tokio::test]
    async fn a_fault_after_the_call_keeps_its_effect() {
        let store = Arc::new(MemoryStatusStore::default());
        let faults = Faults::new(7);
        let faulty = Faulty::new(store.clone(), &faults);

        faults.set_failure_rate(1.0);
        assert!(faulty.apply(row("before")).await.is_err());
        assert!(store.get("before").await.unwrap().is_none());

        faults.set_failure_rate(0.0);
        faults.set_fail_after_rate(1.0);
        assert!(faulty.apply(row("after")).await.is_err());
        assert!(store.get("after").await.unwrap().is_some());
        assert_eq!(faults.injected(), 2);
    }
}
