//! Comparing the status view with what a scan of STATUS says it must be: the counts per status,
//! and every status's list in order. `tidemark verify --status-view` and the tests use it.

use std::collections::BTreeMap;

use crate::domain::status_view::{StatusCount, ViewEntry};
use crate::ports::{StatusScanner, StatusViewReader, StoreError};

/// Page size the lists are walked with: small enough that a test's few ids span pages.
const CHECK_PAGE: usize = 7;

/// Where the view and STATUS disagree; empty when they agree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewDifferences {
    /// (status, what STATUS says, what the view says) for every count that differs.
    pub counts: Vec<(String, i64, i64)>,
    /// Statuses whose list is not STATUS's ids with that status, newest event time first.
    pub lists: Vec<String>,
}

impl ViewDifferences {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.lists.is_empty()
    }
}

/// Reads every STATUS row and the whole view (over `shards`) and lists where they differ.
pub async fn compare_with_status(
    status: &dyn StatusScanner,
    view: &dyn StatusViewReader,
    shards: &[String],
) -> Result<ViewDifferences, StoreError> {
    // status → (version, shard, id) of every row with it.
    let mut expected: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    let mut start: Option<String> = None;
    loop {
        let page = status.scan_page(start.as_deref()).await?;
        for row in page.rows {
            expected
                .entry(row.status)
                .or_default()
                .push((row.version.0, row.shard_id, row.id));
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    let mut differences = ViewDifferences::default();
    let counts: BTreeMap<String, i64> = view
        .counts(shards)
        .await?
        .into_iter()
        .map(|StatusCount { status, count }| (status, count))
        .collect();
    let mut statuses: Vec<&String> = expected.keys().chain(counts.keys()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let want = expected.get(status).map_or(0, Vec::len) as i64;
        let got = counts.get(status).copied().unwrap_or(0);
        if want != got {
            differences.counts.push((status.clone(), want, got));
        }
    }
    for (status, rows) in &mut expected {
        rows.sort_unstable_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
        let want: Vec<&str> = rows.iter().map(|(_, _, id)| id.as_str()).collect();
        let listed = list_all(view, shards, status).await?;
        let got: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
        if want != got {
            differences.lists.push(status.clone());
        }
    }
    Ok(differences)
}

/// Every entry of `status`, page by page.
pub async fn list_all(
    view: &dyn StatusViewReader,
    shards: &[String],
    status: &str,
) -> Result<Vec<ViewEntry>, StoreError> {
    let mut all = Vec::new();
    let mut below = None;
    loop {
        let page = view
            .members(shards, status, below.as_ref(), CHECK_PAGE)
            .await?;
        all.extend(page.entries);
        match page.next {
            Some(next) => below = Some(next),
            None => return Ok(all),
        }
    }
}
