//! Every entry of the status view, for a snapshot: a strongly consistent Scan that keeps only
//! entry items (`sk` = `e`). List items and counters are not read back: loading a snapshot
//! commits the entries, which writes their list items and counters again.

use async_trait::async_trait;

use super::{rejected, DynamoStatusView, ENTRY_SK};
use crate::adapters::dynamodb::{get_s, s, store_error, Item};
use crate::adapters::sdk::classify;
use crate::ports::{EntryPage, StatusViewScanner, StoreError};

/// Where the next page starts: the Scan's LastEvaluatedKey, as text (`pk`, NUL, `sk`). It may
/// be any kind of item's key, since the filter applies after the read.
fn start_key(start: &str) -> Result<Item, StoreError> {
    let (pk, sk) = start
        .split_once('\0')
        .ok_or_else(|| rejected(format!("{start:?} is not a status view scan position")))?;
    Ok(Item::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
    ]))
}

#[async_trait]
impl StatusViewScanner for DynamoStatusView {
    async fn entry_page(&self, start: Option<&str>) -> Result<EntryPage, StoreError> {
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .filter_expression("sk = :entry")
            .expression_attribute_values(":entry", s(ENTRY_SK))
            .set_exclusive_start_key(start.map(start_key).transpose()?)
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        let entries = output
            .items()
            .iter()
            .map(|item| self.entry_of(item))
            .collect::<Result<_, _>>()?;
        let next = match output.last_evaluated_key() {
            Some(key) if !key.is_empty() => Some(format!(
                "{}\0{}",
                get_s(key, "pk", &self.table)?,
                get_s(key, "sk", &self.table)?
            )),
            _ => None,
        };
        Ok(EntryPage { entries, next })
    }
}
