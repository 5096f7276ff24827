//! Whether a shard is stuck: the consumer has been handed records it could not apply (the shard
//! holds records past its checkpoint), and it has made no progress for a set time. A shard whose
//! batches fail is retried by the mapping (Lambda) or the poller (`serve`) with nothing moving,
//! which the checkpoint alone cannot show: an idle shard's checkpoint does not move either.

use std::time::Duration;

use super::sequence::SequenceNumber;
use super::time::EventTime;

/// What `GET /shards` says of a shard's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHealth {
    /// How long the shard has been behind (records past the checkpoint, not applied).
    pub behind_for: Option<Duration>,
    /// Behind for `stuck_after` or longer.
    pub stuck: bool,
}

/// `checkpoint`: the shard's checkpoint, if any. `behind`: the newest record of a batch the
/// consumer could not apply in full, and since when (cleared whenever the checkpoint moves).
/// A record at or below the checkpoint is no longer behind (a later batch applied it).
pub fn assess(
    checkpoint: Option<&SequenceNumber>,
    behind: Option<(&SequenceNumber, EventTime)>,
    now: EventTime,
    stuck_after: Duration,
) -> ShardHealth {
    let behind_for = behind
        .filter(|(sequence, _)| checkpoint.is_none_or(|checkpoint| *sequence > checkpoint))
        .map(|(_, since)| Duration::from_millis(now.millis_since(since)));
    ShardHealth {
        behind_for,
        stuck: behind_for.is_some_and(|d| d >= stuck_after),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn seq(n: &str) -> SequenceNumber {
        SequenceNumber::parse(n).unwrap()
    }

    fn at(secs: u64) -> EventTime {
        EventTime::parse_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn stuck_means_behind_for_long_enough() {
        let five_minutes = Duration::from_secs(300);
        let assess_at = |checkpoint: Option<&str>, behind: Option<&str>, now| {
            let checkpoint = checkpoint.map(seq);
            let behind = behind.map(seq);
            assess(
                checkpoint.as_ref(),
                behind.as_ref().map(|b| (b, at(0))),
                at(now),
                five_minutes,
            )
        };
        // Never behind: an idle shard is not stuck, however old its checkpoint.
        assert_eq!(
            assess_at(Some("10"), None, 10_000),
            ShardHealth {
                behind_for: None,
                stuck: false
            }
        );
        // Behind, not yet for long; then stuck.
        assert!(!assess_at(Some("10"), Some("20"), 299).stuck);
        assert!(assess_at(Some("10"), Some("20"), 300).stuck);
        // Behind before any checkpoint counts too.
        assert!(assess_at(None, Some("20"), 300).stuck);
        // A checkpoint at or past the record means a later batch applied it.
        assert_eq!(assess_at(Some("20"), Some("20"), 10_000).behind_for, None);
        assert_eq!(assess_at(Some("30"), Some("20"), 10_000).behind_for, None);
    }
}
