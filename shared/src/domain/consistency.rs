//! Read-your-writes: the consistency token a `202` carries, and the rule that decides whether
//! STATUS reflects the write it names.
//!
//! **The rule.** A write (event version `v`, shard `s`, sequence number `n`) is reflected for
//! its id once either
//! 1. the id's STATUS row holds version `v` or newer: the write, or one that beats it, is there;
//! 2. or shard `s`'s OPLOG checkpoint has reached `n`: a checkpoint means every record of the
//!    shard up to it is reflected in STATUS (guarantee 4), which also covers a write that lost to
//!    a newer event or was dead-lettered.
//!
//! Rule 2 holds for whatever shard the token names, so it survives resharding: a token from a
//! parent shard is satisfied once the parent's checkpoint reaches it, even while the id's new
//! writes go to a child. A batch request's token lists, per shard, the highest sequence number
//! it put there, and is reflected once every listed checkpoint has reached its number.
//!
//! **Reading under the rule** (`api/query.rs`): rule 1 is checked on the row just read. When rule
//! 2 decides, the row is read again *after* the checkpoint: the processor writes STATUS before
//! it checkpoints and reads are strongly consistent, so only a row read after the checkpoint is
//! certain to reflect the write. A row read before it may be older.
//!
//! The token is opaque to clients: `t1.` and the URL-safe base64 (no padding) of a few text
//! lines. Its version prefix lets the format change without misreading old tokens.

use std::fmt::Write as _;

use super::limits::{MAX_SEQUENCE_DIGITS, MAX_TOKEN_CHARS};
use super::opaque;
use super::sequence::SequenceNumber;
use super::time::EventTime;
use super::version::{Version, VersionKey};

const PREFIX: &str = "t1.";

/// Shard ids are `shardId-` and 12 digits on Kinesis; the bound leaves room for other streams
/// while keeping a token's size predictable.
const MAX_SHARD_ID_CHARS: usize = 128;

/// What a client's write was: the version that decides STATUS and where it sits on the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsistencyToken {
    /// One accepted event.
    Event { shard_id: String, version: Version },
    /// Every accepted event of a batch request: per shard, the highest sequence number put there.
    Batch {
        positions: Vec<(String, SequenceNumber)>,
    },
}

/// Why a text is not a token this deployment issued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("after is not a consistency token from this API ({0})")]
pub struct TokenError(&'static str);

impl ConsistencyToken {
    /// The token of one accepted event.
    pub fn event(shard_id: &str, event_time: EventTime, sequence: SequenceNumber) -> Self {
        ConsistencyToken::Event {
            shard_id: shard_id.to_owned(),
            version: Version::new(event_time, sequence),
        }
    }

    /// The token covering accepted events at these (shard, sequence number) positions; `None`
    /// when there are none.
    pub fn batch<'a>(
        accepted: impl IntoIterator<Item = (&'a str, &'a SequenceNumber)>,
    ) -> Option<Self> {
        let mut positions: Vec<(String, SequenceNumber)> = Vec::new();
        for (shard, sequence) in accepted {
            match positions.iter_mut().find(|(s, _)| s == shard) {
                Some((_, highest)) if *highest < *sequence => *highest = sequence.clone(),
                Some(_) => {}
                None => positions.push((shard.to_owned(), sequence.clone())),
            }
        }
        (!positions.is_empty()).then_some(ConsistencyToken::Batch { positions })
    }

    /// On every 202, so written with two allocations: the text, then the token.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(160);
        match self {
            ConsistencyToken::Event { shard_id, version } => {
                let _ = write!(
                    text,
                    "e\n{shard_id}\n{}\n{}",
                    version.sequence.as_str(),
                    version.event_time.unix_nanos()
                );
            }
            ConsistencyToken::Batch { positions } => {
                text.push('b');
                for (shard, sequence) in positions {
                    let _ = write!(text, "\n{shard}\n{}", sequence.as_str());
                }
            }
        }
        opaque::encode(PREFIX, &text)
    }

    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let text = opaque::decode(token, PREFIX, MAX_TOKEN_CHARS).map_err(TokenError)?;
        let mut lines = text.split('\n');
        let kind = lines.next().ok_or(TokenError("empty"))?;
        let fields: Vec<&str> = lines.collect();
        match (kind, fields.as_slice()) {
            ("e", [shard, sequence, nanos]) => {
                let nanos: i128 = nanos.parse().map_err(|_| TokenError("bad event time"))?;
                Ok(ConsistencyToken::Event {
                    shard_id: shard_id(shard)?,
                    version: Version::new(
                        EventTime::from_unix_nanos(nanos),
                        sequence_of(sequence)?,
                    ),
                })
            }
            ("b", pairs) if !pairs.is_empty() && pairs.len() % 2 == 0 => {
                let positions = pairs
                    .chunks(2)
                    .map(|pair| Ok((shard_id(pair[0])?, sequence_of(pair[1])?)))
                    .collect::<Result<_, TokenError>>()?;
                Ok(ConsistencyToken::Batch { positions })
            }
            _ => Err(TokenError("unknown kind")),
        }
    }

    /// The shards whose checkpoints rule 2 consults, with the sequence number each must reach.
    pub fn positions(&self) -> Vec<(&str, &SequenceNumber)> {
        match self {
            ConsistencyToken::Event { shard_id, version } => {
                vec![(shard_id.as_str(), &version.sequence)]
            }
            ConsistencyToken::Batch { positions } => {
                positions.iter().map(|(s, n)| (s.as_str(), n)).collect()
            }
        }
    }

    /// Rule 1: the row (its version key) holds this write or a newer one. Never true for a
    /// batch token, which names no version for any one id.
    pub fn reflected_by_row(&self, row_version: Option<&VersionKey>) -> bool {
        match (self, row_version) {
            (ConsistencyToken::Event { version, .. }, Some(row)) => *row >= version.key(),
            _ => false,
        }
    }

    /// Rule 2: every shard the token names has a checkpoint at or past its sequence number.
    /// `checkpoint_of` answers a shard's checkpoint (`None`: no checkpoint yet).
    pub fn reflected_by_checkpoints<'c>(
        &self,
        mut checkpoint_of: impl FnMut(&str) -> Option<&'c SequenceNumber>,
    ) -> bool {
        self.positions()
            .into_iter()
            .all(|(shard, sequence)| checkpoint_of(shard).is_some_and(|at| at >= sequence))
    }
}

fn shard_id(text: &str) -> Result<String, TokenError> {
    if text.is_empty() || text.len() > MAX_SHARD_ID_CHARS {
        return Err(TokenError("bad shard id"));
    }
    Ok(text.to_owned())
}

fn sequence_of(text: &str) -> Result<SequenceNumber, TokenError> {
    if text.len() > MAX_SEQUENCE_DIGITS {
        return Err(TokenError("bad sequence number"));
    }
    SequenceNumber::parse(text).map_err(|_| TokenError("bad sequence number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn seq(n: &str) -> SequenceNumber {
        SequenceNumber::parse(n).unwrap()
    }

    fn at(nanos: i128) -> EventTime {
        EventTime::from_unix_nanos(nanos)
    }

    #[test]
    fn foreign_and_damaged_tokens_are_refused() {
        let good = ConsistencyToken::event("shardId-000000000001", at(5), seq("42")).encode();
        assert!(ConsistencyToken::decode(&good).is_ok());
        for bad in [
            "",
            "t1.",
            "t2.ZQ",
            "eyJhbGciOiJIUzI1NiJ9", // a JWT header, say
            "t1.!!!",
            &format!("t1.{}", URL_SAFE_NO_PAD.encode("e\nshard\nnot-a-number\n5")),
            &format!("t1.{}", URL_SAFE_NO_PAD.encode("e\nshard\n42")),
            &format!("t1.{}", URL_SAFE_NO_PAD.encode("b\nshard")),
            &format!("t1.{}", URL_SAFE_NO_PAD.encode("x\nshard\n42\n5")),
            &format!("{good}{}", "A".repeat(MAX_TOKEN_CHARS)),
        ] {
            assert!(ConsistencyToken::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_batch_token_keeps_the_highest_number_per_shard() {
        let (a1, a9, b3) = (seq("1"), seq("9"), seq("3"));
        let token = ConsistencyToken::batch([("a", &a1), ("b", &b3), ("a", &a9), ("a", &a1)]);
        assert_eq!(
            token,
            Some(ConsistencyToken::Batch {
                positions: vec![("a".into(), seq("9")), ("b".into(), seq("3"))]
            })
        );
        assert_eq!(ConsistencyToken::batch([]), None);
    }

    #[test]
    fn the_rule() {
        let token = ConsistencyToken::event("s", at(100), seq("50"));
        // Rule 1: the row's version, not its sequence number alone, decides.
        assert!(token.reflected_by_row(Some(&Version::new(at(100), seq("50")).key())));
        assert!(token.reflected_by_row(Some(&Version::new(at(101), seq("7")).key())));
        assert!(!token.reflected_by_row(Some(&Version::new(at(99), seq("90")).key())));
        assert!(!token.reflected_by_row(None));
        // Rule 2: the named shard's checkpoint, whatever shard the id maps to now.
        let (behind, there) = (seq("49"), seq("50"));
        assert!(!token.reflected_by_checkpoints(|_| None));
        assert!(!token.reflected_by_checkpoints(|_| Some(&behind)));
        assert!(token.reflected_by_checkpoints(|shard| (shard == "s").then_some(&there)));
        assert!(!token.reflected_by_checkpoints(|shard| (shard == "child").then_some(&there)));
    }

    proptest! {
        #[test]
        fn tokens_round_trip_and_stay_url_safe(
            shard in "[A-Za-z0-9_-]{1,40}",
            sequence in "[1-9][0-9]{0,127}",
            nanos in any::<i64>(),
            others in proptest::collection::vec(("[a-z]{1,12}", "[1-9][0-9]{0,60}"), 1..20),
        ) {
            let event = ConsistencyToken::event(&shard, at(i128::from(nanos)), seq(&sequence));
            let text = event.encode();
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            prop_assert_eq!(ConsistencyToken::decode(&text), Ok(event));
            let numbers: Vec<SequenceNumber> = others.iter().map(|(_, n)| seq(n)).collect();
            let batch = ConsistencyToken::batch(
                others.iter().zip(&numbers).map(|((s, _), n)| (s.as_str(), n)),
            )
            .unwrap();
            prop_assert_eq!(ConsistencyToken::decode(&batch.encode()), Ok(batch));
        }
    }
}
