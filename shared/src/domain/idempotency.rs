//! Idempotency keys: a request retried with the same key gets the first answer and puts nothing
//! new on the stream; the same key with a different body is refused. The decisions live here; the
//! records live in an [`crate::ports::IdempotencyStore`] (DynamoDB, or memory under `serve`).
//!
//! A key's life: a request *claims* it with a conditional put (in progress, with a lease), puts
//! its event, then *completes* it with the answer; a put that fails *releases* it so the retry can
//! try again. The condition, not timing, decides between concurrent duplicates: one claims, the
//! others see the record. If the holder dies before completing, its lease runs out and the next
//! retry *takes over* — with the first attempt's receive time, so an event without a timestamp
//! keeps the time it was first received and cannot overtake a later event for its id.

use super::limits::MAX_IDEMPOTENCY_KEY_CHARS;
use super::rules::{FieldError, Rule};
use super::time::EventTime;

/// Where a key was sent: the two are separate namespaces, since a single event's answer and a
/// batch item's answer differ in shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// The `Idempotency-Key` header of `POST /events`.
    Event,
    /// A batch item's `idempotency_key`.
    BatchItem,
}

impl KeyScope {
    /// The key as stored: scope-prefixed so the two namespaces never meet.
    pub fn stored_key(self, key: &str) -> String {
        match self {
            KeyScope::Event => format!("event:{key}"),
            KeyScope::BatchItem => format!("item:{key}"),
        }
    }
}

/// 1–255 visible ASCII characters (`!` to `~`): what an HTTP header carries unambiguously, so the
/// same key works as a header and as a JSON field. A UUID is the intended use.
pub fn validate_idempotency_key(key: &str, field: &str) -> Result<(), FieldError> {
    if key.is_empty() {
        return Err(FieldError::new(
            field,
            Rule::Empty,
            format!("{field} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(FieldError::new(
            field,
            Rule::TooLong,
            format!(
                "{field} must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {}",
                key.chars().count()
            ),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            Rule::InvalidCharacter,
            format!("{field} must be visible ASCII characters (no spaces), such as a UUID"),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// A request holds the key until `lease_until` (Unix ms); the lease is also its owner
    /// token: completing or releasing is conditional on it.
    InProgress { lease_until_ms: i64 },
    /// The answer to replay (JSON text).
    Completed { answer: String },
}

/// One key's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Scope-prefixed ([`KeyScope::stored_key`]).
    pub key: String,
    /// SHA-256 of the request (the body, or the batch item's JSON text) as sent.
    pub fingerprint: String,
    /// The first attempt's receive time, and the time an event without a timestamp got.
    pub received_at: EventTime,
    pub default_time: EventTime,
    pub state: KeyState,
    /// Unix seconds after which the key is free again (DynamoDB's TTL deletes it some time later;
    /// the claim's condition does not wait for that).
    pub expires_at: i64,
}

impl IdempotencyRecord {
    /// Whether the record still holds its key at `now`.
    pub fn is_live(&self, now: EventTime) -> bool {
        self.expires_at > now.unix_millis().div_euclid(1000)
    }
}

/// What a request does when its key is already held by a live record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Same request, already answered: answer it again.
    Replay(String),
    /// Same key, different request: refuse (422), nothing is put.
    KeyReused,
    /// Same request, still being put by another attempt: retry later (409).
    InProgress,
    /// Same request, its holder's lease ran out: take it over (if still at this lease).
    TakeOver { expected_lease_ms: i64 },
}

pub fn judge(held: &IdempotencyRecord, fingerprint: &str, now: EventTime) -> Judgement {
    if held.fingerprint != fingerprint {
        return Judgement::KeyReused;
    }
    match &held.state {
        KeyState::Completed { answer } => Judgement::Replay(answer.clone()),
        KeyState::InProgress { lease_until_ms } if *lease_until_ms > now.unix_millis() => {
            Judgement::InProgress
        }
        KeyState::InProgress { lease_until_ms } => Judgement::TakeOver {
            expected_lease_ms: *lease_until_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(ms: i64) -> EventTime {
        EventTime::from_unix_nanos(i128::from(ms) * 1_000_000)
    }

    fn record(state: KeyState) -> IdempotencyRecord {
        IdempotencyRecord {
            key: KeyScope::Event.stored_key("k"),
            fingerprint: "f".into(),
            received_at: at(0),
            default_time: at(0),
            state,
            expires_at: 100,
        }
    }

    #[test]
    fn keys_are_visible_ascii_and_bounded() {
        assert!(validate_idempotency_key("4f6c0e2a-8d1b-4c55-9a0e-3b1f2d7c9e10", "k").is_ok());
        let rule = |key: &str| validate_idempotency_key(key, "k").unwrap_err().rule;
        assert_eq!(rule(""), Rule::Empty);
        assert_eq!(
            rule(&"a".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1)),
            Rule::TooLong
        );
        assert!(validate_idempotency_key(&"a".repeat(MAX_IDEMPOTENCY_KEY_CHARS), "k").is_ok());
        for bad in ["a b", "a,\tb", "é", "a\u{fffd}"] {
            assert_eq!(rule(bad), Rule::InvalidCharacter, "{bad:?}");
        }
    }

    #[test]
    fn judgement_follows_fingerprint_state_and_lease() {
        let done = record(KeyState::Completed {
            answer: "{}".into(),
        });
        assert_eq!(judge(&done, "f", at(5)), Judgement::Replay("{}".into()));
        assert_eq!(judge(&done, "g", at(5)), Judgement::KeyReused);
        let held = record(KeyState::InProgress { lease_until_ms: 10 });
        assert_eq!(judge(&held, "f", at(9)), Judgement::InProgress);
        assert_eq!(
            judge(&held, "f", at(10)),
            Judgement::TakeOver {
                expected_lease_ms: 10
            }
        );
        assert_eq!(judge(&held, "g", at(10)), Judgement::KeyReused);
        assert!(held.is_live(at(99_999)));
        assert!(!held.is_live(at(100_000)));
    }

    #[test]
    fn scopes_never_share_a_stored_key() {
        assert_ne!(
            KeyScope::Event.stored_key("k"),
            KeyScope::BatchItem.stored_key("k")
        );
    }
}
