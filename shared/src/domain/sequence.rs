//! Kinesis sequence numbers: decimal strings compared as numbers.

use std::cmp::Ordering;
use std::fmt;

use super::limits::MAX_SEQUENCE_DIGITS;

/// A validated Kinesis sequence number. The text is kept exactly as Kinesis gave it (it is echoed
/// back as a batch item failure, which must match), while comparisons ignore leading zeros and
/// compare by magnitude: "9" < "10", which plain text comparison gets wrong. Equality and hashing
/// agree with that order ("007" equals "7"), so a map and a comparison never disagree.
#[derive(Clone, Debug)]
pub struct SequenceNumber(String);

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.significant_digits() == other.significant_digits()
    }
}

impl Eq for SequenceNumber {}

impl std::hash::Hash for SequenceNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant_digits().hash(state);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceNumberError {
    #[error("sequence number is empty")]
    Empty,
    #[error("sequence number has {0} digits, more than the {MAX_SEQUENCE_DIGITS} allowed")]
    TooLong(usize),
    #[error("sequence number must contain only decimal digits")]
    NotDecimal,
}

impl SequenceNumber {
    pub fn parse(text: &str) -> Result<Self, SequenceNumberError> {
        if text.is_empty() {
            return Err(SequenceNumberError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SequenceNumberError::NotDecimal);
        }
        if text.len() > MAX_SEQUENCE_DIGITS {
            return Err(SequenceNumberError::TooLong(text.len()));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn significant_digits(&self) -> &str {
        let trimmed = self.0.trim_start_matches('0');
        if trimmed.is_empty() {
            "0"
        } else {
            trimmed
        }
    }

    /// Fixed-width (128 digits, zero-padded) form whose byte order equals numeric order. DynamoDB
    /// compares strings bytewise, and its numbers hold only 38 digits, so conditions compare this.
    pub fn sort_key(&self) -> String {
        let mut key = String::with_capacity(MAX_SEQUENCE_DIGITS);
        self.push_sort_key(&mut key);
        key
    }

    /// Appends the sort key to `out` (one allocation for a composite key).
    pub fn push_sort_key(&self, out: &mut String) {
        let digits = self.significant_digits();
        out.extend(std::iter::repeat_n('0', MAX_SEQUENCE_DIGITS - digits.len()));
        out.push_str(digits);
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant_digits(), other.significant_digits());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Serialised as the text Kinesis gave, the only form it leaves the process in (JSON answers).
impl serde::Serialize for SequenceNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(text: &str) -> SequenceNumber {
        SequenceNumber::parse(text).unwrap()
    }

    #[test]
    fn compares_by_magnitude_not_text() {
        assert!(seq("9") < seq("10"));
        assert_eq!(seq("0010").cmp(&seq("10")), Ordering::Equal);
        // Equality and hashing follow the order, not the text.
        assert_eq!(seq("0010"), seq("10"));
        assert_ne!(seq("100"), seq("10"));
        let hashed: std::collections::HashSet<SequenceNumber> =
            [seq("0010"), seq("10"), seq("010")].into_iter().collect();
        assert_eq!(hashed.len(), 1);
        assert!(seq("49590338271490256608559692538361571095921575989136588898") > seq("9"));
    }

    #[test]
    fn rejects_what_kinesis_never_produces() {
        assert_eq!(SequenceNumber::parse(""), Err(SequenceNumberError::Empty));
        assert_eq!(
            SequenceNumber::parse("12a"),
            Err(SequenceNumberError::NotDecimal)
        );
        assert_eq!(
            SequenceNumber::parse("-1"),
            Err(SequenceNumberError::NotDecimal)
        );
        assert!(SequenceNumber::parse(&"9".repeat(128)).is_ok());
        assert_eq!(
            SequenceNumber::parse(&"9".repeat(129)),
            Err(SequenceNumberError::TooLong(129))
        );
    }

    #[test]
    fn keeps_the_original_text() {
        assert_eq!(seq("007").as_str(), "007");
    }

    proptest! {
        #[test]
        fn sort_key_order_equals_numeric_order(a in "[0-9]{1,128}", b in "[0-9]{1,128}") {
            let (x, y) = (seq(&a), seq(&b));
            prop_assert_eq!(x.cmp(&y), x.sort_key().cmp(&y.sort_key()));
            prop_assert_eq!(x.sort_key().len(), MAX_SEQUENCE_DIGITS);
        }

        #[test]
        fn order_matches_u128_where_it_fits(a: u64, b: u64) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }
    }
}
