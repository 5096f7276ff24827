//! Snapshots of a view (STATUS, the status view): its rows and the per-shard positions they
//! reflect, so that a rebuild loads the rows and applies only the records after those positions
//! instead of the whole archive.
//!
//! Why "snapshot + every record after its positions" is STATUS exactly, although the processor
//! keeps writing while the rows are read (the status view's argument is the same, with its own
//! consumer's checkpoints and its entries, which follow the same version rule; its counters and
//! lists are not kept but made again from the entries as they are loaded, so they cannot
//! disagree with them, whatever moment of the scan each entry was read at):
//! 1. The positions are the processor's OPLOG checkpoints, read *before* the first row. A
//!    checkpoint at P means every record of that shard up to P was reflected in STATUS when it
//!    was written (guarantee 4), so each row read afterwards reflects them too: a row only ever
//!    moves to a newer version (guarantee 2).
//! 2. A row read later may also reflect records after P (the scan is not a point in time).
//!    Harmless: those records are applied again on top, and applying a record STATUS already
//!    reflects, or an older one, changes nothing (guarantee 3).
//! 3. So, per id, the rebuilt row is the newest of (the snapshot's row, every record after P),
//!    which is the newest of every record: the live row.
//!
//! Where the tail starts in the archive: within a shard, records arrive in sequence order, so a
//! record after P arrived no earlier than the record at P, whose arrival the checkpoint gives
//! (written at `updated_at`, when that record was `lag_ms` old). Its archive object is filed
//! under its batch's first record's hour, at most [`MAX_BATCH_SPAN`] earlier. A rebuild therefore
//! lists the archive from [`SnapshotManifest::archive_from`] (the earliest such hour over the
//! shards), and applies, of what it reads, only the records after P. A shard of the stream
//! without a checkpoint has no such bound: then the whole archive is read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::archive::hour_prefix;
use super::limits::MAX_BATCH_SPAN;
use super::{EventTime, SequenceNumber};

/// Where snapshots live in the archive's bucket (or directory). Archive keys start with a year,
/// so these sort after every archive object, and a rebuild's walk of the archive stops here.
pub const SNAPSHOT_PREFIX: &str = "snapshots/";

/// The snapshot format this code writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// What a snapshot holds, written last (a snapshot without one is incomplete and not listed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format: u32,
    /// The view (`status`, `status-view`).
    pub view: String,
    /// Sorts by time: `20261204T235000Z` and a random suffix.
    pub id: String,
    pub taken_at: String,
    /// Each shard's processor checkpoint when the snapshot was taken (sequence numbers as text).
    pub positions: BTreeMap<String, String>,
    pub rows: u64,
    /// The archive key a rebuild from this snapshot lists from (empty: the whole archive).
    pub archive_from: String,
    /// The rows' object: gzip JSON lines, one row each.
    pub body_key: String,
    pub body_bytes: u64,
    pub body_sha256: String,
}

impl SnapshotManifest {
    pub fn manifest_key(view: &str, id: &str) -> String {
        format!("{SNAPSHOT_PREFIX}{view}/{id}/manifest.json")
    }

    pub fn body_key(view: &str, id: &str) -> String {
        format!("{SNAPSHOT_PREFIX}{view}/{id}/rows.jsonl.gz")
    }

    /// Where a rebuild from a snapshot with these checkpoints lists the archive from (see the
    /// module's note); the whole archive when a shard of the stream (`shards`) has none.
    pub fn archive_from_checkpoints<'c>(
        checkpoints: impl IntoIterator<Item = (&'c str, EventTime)>,
        shards: &[String],
    ) -> String {
        let mut earliest: Option<EventTime> = None;
        let mut covered = Vec::new();
        for (shard, arrival) in checkpoints {
            covered.push(shard);
            earliest = Some(earliest.map_or(arrival, |e| e.min(arrival)));
        }
        match earliest {
            Some(arrival) if shards.iter().all(|s| covered.contains(&s.as_str())) => {
                hour_prefix(Some(arrival.saturating_sub(MAX_BATCH_SPAN)))
            }
            _ => String::new(),
        }
    }

    /// The positions, parsed.
    pub fn positions(&self) -> Result<BTreeMap<String, SequenceNumber>, SnapshotError> {
        self.positions
            .iter()
            .map(|(shard, text)| {
                SequenceNumber::parse(text)
                    .map(|n| (shard.clone(), n))
                    .map_err(|e| SnapshotError::Invalid(format!("position of {shard}: {e}")))
            })
            .collect()
    }
}

/// Why a snapshot cannot be used: the rebuild says so and can fall back to the whole archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is not valid: {0}")]
    Invalid(String),
    #[error("the snapshot's rows are corrupt or truncated: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> EventTime {
        EventTime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn the_tail_starts_a_batch_span_before_the_earliest_checkpointed_record() {
        let shards = ["a".to_owned(), "b".to_owned()];
        // The earliest checkpointed record of any shard, less the 7 days a batch may span.
        let from = SnapshotManifest::archive_from_checkpoints(
            [
                ("a", at("2026-12-20T05:30:00Z")),
                ("b", at("2026-12-18T09:00:00Z")),
            ],
            &shards,
        );
        assert_eq!(from, "2026/12/11/09");
        // Keys after it include every object of that hour ("2026/12/11/09/shard…").
        assert!("2026/12/11/09/shardId-000000000000/1.jsonl.gz" > from.as_str());
        // A shard without a checkpoint: no bound, the whole archive.
        let from = SnapshotManifest::archive_from_checkpoints(
            [("a", at("2026-12-20T05:30:00Z"))],
            &shards,
        );
        assert_eq!(from, "");
        assert_eq!(SnapshotManifest::archive_from_checkpoints([], &[]), "");
        // Snapshots sort after every archive key, whose first character is a digit.
        assert!(SnapshotManifest::manifest_key("status", "a").as_str() > "9999/12/31/23");
    }

    #[test]
    fn positions_that_are_not_sequence_numbers_are_refused() {
        let manifest = SnapshotManifest {
            format: SNAPSHOT_FORMAT,
            view: "status".into(),
            id: "x".into(),
            taken_at: "2026-12-20T05:30:00Z".into(),
            positions: BTreeMap::from([("a".into(), "42".into()), ("b".into(), "x".into())]),
            rows: 0,
            archive_from: String::new(),
            body_key: String::new(),
            body_bytes: 0,
            body_sha256: String::new(),
        };
        assert!(matches!(
            manifest.positions(),
            Err(SnapshotError::Invalid(_))
        ));
    }
}
