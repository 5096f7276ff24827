//! HISTORY on a stack that keeps none: every write and read fails naming why.

use crate::ports::*;

/// HISTORY on a stack that keeps none (`HistoryEnabled=false`).
pub(super) struct NoHistory;

fn no_history() -> StoreError {
    StoreError::Rejected(format!(
        "this stack keeps no per-id history ({} is {})",
        crate::config::HISTORY_TABLE_VAR,
        crate::config::HISTORY_OFF
    ))
}

#[async_trait::async_trait]
impl HistoryWriter for NoHistory {
    async fn put_many(&self, _: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError> {
        Err(no_history())
    }
}

#[async_trait::async_trait]
impl HistoryReader for NoHistory {
    async fn page(
        &self,
        _: &str,
        _: Option<&crate::domain::VersionKey>,
        _: usize,
    ) -> Result<HistoryPage, StoreError> {
        Err(no_history())
    }
}
