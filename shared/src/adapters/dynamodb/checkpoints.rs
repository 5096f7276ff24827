//! OPLOG: checkpoints that never move backwards, and the record of a shard falling behind.

use super::*;

/// OPLOG: key `shard_id`. `sequence_key` (the 128-digit padded form) is what the condition
/// compares, since DynamoDB numbers hold only 38 digits. `behind_*` say a batch could not be
/// applied in full since the checkpoint last moved; a row can hold them before any checkpoint.
#[derive(Clone)]
pub struct DynamoCheckpointStore {
    client: Client,
    table: String,
}

impl DynamoCheckpointStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The row's checkpoint; `None` for a shard that is behind before its first checkpoint.
    fn checkpoint(&self, item: &Item) -> Result<Option<Checkpoint>, StoreError> {
        if !item.contains_key("sequence_number") {
            return Ok(None);
        }
        let t = &self.table;
        Ok(Some(Checkpoint {
            shard_id: get_s(item, "shard_id", t)?,
            sequence_number: get_sequence(item, t)?,
            updated_at: get_s(item, "updated_at", t)?,
            records_applied: get_n(item, "records_applied", t)?,
            lag_ms: get_n(item, "lag_ms", t)?,
            mirrored_into: get_optional_s(item, "mirrored_into", t)?,
        }))
    }

    fn progress_row(&self, item: &Item) -> Result<ShardProgress, StoreError> {
        let t = &self.table;
        let behind = match get_optional_s(item, "behind_sequence_number", t)? {
            None => None,
            Some(text) => Some(Behind {
                shard_id: get_s(item, "shard_id", t)?,
                sequence_number: SequenceNumber::parse(&text)
                    .map_err(|e| corrupt(t, format!("has behind_sequence_number {e}")))?,
                since: get_s(item, "behind_since", t)?,
                at: get_s(item, "behind_at", t)?,
            }),
        };
        Ok(ShardProgress {
            shard_id: get_s(item, "shard_id", t)?,
            checkpoint: self.checkpoint(item)?,
            behind,
        })
    }
}

#[async_trait]
impl CheckpointWriter for DynamoCheckpointStore {
    async fn advance(&self, checkpoint: &Checkpoint) -> Result<AdvanceOutcome, StoreError> {
        // `mirrored_into` says where this checkpoint's batches went besides STATUS: set with it,
        // removed without it, so the row always describes its latest checkpoint.
        let (set_mirror, remove_mirror) = match &checkpoint.mirrored_into {
            Some(_) => (", mirrored_into = :mirrored_into", ""),
            None => ("", ", mirrored_into"),
        };
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("shard_id", s(&checkpoint.shard_id))
            // Progress clears `behind_*`: the next batch that falls behind starts a new "since".
            .update_expression(format!(
                "SET #sequence_number = :sequence_number, #sequence_key = :sequence_key, \
                 #updated_at = :updated_at, #lag_ms = :lag_ms{set_mirror} \
                 ADD #records_applied :records_applied \
                 REMOVE behind_sequence_number, behind_since, behind_at{remove_mirror}",
            ))
            // On the checkpoint's own attribute: the row may exist already, holding only `behind_*`.
            .condition_expression(
                "attribute_not_exists(#sequence_key) OR #sequence_key < :sequence_key",
            )
            .expression_attribute_names("#sequence_number", "sequence_number")
            .expression_attribute_names("#sequence_key", "sequence_key")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#lag_ms", "lag_ms")
            .expression_attribute_names("#records_applied", "records_applied")
            .expression_attribute_values(":sequence_number", s(checkpoint.sequence_number.as_str()))
            .expression_attribute_values(":sequence_key", s(&checkpoint.sequence_number.sort_key()))
            .expression_attribute_values(":updated_at", s(&checkpoint.updated_at))
            .expression_attribute_values(
                ":lag_ms",
                AttributeValue::N(checkpoint.lag_ms.to_string()),
            )
            .expression_attribute_values(
                ":records_applied",
                AttributeValue::N(checkpoint.records_applied.to_string()),
            );
        let result = match &checkpoint.mirrored_into {
            Some(mirror) => request.expression_attribute_values(":mirrored_into", s(mirror)),
            None => request,
        }
        .send()
        .await;
        match result {
            Ok(_) => Ok(AdvanceOutcome::Advanced),
            Err(e) if is_condition_failure(&e) => Ok(AdvanceOutcome::AlreadyPast),
            Err(e) => Err(store_error(classify(&e))),
        }
    }

    async fn note_behind(&self, behind: &Behind) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("shard_id", s(&behind.shard_id))
            .update_expression(
                "SET behind_sequence_number = :sequence_number, behind_at = :at, \
                 behind_since = if_not_exists(behind_since, :since)",
            )
            .expression_attribute_values(":sequence_number", s(behind.sequence_number.as_str()))
            .expression_attribute_values(":at", s(&behind.at))
            .expression_attribute_values(":since", s(&behind.since))
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl CheckpointReader for DynamoCheckpointStore {
    async fn get(&self, shard_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("shard_id", s(shard_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        Ok(output
            .item()
            .map(|item| self.checkpoint(item))
            .transpose()?
            .flatten())
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self
            .progress()
            .await?
            .into_iter()
            .filter_map(|row| row.checkpoint)
            .collect())
    }

    async fn progress(&self) -> Result<Vec<ShardProgress>, StoreError> {
        let items = scan_all(&self.client, &self.table).await?;
        let mut rows = items
            .iter()
            .map(|item| self.progress_row(item))
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(rows)
    }
}
