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
/// Any write port with faults injected: the write fails (as a throttle) when the faults strike,
/// otherwise it goes to `inner`. For the stream, each PutRecords entry is struck on its own, so
/// partial failures happen as they do on Kinesis.
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
                self.inner.$method($arg).await
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
        self.inner.advance(checkpoint).await
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.inner.note_behind(behind).await
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
        self.inner.put(key, body).await
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
        self.inner.claim(record, now).await
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
        self.inner
            .take_over(key, expected_lease_ms, lease_until_ms)
            .await
    }

    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.inner.complete(key, lease_ms, answer).await
    }

    async fn release(&self, key: &str, lease_ms: i64) -> Result<bool, StoreError> {
        if self.faults.strikes() {
            return Err(self.faults.store_error());
        }
        self.inner.release(key, lease_ms).await
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
