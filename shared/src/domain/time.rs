//! Event times: RFC 3339 instants with offsets, compared as instants with nanosecond precision.

use std::fmt::{self, Write as _};
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::limits::MAX_SEQUENCE_DIGITS;

/// An instant, as nanoseconds since the Unix epoch (UTC). Offsets are normalised away, so
/// `2024-01-01T01:00:00+01:00` and `2024-01-01T00:00:00Z` are the same `EventTime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i128);

/// Added to the nanosecond count to make every representable instant (years −9999 to 9999 with
/// offsets) non-negative, so the fixed-width decimal sort key orders like the instant.
const SORT_KEY_BIAS: i128 = 1_000_000_000_000_000_000_000;
pub(crate) const SORT_KEY_DIGITS: usize = 22;

impl EventTime {
    /// Parses an RFC 3339 timestamp; `None` when it is not one.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(|t| Self(t.unix_timestamp_nanos()))
    }

    pub fn from_unix_nanos(nanos: i128) -> Self {
        Self(nanos)
    }

    pub fn unix_millis(self) -> i64 {
        i64::try_from(self.0.div_euclid(1_000_000)).unwrap_or(i64::MAX)
    }

    pub fn from_offset_date_time(t: OffsetDateTime) -> Self {
        Self(t.unix_timestamp_nanos())
    }

    pub fn unix_nanos(self) -> i128 {
        self.0
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_nanos() as i128))
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_nanos() as i128))
    }

    /// Milliseconds from `earlier` to `self`, zero when `earlier` is later.
    pub fn millis_since(self, earlier: EventTime) -> u64 {
        u64::try_from((self.0 - earlier.0).max(0) / 1_000_000).unwrap_or(u64::MAX)
    }

    /// Fixed-width decimal whose byte order equals chronological order.
    pub fn sort_key(self) -> String {
        // Room for the version key this usually starts: 22 digits, '#', 128 digits.
        let mut key = String::with_capacity(SORT_KEY_DIGITS + 1 + MAX_SEQUENCE_DIGITS);
        let _ = write!(
            key,
            "{:0width$}",
            self.0 + SORT_KEY_BIAS,
            width = SORT_KEY_DIGITS
        );
        key
    }

    /// RFC 3339 in UTC, e.g. `2024-05-01T12:00:00.123456789Z`: fraction digits as needed, none
    /// for whole seconds. Written by hand (on every STATUS row): several times faster than a
    /// general-purpose formatter, and checked against one by a property test.
    pub fn to_rfc3339(self) -> String {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(self.0) else {
            return format!("@{}ns", self.0);
        };
        let (year, month, day) = t.to_calendar_date();
        if !(0..=9999).contains(&year) {
            return t
                .format(&Rfc3339)
                .unwrap_or_else(|_| format!("@{}ns", self.0));
        }
        let (hour, minute, second, nanos) = t.to_hms_nano();
        let mut out = String::with_capacity(30);
        fn push(out: &mut String, value: u32, width: usize) {
            let mut digits = [b'0'; 9];
            let mut v = value;
            for slot in digits[..width].iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
            out.extend(digits[..width].iter().map(|&b| b as char));
        }
        push(&mut out, year as u32, 4);
        out.push('-');
        push(&mut out, u8::from(month) as u32, 2);
        out.push('-');
        push(&mut out, u32::from(day), 2);
        out.push('T');
        push(&mut out, u32::from(hour), 2);
        out.push(':');
        push(&mut out, u32::from(minute), 2);
        out.push(':');
        push(&mut out, u32::from(second), 2);
        if nanos > 0 {
            out.push('.');
            push(&mut out, nanos, 9);
            while out.ends_with('0') {
                out.pop();
            }
        }
        out.push('Z');
        out
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Where "now" comes from: the system clock in production, a fixed one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> EventTime;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> EventTime {
        EventTime::from_offset_date_time(OffsetDateTime::now_utc())
    }
}

/// A clock that always answers the same instant.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub EventTime);

impl Clock for FixedClock {
    fn now(&self) -> EventTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(text: &str) -> EventTime {
        EventTime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn offsets_are_normalised() {
        assert_eq!(t("2024-01-01T01:00:00+01:00"), t("2024-01-01T00:00:00Z"));
        assert!(t("2024-01-01T00:30:00+01:00") < t("2024-01-01T00:00:00Z"));
        assert_eq!(t("2024-01-01T00:00:00-05:30"), t("2024-01-01T05:30:00Z"));
    }

    #[test]
    fn nanoseconds_are_kept() {
        let a = t("2024-01-01T00:00:00.000000001Z");
        let b = t("2024-01-01T00:00:00.000000002Z");
        assert!(a < b);
        assert_eq!(a.to_rfc3339(), "2024-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "yesterday",
            "1700000000",
        ] {
            assert!(EventTime::parse_rfc3339(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn extreme_instants_still_have_ordered_keys() {
        let low = t("0000-01-01T00:00:00+23:59");
        let high = t("9999-12-31T23:59:59.999999999-23:59");
        assert!(low.sort_key() < high.sort_key());
        assert_eq!(low.sort_key().len(), SORT_KEY_DIGITS);
        assert_eq!(high.sort_key().len(), SORT_KEY_DIGITS);
    }

    proptest! {
        #[test]
        fn formatting_matches_the_time_crate(nanos in -62_135_596_800_000_000_000i128..253_402_300_799_999_999_999i128) {
            let reference = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap().format(&Rfc3339).unwrap();
            prop_assert_eq!(EventTime(nanos).to_rfc3339(), reference);
        }

        #[test]
        fn sort_key_order_equals_instant_order(a in -300_000_000_000_000_000_000i128..300_000_000_000_000_000_000i128,
                                               b in -300_000_000_000_000_000_000i128..300_000_000_000_000_000_000i128) {
            let (x, y) = (EventTime(a), EventTime(b));
            prop_assert_eq!(x.cmp(&y), x.sort_key().cmp(&y.sort_key()));
        }
    }
}
