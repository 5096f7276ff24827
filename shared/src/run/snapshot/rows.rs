//! What a snapshot holds of each view: one JSON line per row, and how the lines are read back.
//! A view that can be snapshotted implements [`SnapshotRows`] (a scan of its rows as lines) and
//! has a loader in the parent module that writes them back through the view's own rule.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::snapshot::SnapshotError;
use crate::domain::status_view::ViewEntry;
use crate::domain::{SequenceNumber, VersionKey};
use crate::ports::{StatusRow, StatusScanner, StatusViewScanner, StoreError};

/// STATUS's snapshots (`snapshots/status/`).
pub const STATUS: &str = "status";
/// The status view's snapshots (`snapshots/status-view/`).
pub const STATUS_VIEW: &str = "status-view";

/// One page of a view's rows as JSON lines (without the newline).
pub struct RowsPage {
    pub lines: Vec<Vec<u8>>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

/// A view a snapshot can be taken of: its name (the snapshots' folder) and its rows.
#[async_trait]
pub trait SnapshotRows: Send + Sync {
    fn view(&self) -> &'static str;
    /// The page after `start` (a previous page's `next`); the first with `None`.
    async fn page(&self, start: Option<&str>) -> Result<RowsPage, StoreError>;
}

fn line(value: &impl Serialize) -> Vec<u8> {
    // Serialising a struct of strings cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// STATUS's rows, through its scan.
pub struct StatusRows<'a>(pub &'a dyn StatusScanner);

#[async_trait]
impl SnapshotRows for StatusRows<'_> {
    fn view(&self) -> &'static str {
        STATUS
    }

    async fn page(&self, start: Option<&str>) -> Result<RowsPage, StoreError> {
        let page = self.0.scan_page(start).await?;
        Ok(RowsPage {
            lines: page
                .rows
                .into_iter()
                .map(|row| line(&RowLine::from(row)))
                .collect(),
            next: page.next,
        })
    }
}

/// The status view's entries, through its scan. Counters and lists are not kept: loading
/// commits the entries, which counts and lists them again.
pub struct StatusViewEntries<'a>(pub &'a dyn StatusViewScanner);

#[async_trait]
impl SnapshotRows for StatusViewEntries<'_> {
    fn view(&self) -> &'static str {
        STATUS_VIEW
    }

    async fn page(&self, start: Option<&str>) -> Result<RowsPage, StoreError> {
        let page = self.0.entry_page(start).await?;
        Ok(RowsPage {
            lines: page
                .entries
                .into_iter()
                .map(|entry| line(&EntryLine::from(entry)))
                .collect(),
            next: page.next,
        })
    }
}

/// One STATUS row as a line of the snapshot's body.
#[derive(Serialize, Deserialize)]
struct RowLine {
    id: String,
    status: String,
    timestamp: String,
    data: Option<String>,
    received_at: String,
    shard_id: String,
    sequence_number: String,
    version: String,
    updated_at: String,
}

impl From<StatusRow> for RowLine {
    fn from(row: StatusRow) -> Self {
        Self {
            id: row.id,
            status: row.status,
            timestamp: row.timestamp,
            data: row.data,
            received_at: row.received_at,
            shard_id: row.shard_id,
            sequence_number: row.sequence_number.as_str().to_owned(),
            version: row.version.0,
            updated_at: row.updated_at,
        }
    }
}

impl RowLine {
    fn into_row(self) -> Result<StatusRow, String> {
        Ok(StatusRow {
            sequence_number: SequenceNumber::parse(&self.sequence_number)
                .map_err(|e| format!("row {:?}: {e}", self.id))?,
            id: self.id,
            status: self.status,
            timestamp: self.timestamp,
            data: self.data,
            received_at: self.received_at,
            shard_id: self.shard_id,
            version: VersionKey(self.version),
            updated_at: self.updated_at,
        })
    }
}

/// One status view entry as a line of the snapshot's body.
#[derive(Serialize, Deserialize)]
struct EntryLine {
    id: String,
    status: String,
    version: String,
    shard_id: String,
}

impl From<ViewEntry> for EntryLine {
    fn from(entry: ViewEntry) -> Self {
        Self {
            id: entry.id,
            status: entry.status,
            version: entry.version.0,
            shard_id: entry.shard_id,
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, SnapshotError> {
    serde_json::from_str(line).map_err(|e| SnapshotError::Corrupt(e.to_string()))
}

/// A STATUS snapshot's lines as rows.
pub(super) fn status_rows(lines: Vec<String>) -> Result<Vec<StatusRow>, SnapshotError> {
    lines
        .iter()
        .map(|l| {
            parse::<RowLine>(l)?
                .into_row()
                .map_err(SnapshotError::Corrupt)
        })
        .collect()
}

/// A status view snapshot's lines as entries.
pub(super) fn view_entries(lines: Vec<String>) -> Result<Vec<ViewEntry>, SnapshotError> {
    lines
        .iter()
        .map(|l| {
            let entry: EntryLine = parse(l)?;
            Ok(ViewEntry {
                id: entry.id,
                status: entry.status,
                version: VersionKey(entry.version),
                shard_id: entry.shard_id,
            })
        })
        .collect()
}
