//! Idempotency keys at the API: admitting a keyed request (claim, replay or refuse), then
//! completing or releasing its claim. The decisions are [`crate::domain::idempotency`]'s.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::{ApiError, ErrorCode};
use crate::domain::idempotency::{judge, IdempotencyRecord, Judgement, KeyScope, KeyState};
use crate::domain::limits::{DEFAULT_IDEMPOTENCY_TTL, IDEMPOTENCY_LEASE};
use crate::domain::EventTime;
use crate::ports::{IdempotencyStore, StoreError};

/// The idempotency keys of one API, and how long a completed key answers retries.
pub(crate) struct IdempotencyKeys {
    store: Arc<dyn IdempotencyStore>,
    ttl: Duration,
}

/// A key this request holds: it puts its event stamped with these times, then completes or
/// releases the key under its lease.
pub(crate) struct Claim {
    key: String,
    lease_ms: i64,
    pub received_at: EventTime,
    pub default_time: EventTime,
}

pub(crate) enum Admission {
    /// Put the event (stamped with the claim's times), then complete the claim.
    Proceed(Claim),
    /// The first answer, as stored.
    Replay(String),
    Refused(ApiError),
}

fn unavailable(error: &StoreError) -> ApiError {
    ApiError::unavailable(
        ErrorCode::Unavailable,
        format!("the idempotency keys are unavailable, retry later: {error}"),
    )
}

impl IdempotencyKeys {
    pub(crate) fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            ttl: DEFAULT_IDEMPOTENCY_TTL,
        }
    }

    pub(crate) fn with_ttl(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// Claims `key` for a request fingerprinted `fingerprint`, received at `received_at` (its
    /// event without a timestamp gets `default_time`). `field` names the key in errors.
    pub(crate) async fn admit(
        &self,
        scope: KeyScope,
        key: &str,
        fingerprint: String,
        received_at: EventTime,
        default_time: EventTime,
        field: &str,
    ) -> Admission {
        let now = received_at;
        let stored_key = scope.stored_key(key);
        let lease_ms = now.saturating_add(IDEMPOTENCY_LEASE).unix_millis();
        let expires_at = now.saturating_add(self.ttl).unix_millis().div_euclid(1000);
        let record = IdempotencyRecord {
            key: stored_key.clone(),
            fingerprint,
            received_at,
            default_time,
            state: KeyState::InProgress {
                lease_until_ms: lease_ms,
            },
            expires_at,
        };
        let held = match self.store.claim(&record, now).await {
            Ok(None) => {
                return Admission::Proceed(Claim {
                    key: stored_key,
                    lease_ms,
                    received_at,
                    default_time,
                })
            }
            Ok(Some(held)) => held,
            Err(e) => return Admission::Refused(unavailable(&e)),
        };
        let refuse = |status, code, message: String| {
            Admission::Refused(ApiError {
                field: Some(field.to_owned()),
                ..ApiError::new(status, code, message)
            })
        };
        match judge(&held, &record.fingerprint, now) {
            Judgement::Replay(answer) => Admission::Replay(answer),
            Judgement::KeyReused => refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                format!(
                    "{field} {key:?} was already used for a different request; a retry must \
                     send the same body, and a new request a new key"
                ),
            ),
            Judgement::InProgress => in_progress(field, key),
            Judgement::TakeOver { expected_lease_ms } => {
                match self
                    .store
                    .take_over(&stored_key, expected_lease_ms, lease_ms)
                    .await
                {
                    Ok(true) => Admission::Proceed(Claim {
                        key: stored_key,
                        lease_ms,
                        received_at: held.received_at,
                        default_time: held.default_time,
                    }),
                    Ok(false) => in_progress(field, key),
                    Err(e) => Admission::Refused(unavailable(&e)),
                }
            }
        }
    }

    /// Stores the answer for retries. If that fails the event is still accepted: the key stays
    /// in progress until its lease runs out, and a retry after that puts the event again with
    /// its first receive time: a duplicate on the stream with the same event time, so only an
    /// event of exactly that time could be overtaken (the sequence number breaks that tie).
    pub(crate) async fn complete(&self, claim: &Claim, answer: &str) {
        match self
            .store
            .complete(&claim.key, claim.lease_ms, answer)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                key = claim.key,
                "an idempotency key was taken over before its answer was stored"
            ),
            Err(e) => tracing::warn!(
                key = claim.key,
                error = %e,
                "could not store an idempotency key's answer; a retry after the lease puts the event again"
            ),
        }
    }

    /// Completes the claim with `answer`, or releases it when there is none (the put failed).
    pub(crate) async fn settle(&self, claim: &Claim, answer: Option<&str>) {
        match answer {
            Some(answer) => self.complete(claim, answer).await,
            None => self.release(claim).await,
        }
    }

    /// Frees the key after a failed put, so the client's retry can put the event. If that
    /// fails, the retry waits for the lease instead.
    pub(crate) async fn release(&self, claim: &Claim) {
        if let Err(e) = self.store.release(&claim.key, claim.lease_ms).await {
            tracing::warn!(key = claim.key, error = %e, "could not release an idempotency key");
        }
    }
}

fn in_progress(field: &str, key: &str) -> Admission {
    Admission::Refused(ApiError {
        field: Some(field.to_owned()),
        ..ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyInProgress,
            format!(
                "a request with {field} {key:?} is still being accepted; retry after {} s for its answer",
                super::RETRY_AFTER_SECONDS
            ),
        )
    })
}
