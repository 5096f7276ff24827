//! The version that decides which event for an id is the newest.

use std::fmt;

use super::sequence::SequenceNumber;
use super::time::EventTime;

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

impl VersionKey {
    pub fn as_str(&self) -> &str {
        &self.0
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
