//! DEADLETTER: records set aside with their raw bytes and the reason.

use super::*;

/// DEADLETTER: key `shard_id` + `sequence_number`.
#[derive(Clone)]
pub struct DynamoDeadLetterStore {
    client: Client,
    table: String,
}

impl DynamoDeadLetterStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl DeadLetterWriter for DynamoDeadLetterStore {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("shard_id", s(&letter.shard_id))
            .item("sequence_number", s(letter.sequence_number.as_str()))
            .item("partition_key", s(&letter.partition_key))
            .item("raw", AttributeValue::B(Blob::new(letter.raw.to_vec())))
            .item("raw_size", AttributeValue::N(letter.raw_size.to_string()))
            .item("reason", s(&letter.reason))
            .item("dead_lettered_at", s(&letter.dead_lettered_at));
        if let Some(sha256) = &letter.raw_sha256 {
            put = put.item("raw_sha256", s(sha256));
        }
        if let Some(expires_at) = letter.expires_at {
            put = put.item("expires_at", AttributeValue::N(expires_at.to_string()));
        }
        put.send().await.map_err(|e| store_error(classify(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl DeadLetterReader for DynamoDeadLetterStore {
    async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let t = &self.table;
        scan_all(&self.client, t)
            .await?
            .iter()
            .map(|item| {
                let raw = match item.get("raw") {
                    Some(AttributeValue::B(b)) => Bytes::copy_from_slice(b.as_ref()),
                    _ => return Err(corrupt(t, "has no binary attribute raw".into())),
                };
                // Items written before raw_size existed hold the whole record.
                let raw_size = match item.get("raw_size") {
                    Some(AttributeValue::N(n)) => n
                        .parse()
                        .map_err(|_| corrupt(t, format!("raw_size {n} is not a size")))?,
                    _ => raw.len(),
                };
                Ok(DeadLetter {
                    shard_id: get_s(item, "shard_id", t)?,
                    sequence_number: get_sequence(item, t)?,
                    partition_key: get_s(item, "partition_key", t)?,
                    raw,
                    raw_size,
                    raw_sha256: match item.get("raw_sha256") {
                        Some(AttributeValue::S(hex)) => Some(hex.clone()),
                        _ => None,
                    },
                    reason: get_s(item, "reason", t)?,
                    dead_lettered_at: get_s(item, "dead_lettered_at", t)?,
                    expires_at: match item.get("expires_at") {
                        Some(AttributeValue::N(n)) => Some(
                            n.parse()
                                .map_err(|_| corrupt(t, format!("expires_at {n} is not a time")))?,
                        ),
                        _ => None,
                    },
                })
            })
            .collect()
    }
}
