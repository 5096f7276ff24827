//! HISTORY: every event per id, written in BatchWriteItem calls, read newest first.

use super::status::row_of;
use super::*;

/// HISTORY: key `id` + `version` (the version key, so an id's entries sort oldest to newest).
/// Written with unconditional BatchWriteItem puts: the key makes a redelivered batch rewrite the
/// same items. `expires_at` (Unix seconds) is the table's TTL attribute when a TTL is set.
#[derive(Clone)]
pub struct DynamoHistoryStore {
    client: Client,
    table: String,
    ttl: Option<std::time::Duration>,
}

/// BatchWriteItem takes at most 25 items per call.
const BATCH_WRITE_ITEMS: usize = 25;
/// Items DynamoDB leaves unprocessed (throttled) are sent again this many times, with a pause
/// doubling from 20 ms; past that the batch fails and the mapping retries it.
const UNPROCESSED_ATTEMPTS: u32 = 8;

impl DynamoHistoryStore {
    pub fn new(client: Client, table: impl Into<String>, ttl: Option<std::time::Duration>) -> Self {
        Self {
            client,
            table: table.into(),
            ttl,
        }
    }

    fn item(&self, entry: HistoryEntry, expires_at: Option<i64>) -> Item {
        let mut item = Item::from([
            ("id".to_owned(), AttributeValue::S(entry.id)),
            ("version".to_owned(), AttributeValue::S(entry.version.0)),
            ("status".to_owned(), AttributeValue::S(entry.status)),
            ("timestamp".to_owned(), AttributeValue::S(entry.timestamp)),
            (
                "received_at".to_owned(),
                AttributeValue::S(entry.received_at),
            ),
            ("shard_id".to_owned(), AttributeValue::S(entry.shard_id)),
            (
                "sequence_number".to_owned(),
                AttributeValue::S(entry.sequence_number.as_str().to_owned()),
            ),
            (
                "archived_at".to_owned(),
                AttributeValue::S(entry.updated_at),
            ),
        ]);
        if let Some(data) = entry.data {
            item.insert("data".to_owned(), AttributeValue::S(data));
        }
        if let Some(expires_at) = expires_at {
            item.insert("expires_at".to_owned(), number(expires_at));
        }
        item
    }

    /// One BatchWriteItem call and its unprocessed items, until all are written.
    async fn write_chunk(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let requests = items
            .into_iter()
            .map(|item| {
                let put = aws_sdk_dynamodb::types::PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Rejected(e.to_string()))?;
                Ok(aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(put)
                    .build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut pending = HashMap::from([(self.table.clone(), requests)]);
        let mut pause = std::time::Duration::from_millis(20);
        for _ in 0..UNPROCESSED_ATTEMPTS {
            let output = self
                .client
                .batch_write_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| store_error(classify(&e)))?;
            match output.unprocessed_items {
                Some(unprocessed) if unprocessed.values().any(|v| !v.is_empty()) => {
                    pending = unprocessed;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                _ => return Ok(()),
            }
        }
        Err(StoreError::Throttled(format!(
            "{}: items still unprocessed after {UNPROCESSED_ATTEMPTS} BatchWriteItem calls",
            self.table
        )))
    }
}

#[async_trait]
impl HistoryWriter for DynamoHistoryStore {
    async fn put_many(&self, entries: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError> {
        let expires_at = self.ttl.map(|ttl| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            i64::try_from((now + ttl).as_secs()).unwrap_or(i64::MAX)
        });
        let mut write = HistoryWrite::default();
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<HistoryEntry> = entries.by_ref().take(BATCH_WRITE_ITEMS).collect();
            let keys: Vec<(String, SequenceNumber)> = chunk
                .iter()
                .map(|e| (e.id.clone(), e.sequence_number.clone()))
                .collect();
            let items: Vec<Item> = chunk
                .iter()
                .cloned()
                .map(|e| self.item(e, expires_at))
                .collect();
            match self.write_chunk(items).await {
                Ok(()) => write.written += keys.len(),
                // One item over 400 KB refuses the whole call: write them one by one, and set
                // aside the ones refused for good.
                Err(StoreError::ItemRejected(_)) => {
                    for (entry, key) in chunk.into_iter().zip(keys) {
                        let put = self
                            .client
                            .put_item()
                            .table_name(&self.table)
                            .set_item(Some(self.item(entry, expires_at)))
                            .send()
                            .await
                            .map_err(|e| store_error(classify(&e)));
                        match put {
                            Ok(_) => write.written += 1,
                            Err(StoreError::ItemRejected(_)) => write.refused.push(key),
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(write)
    }
}

#[async_trait]
impl HistoryReader for DynamoHistoryStore {
    /// One Query, newest first, strongly consistent; one item more than asked tells whether
    /// there is a next page.
    async fn page(
        &self,
        id: &str,
        before: Option<&VersionKey>,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .scan_index_forward(false)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .expression_attribute_names("#id", "id")
            .expression_attribute_values(":id", s(id));
        query = match before {
            Some(before) => query
                .key_condition_expression("#id = :id AND #version < :before")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":before", s(before.as_str())),
            None => query.key_condition_expression("#id = :id"),
        };
        let output = query.send().await.map_err(|e| store_error(classify(&e)))?;
        let entries = output
            .items()
            .iter()
            .map(|item| row_of(item, &self.table))
            .collect::<Result<Vec<_>, _>>()?;
        // A Query page also stops at 1 MB: then there is more even with fewer items.
        Ok(HistoryPage::of(
            entries,
            limit,
            output.last_evaluated_key().is_some(),
        ))
    }
}
