//! Idempotency keys on disk, with the conditions of the in-memory and DynamoDB adapters. A key's
//! answer is committed with fsync before the request is answered, so a client retrying after a
//! crash of `serve` is answered the same, not put twice. Expired keys are deleted a few at a
//! time as new ones are claimed (through an index by expiry), so the file holds about one TTL's
//! worth of keys, as DynamoDB's TTL does.

use async_trait::async_trait;
use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use super::tables::{DiskTables, WriteError};
use crate::domain::idempotency::{IdempotencyRecord, KeyState};
use crate::domain::EventTime;
use crate::ports::{IdempotencyStore, StoreError};

/// Stored key → record.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency_keys");
/// (expires at, key) → (): the keys in the order they expire.
const EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("idempotency_expiry");
/// Expired keys deleted per claim at most: a claim's work stays bounded, and since each claim
/// adds one key, deleting more than one per claim keeps up with any steady rate.
const SWEEP_PER_CLAIM: usize = 8;
/// How long past its expiry a key is kept before it is deleted. DynamoDB's TTL deletes "some
/// time later" too; keeping an hour means a request still holding its key when the key expires
/// (leases are seconds, TTLs hours) finds it, as it would in memory.
const SWEEP_GRACE_SECS: i64 = 3600;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(KEYS)?;
    txn.open_table(EXPIRY)?;
    Ok(())
}

/// (fingerprint, received at, default time (unix ns as text), in progress until (ms) or the
/// answer, expires at).
type Fields = (String, String, String, Option<i64>, Option<String>, i64);

fn encode(record: &IdempotencyRecord) -> Vec<u8> {
    let (lease, answer) = match &record.state {
        KeyState::InProgress { lease_until_ms } => (Some(*lease_until_ms), None),
        KeyState::Completed { answer } => (None, Some(answer.as_str())),
    };
    serde_json::to_vec(&(
        &record.fingerprint,
        record.received_at.unix_nanos().to_string(),
        record.default_time.unix_nanos().to_string(),
        lease,
        answer,
        record.expires_at,
    ))
    .unwrap_or_default()
}

fn decode(key: &str, bytes: &[u8]) -> Result<IdempotencyRecord, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        StoreError::Rejected(format!(
            "idempotency key {key:?} on disk cannot be read: {e}"
        ))
    };
    let (fingerprint, received_at, default_time, lease, answer, expires_at): Fields =
        serde_json::from_slice(bytes).map_err(|e| corrupt(&e))?;
    let time = |text: &str| {
        text.parse::<i128>()
            .map(EventTime::from_unix_nanos)
            .map_err(|e| corrupt(&e))
    };
    let state = match (lease, answer) {
        (_, Some(answer)) => KeyState::Completed { answer },
        (Some(lease_until_ms), None) => KeyState::InProgress { lease_until_ms },
        (None, None) => return Err(corrupt(&"neither a lease nor an answer")),
    };
    Ok(IdempotencyRecord {
        key: key.to_owned(),
        fingerprint,
        received_at: time(&received_at)?,
        default_time: time(&default_time)?,
        state,
        expires_at,
    })
}

fn record_of(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<IdempotencyRecord>, WriteError> {
    Ok(match keys.get(key)? {
        Some(bytes) => Some(decode(key, bytes.value())?),
        None => None,
    })
}

/// Writes `record` in place of whatever `key` held, keeping the expiry index in step.
fn put(
    keys: &mut Table<&'static str, &'static [u8]>,
    expiry: &mut Table<(i64, &'static str), ()>,
    old: Option<&IdempotencyRecord>,
    record: &IdempotencyRecord,
) -> Result<(), WriteError> {
    if let Some(old) = old {
        expiry.remove((old.expires_at, old.key.as_str()))?;
    }
    keys.insert(record.key.as_str(), encode(record).as_slice())?;
    expiry.insert((record.expires_at, record.key.as_str()), ())?;
    Ok(())
}

/// Deletes up to [`SWEEP_PER_CLAIM`] keys that expired before `before_secs`.
fn sweep(
    keys: &mut Table<&'static str, &'static [u8]>,
    expiry: &mut Table<(i64, &'static str), ()>,
    before_secs: i64,
) -> Result<(), WriteError> {
    let mut expired = Vec::new();
    for item in expiry
        .range((i64::MIN, "")..(before_secs, ""))?
        .take(SWEEP_PER_CLAIM)
    {
        let (key, _) = item?;
        let (at, key) = key.value();
        expired.push((at, key.to_owned()));
    }
    for (at, key) in expired {
        expiry.remove((at, key.as_str()))?;
        keys.remove(key.as_str())?;
    }
    Ok(())
}

impl DiskTables {
    /// The record of an idempotency key, live or expired (not yet swept).
    pub fn idempotency_key(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.read(|txn| record_of(&txn.open_table(KEYS)?, key))
    }

    /// How many idempotency keys the file holds, live or expired (not yet swept).
    pub fn idempotency_keys(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(txn.open_table(KEYS)?.len()?))
    }

    /// Runs `change` on the record of `key` if it is in progress under `lease_ms`, committed
    /// with fsync; false (nothing written) otherwise.
    async fn with_held(
        &self,
        key: &str,
        lease_ms: i64,
        change: impl FnOnce(IdempotencyRecord) -> Option<IdempotencyRecord> + Send + 'static,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.write_durably(move |txn| {
            let mut keys = txn.open_table(KEYS)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            let Some(held) = record_of(&keys, &key)? else {
                return Ok(false);
            };
            if held.state
                != (KeyState::InProgress {
                    lease_until_ms: lease_ms,
                })
            {
                return Ok(false);
            }
            match change(held.clone()) {
                Some(changed) => put(&mut keys, &mut expiry, Some(&held), &changed)?,
                None => {
                    keys.remove(key.as_str())?;
                    expiry.remove((held.expires_at, key.as_str()))?;
                }
            }
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl IdempotencyStore for DiskTables {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let record = record.clone();
        self.write(move |txn| {
            let mut keys = txn.open_table(KEYS)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            let now_secs = now.unix_millis().div_euclid(1000);
            sweep(
                &mut keys,
                &mut expiry,
                now_secs.saturating_sub(SWEEP_GRACE_SECS),
            )?;
            let held = record_of(&keys, &record.key)?;
            if let Some(held) = held.as_ref().filter(|h| h.is_live(now)) {
                return Ok(Some(held.clone()));
            }
            put(&mut keys, &mut expiry, held.as_ref(), &record)?;
            Ok(None)
        })
        .await
    }

    async fn take_over(
        &self,
        key: &str,
        expected_lease_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_held(key, expected_lease_ms, move |record| {
            Some(IdempotencyRecord {
                state: KeyState::InProgress { lease_until_ms },
                ..record
            })
        })
        .await
    }

    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError> {
        let answer = answer.to_owned();
        self.with_held(key, lease_ms, move |record| {
            Some(IdempotencyRecord {
                state: KeyState::Completed { answer },
                ..record
            })
        })
        .await
    }

    async fn release(&self, key: &str, lease_ms: i64) -> Result<bool, StoreError> {
        self.with_held(key, lease_ms, |_| None).await
    }
}
