//! Comparing two STATUS tables id by id (`tidemark verify`): a rebuilt table against the live one,
//! or a restored backup against either. Two rows are the same view when every attribute the
//! event decided is equal — version, status, timestamp, data, receive time and stream position;
//! `updated_at` says when a processor wrote the row, so it differs between any two runs and is
//! not compared.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::ports::{StatusRow, StatusScanner, StoreError};

/// What is shown of a row in a difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowSummary {
    pub status: String,
    pub timestamp: String,
    pub sequence_number: String,
}

impl RowSummary {
    fn of(row: &StatusRow) -> Self {
        Self {
            status: row.status.clone(),
            timestamp: row.timestamp.clone(),
            sequence_number: row.sequence_number.as_str().to_owned(),
        }
    }
}

/// One id the tables disagree on: absent from one of them, or holding another event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub id: String,
    pub expected: Option<RowSummary>,
    pub actual: Option<RowSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub expected_rows: u64,
    pub actual_rows: u64,
    pub difference_count: u64,
    /// The first differences found (at most the number asked for), by id.
    pub differences: Vec<Difference>,
}

/// The attributes the event decided, hashed: `DefaultHasher::new()` has fixed keys, so both
/// tables' rows hash alike within the run.
fn digest(row: &StatusRow) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &row.version.0,
        &row.status,
        &row.timestamp,
        &row.data,
        &row.received_at,
        &row.shard_id,
        row.sequence_number.as_str(),
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// Compares `actual` against `expected`, keeping the first `keep` differences. Holds one digest
/// and summary per row of `expected` in memory (about 150 bytes a row) while `actual` streams by.
pub async fn verify(
    expected: &dyn StatusScanner,
    actual: &dyn StatusScanner,
    keep: usize,
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut remaining: HashMap<String, (u64, RowSummary)> = HashMap::new();
    let mut start: Option<String> = None;
    loop {
        let page = expected.scan_page(start.as_deref()).await?;
        for row in page.rows {
            report.expected_rows += 1;
            let summary = RowSummary::of(&row);
            remaining.insert(row.id.clone(), (digest(&row), summary));
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    let mut differences = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = actual.scan_page(start.as_deref()).await?;
        for row in page.rows {
            report.actual_rows += 1;
            let difference = match remaining.remove(&row.id) {
                Some((hash, _)) if hash == digest(&row) => continue,
                Some((_, summary)) => Some(summary),
                None => None,
            };
            differences.push(Difference {
                actual: Some(RowSummary::of(&row)),
                expected: difference,
                id: row.id,
            });
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    differences.extend(remaining.into_iter().map(|(id, (_, summary))| Difference {
        id,
        expected: Some(summary),
        actual: None,
    }));
    report.difference_count = differences.len() as u64;
    differences.sort_by(|a, b| a.id.cmp(&b.id));
    differences.truncate(keep);
    report.differences = differences;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::adapters::memory::MemoryStatusStore;
    use crate::domain::{SequenceNumber, VersionKey};
    use crate::ports::StatusWriter;

    fn row(id: &str, status: &str, sequence: &str, updated_at: &str) -> StatusRow {
        StatusRow {
            id: id.into(),
            status: status.into(),
            timestamp: "2024-05-01T12:00:00Z".into(),
            data: None,
            received_at: "2024-05-01T12:00:00Z".into(),
            shard_id: "s".into(),
            sequence_number: SequenceNumber::parse(sequence).unwrap(),
            version: VersionKey(format!("v{sequence}")),
            updated_at: updated_at.into(),
        }
    }

    #[tokio::test]
    async fn every_id_that_differs_is_listed_and_updated_at_is_ignored() {
        let (live, rebuilt) = (MemoryStatusStore::default(), MemoryStatusStore::default());
        // 2,500 equal rows across several pages, written at different times.
        for i in 0..2_500 {
            let id = format!("same-{i:05}");
            live.apply(row(&id, "s", "1", "t1")).await.unwrap();
            rebuilt.apply(row(&id, "s", "1", "t2")).await.unwrap();
        }
        live.apply(row("newer", "shipped", "9", "t1"))
            .await
            .unwrap();
        rebuilt
            .apply(row("newer", "packed", "5", "t2"))
            .await
            .unwrap();
        live.apply(row("only-live", "s", "1", "t1")).await.unwrap();
        rebuilt
            .apply(row("only-rebuilt", "s", "1", "t2"))
            .await
            .unwrap();

        let report = verify(&live, &rebuilt, 10).await.unwrap();
        assert_eq!((report.expected_rows, report.actual_rows), (2_502, 2_502));
        assert_eq!(report.difference_count, 3);
        let ids: Vec<&str> = report.differences.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["newer", "only-live", "only-rebuilt"]);
        assert_eq!(
            report.differences[0].expected.as_ref().unwrap().status,
            "shipped"
        );
        assert_eq!(
            report.differences[0].actual.as_ref().unwrap().status,
            "packed"
        );
        assert_eq!(report.differences[1].actual, None);
        assert_eq!(report.differences[2].expected, None);

        let same = verify(&live, &live, 10).await.unwrap();
        assert_eq!(same.difference_count, 0);
        let capped = verify(&live, &rebuilt, 1).await.unwrap();
        assert_eq!((capped.difference_count, capped.differences.len()), (3, 1));
    }
}
