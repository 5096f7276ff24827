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

/// A consumer of the stream (a view or any other), by the name it is registered under
/// ([`crate::run::registry`]). The set is open: a new consumer is a new constant, nothing to match.
/// Each has its own checkpoint per shard in OPLOG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerName(&'static str);

impl ConsumerName {
    /// The STATUS projection. Its OPLOG rows are keyed by the bare shard id, as they were before
    /// there was a second consumer, so a stack deployed earlier keeps its checkpoints as they are.
    pub const PROCESSOR: ConsumerName = ConsumerName::new("processor");
    /// The archive and HISTORY writer; its rows are keyed `archiver:<shard id>`.
    pub const ARCHIVER: ConsumerName = ConsumerName::new("archiver");
    /// The status view (ids and counts by status); rows keyed `status-view:<shard id>`.
    pub const STATUS_VIEW: ConsumerName = ConsumerName::new("status-view");

    /// A name of 1–32 lowercase ASCII letters, digits and `-`: it is an OPLOG key's prefix
    /// (so never a `:`), a JSON key of `GET /shards` and part of a metric's dimension. Checked
    /// when the constant is compiled: an invalid name is a build error, not a runtime one.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= 32,
            "a consumer name has 1-32 characters"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
                "a consumer name is lowercase letters, digits and '-'"
            );
            i += 1;
        }
        ConsumerName(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    fn is_processor(self) -> bool {
        self == Self::PROCESSOR
    }

    /// The OPLOG key of this consumer's checkpoint of `shard_id`. Kinesis shard ids are
    /// `[a-zA-Z0-9_.-]+`, so a `:` can only be a scope's.
    pub fn oplog_key(self, shard_id: &str) -> String {
        if self.is_processor() {
            shard_id.to_owned()
        } else {
            format!("{}:{shard_id}", self.0)
        }
    }

    /// The shard of an OPLOG key, when the key is this consumer's.
    pub fn shard_of(self, key: &str) -> Option<&str> {
        if self.is_processor() {
            (!key.contains(':')).then_some(key)
        } else {
            key.strip_prefix(self.0)
                .and_then(|rest| rest.strip_prefix(':'))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn each_consumer_reads_back_only_its_own_oplog_keys() {
        use super::ConsumerName;
        const ALL: [ConsumerName; 4] = [
            ConsumerName::PROCESSOR,
            ConsumerName::ARCHIVER,
            ConsumerName::STATUS_VIEW,
            ConsumerName::new("status"),
        ];
        let shard = "shardId-000000000002";
        for consumer in ALL {
            let key = consumer.oplog_key(shard);
            assert_eq!(consumer.shard_of(&key), Some(shard));
            for other in ALL.into_iter().filter(|o| *o != consumer) {
                assert_eq!(other.shard_of(&key), None, "{other:?} reads {key}");
            }
        }
        assert_eq!(
            ConsumerName::PROCESSOR.oplog_key(shard),
            shard,
            "deployed stacks keep their rows"
        );
        assert_eq!(ConsumerName::ARCHIVER.shard_of("archiverX:s"), None);
    }
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
