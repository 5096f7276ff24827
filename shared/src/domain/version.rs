//! The version that decides which event for an id is the newest.

use std::fmt;

use super::limits::MAX_SEQUENCE_DIGITS;
use super::opaque;
use super::sequence::SequenceNumber;
use super::time::{EventTime, SORT_KEY_DIGITS};

/// (event time, sequence number), compared in that order. Event time carries the producer's view
/// of order; the sequence number breaks ties in the order Kinesis accepted the records.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub event_time: EventTime,
    pub sequence: SequenceNumber,
}

impl Version {
    pub fn new(event_time: EventTime, sequence: SequenceNumber) -> Self {
        Self {
            event_time,
            sequence,
        }
    }

    /// The string stores compare in conditional writes: byte order equals `Version` order.
    pub fn key(&self) -> VersionKey {
        let mut key = self.event_time.sort_key();
        key.push('#');
        self.sequence.push_sort_key(&mut key);
        VersionKey(key)
    }
}

/// The stored, comparable form of a [`Version`]; both the in-memory and DynamoDB stores compare
/// this string bytewise, so they agree by construction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey(pub String);

/// What a row's `version` names: the opaque text a client holds to ask "anything newer than
/// this?" (`GET /messages/{id}?newer_than=`).
const OPAQUE_PREFIX: &str = "v1.";
/// Longest opaque text this API issues: the prefix and the base64 of a full key, with room.
const MAX_OPAQUE_CHARS: usize = 256;

/// Why a client's `newer_than` is not a version this API issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a version this API issued: {0}")]
pub struct VersionTextError(&'static str);

impl VersionKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `version` a row carries: URL-safe, and opaque on purpose (clients compare nothing
    /// themselves; they hand it back and the server compares keys).
    pub fn to_opaque(&self) -> String {
        // The sequence part is zero-padded to 128 digits for sorting; the padding is dropped
        // here (and put back by `from_opaque`) so the text stays short in a URL.
        let short = match self.0.split_once('#') {
            Some((time, sequence)) => {
                let digits = sequence.trim_start_matches('0');
                format!("{time}#{}", if digits.is_empty() { "0" } else { digits })
            }
            None => self.0.clone(),
        };
        opaque::encode(OPAQUE_PREFIX, &short)
    }

    /// The key `text` names, if this API could have issued it: the prefix, URL-safe base64, and
    /// inside exactly the shape [`Version::key`] writes (event-time digits, `#`, sequence
    /// digits). Anything else is refused, so a made-up value never waits for a change.
    pub fn from_opaque(text: &str) -> Result<Self, VersionTextError> {
        let text =
            opaque::decode(text, OPAQUE_PREFIX, MAX_OPAQUE_CHARS).map_err(VersionTextError)?;
        let (time, sequence) = text
            .split_once('#')
            .filter(|(time, sequence)| {
                time.len() == SORT_KEY_DIGITS
                    && (1..=MAX_SEQUENCE_DIGITS).contains(&sequence.len())
                    && time
                        .bytes()
                        .chain(sequence.bytes())
                        .all(|b| b.is_ascii_digit())
            })
            .ok_or(VersionTextError("not a version key"))?;
        let padding = "0".repeat(MAX_SEQUENCE_DIGITS - sequence.len());
        Ok(Self(format!("{time}#{padding}{sequence}")))
    }
}

impl fmt::Display for VersionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_opaque_text_round_trips_and_nothing_else_is_taken() {
        let key = version(
            5,
            "49590338271490256608559692538361571095921575989136588898",
        )
        .key();
        let text = key.to_opaque();
        assert!(
            text.starts_with("v1.") && !text.contains(['#', '+', '/', '=']),
            "{text}"
        );
        assert_eq!(VersionKey::from_opaque(&text), Ok(key.clone()));
        let forged = |inner: &str| opaque::encode("v1.", inner);
        for bad in [
            String::new(),
            "v1.".into(),
            key.0.clone(),
            format!("v2.{}", &text[3..]),
            format!("{text}!"),
            forged("not a key"),
            forged(&key.0.replace('#', "-")),
            forged(&key.0[1..]),
            forged(&format!("{}0", key.0)),
            forged(&format!("{}#", &key.0[..22])),
            "v1.".to_owned() + &"A".repeat(300),
        ] {
            assert!(VersionKey::from_opaque(&bad).is_err(), "{bad:?}");
        }
    }

    fn version(nanos: i64, seq: &str) -> Version {
        Version::new(
            EventTime::parse_rfc3339("2024-01-01T00:00:00Z")
                .unwrap()
                .saturating_add(std::time::Duration::from_nanos(nanos as u64)),
            SequenceNumber::parse(seq).unwrap(),
        )
    }

    #[test]
    fn time_first_then_sequence() {
        assert!(version(1, "1") > version(0, "999"));
        assert!(version(0, "10") > version(0, "9"));
        // One sequence number written two ways is one version, with one key.
        assert_eq!(version(0, "010"), version(0, "10"));
        assert_eq!(version(0, "010").key(), version(0, "10").key());
    }

    proptest! {
        #[test]
        fn key_order_equals_version_order(ta in 0i64..1_000_000, tb in 0i64..1_000_000,
                                          sa in "[1-9][0-9]{0,60}", sb in "[1-9][0-9]{0,60}") {
            let (a, b) = (version(ta, &sa), version(tb, &sb));
            prop_assert_eq!(a.cmp(&b), a.key().cmp(&b.key()));
            // And both agree with an oracle of their own: time, then the number by its length
            // and digits (no leading zeros here).
            let oracle = (ta, sa.len(), &sa).cmp(&(tb, sb.len(), &sb));
            prop_assert_eq!(a.cmp(&b), oracle);
        }
    }
}
