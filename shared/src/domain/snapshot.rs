//! Snapshots of STATUS: its rows and the per-shard positions they reflect, so that a rebuild
//! loads the rows and applies only the records after those positions instead of the whole
//! archive.
//!
//! Why "snapshot + every record after its positions" is STATUS exactly, although the processor
//! keeps writing while the rows are read:
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
//! Where the tail starts in the archive: a record after P arrived at most the longest a record
//! waits to be applied ([`MAX_APPLY_LAG`]) before the snapshot, or after it; its archive object
//! is filed under its batch's first record's hour, at most [`MAX_BATCH_SPAN`] earlier. A rebuild
//! therefore lists the archive from [`SnapshotManifest::archive_from`], and applies, of what it
//! reads, only the records after P.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::archive::hour_prefix;
use super::limits::MAX_BATCH_SPAN;
use super::{EventTime, SequenceNumber};

/// Where snapshots live in the archive's bucket (or directory). Archive keys start with a year,
/// so these sort after every archive object, and a rebuild's walk of the archive stops here.
pub const SNAPSHOT_PREFIX: &str = "snapshots/";

/// The longest a record can wait on the stream before the processor applies it or the mapping
/// gives up on it: the template's ceiling for `MaximumRecordAgeSeconds` (604,800 s).
pub const MAX_APPLY_LAG: Duration = Duration::from_secs(604_800);

/// The snapshot format this code writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// What a snapshot holds, written last (a snapshot without one is incomplete and not listed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format: u32,
    /// The view (`status`).
    pub view: String,
    /// Sorts by time: `20261204T235000Z` and a random suffix.
    pub id: String,
    pub taken_at: String,
    /// Each shard's processor checkpoint when the snapshot was taken (sequence numbers as text).
    pub positions: BTreeMap<String, String>,
    pub rows: u64,
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

    /// The archive key a rebuild from this snapshot lists from (see the module's note).
    pub fn archive_from(&self) -> Result<String, SnapshotError> {
        let taken_at = EventTime::parse_rfc3339(&self.taken_at)
            .ok_or_else(|| SnapshotError::Invalid(format!("taken_at {:?}", self.taken_at)))?;
        Ok(hour_prefix(Some(
            taken_at.saturating_sub(MAX_APPLY_LAG + MAX_BATCH_SPAN),
        )))
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

    fn manifest(taken_at: &str) -> SnapshotManifest {
        SnapshotManifest {
            format: SNAPSHOT_FORMAT,
            view: "status".into(),
            id: "x".into(),
            taken_at: taken_at.into(),
            positions: BTreeMap::from([("shardId-000000000000".into(), "42".into())]),
            rows: 0,
            body_key: String::new(),
            body_bytes: 0,
            body_sha256: String::new(),
        }
    }

    #[test]
    fn the_tail_starts_two_weeks_before_the_snapshot_and_before_every_archive_key() {
        // Seven days a record may wait, seven a batch may span.
        assert_eq!(
            manifest("2026-12-20T05:30:00Z").archive_from().unwrap(),
            "2026/12/06/05"
        );
        // Keys after it include every object of that hour ("2026/12/06/05/shard…").
        assert!("2026/12/06/05/shardId-000000000000/1.jsonl.gz" > "2026/12/06/05");
        // Snapshots sort after every archive key, whose first character is a digit.
        assert!(SnapshotManifest::manifest_key("status", "a").as_str() > "9999/12/31/23");
        assert!(matches!(
            manifest("yesterday").archive_from(),
            Err(SnapshotError::Invalid(_))
        ));
        let mut bad = manifest("2026-12-20T05:30:00Z");
        bad.positions
            .insert("shardId-000000000001".into(), "x".into());
        assert!(bad.positions().is_err());
    }
}
