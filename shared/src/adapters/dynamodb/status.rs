//! STATUS: one conditional UpdateItem per id, a strongly consistent GetItem, paged Scans.

use super::*;

/// The STATUS row's update, written out once rather than assembled per write. A row without
/// `data` removes it, so a newer event without data never keeps an older event's.
macro_rules! set_row {
    () => {
        "SET #status = :status, #timestamp = :timestamp, #received_at = :received_at, \
         #shard_id = :shard_id, #sequence_number = :sequence_number, #version = :version, \
         #updated_at = :updated_at"
    };
}
const SET_ROW_WITH_DATA: &str = concat!(set_row!(), ", #data = :data");
const SET_ROW_WITHOUT_DATA: &str = concat!(set_row!(), " REMOVE #data");

/// STATUS: key `id`.
#[derive(Clone)]
pub struct DynamoStatusStore {
    client: Client,
    table: String,
}

impl DynamoStatusStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl StatusWriter for DynamoStatusStore {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(row.id))
            .condition_expression("attribute_not_exists(#id) OR #version < :version")
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#timestamp", "timestamp")
            .expression_attribute_names("#received_at", "received_at")
            .expression_attribute_names("#shard_id", "shard_id")
            .expression_attribute_names("#sequence_number", "sequence_number")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#data", "data")
            .expression_attribute_values(":status", AttributeValue::S(row.status))
            .expression_attribute_values(":timestamp", AttributeValue::S(row.timestamp))
            .expression_attribute_values(":received_at", AttributeValue::S(row.received_at))
            .expression_attribute_values(":shard_id", AttributeValue::S(row.shard_id))
            .expression_attribute_values(
                ":sequence_number",
                AttributeValue::S(row.sequence_number.as_str().to_owned()),
            )
            .expression_attribute_values(":version", AttributeValue::S(row.version.0))
            .expression_attribute_values(":updated_at", AttributeValue::S(row.updated_at));
        // A newer event without data must not keep the older event's data.
        let expression = match row.data {
            Some(data) => {
                request = request.expression_attribute_values(":data", AttributeValue::S(data));
                SET_ROW_WITH_DATA
            }
            None => SET_ROW_WITHOUT_DATA,
        };
        match request.update_expression(expression).send().await {
            Ok(_) => Ok(ApplyOutcome::Applied),
            Err(e) if is_condition_failure(&e) => Ok(ApplyOutcome::Stale),
            Err(e) => Err(store_error(classify(&e))),
        }
    }
}

impl DynamoStatusStore {
    fn row(&self, item: &Item) -> Result<StatusRow, StoreError> {
        row_of(item, &self.table)
    }
}

/// A STATUS item as its table's stream shows it (an old or new image): the same reader as the
/// table's own, so a row and its change can never be read two ways.
pub fn status_row_of_image(item: &Item) -> Result<StatusRow, StoreError> {
    row_of(item, "STATUS stream")
}

/// A STATUS row, or a HISTORY entry (the same attributes; HISTORY calls `updated_at`
/// `archived_at`).
pub(super) fn row_of(item: &Item, t: &str) -> Result<StatusRow, StoreError> {
    {
        Ok(StatusRow {
            id: get_s(item, "id", t)?,
            status: get_s(item, "status", t)?,
            timestamp: get_s(item, "timestamp", t)?,
            data: get_optional_s(item, "data", t)?,
            received_at: get_s(item, "received_at", t)?,
            shard_id: get_s(item, "shard_id", t)?,
            sequence_number: get_sequence(item, t)?,
            version: VersionKey(get_s(item, "version", t)?),
            updated_at: match item.get("archived_at") {
                Some(_) => get_s(item, "archived_at", t)?,
                None => get_s(item, "updated_at", t)?,
            },
        })
    }
}

#[async_trait]
impl StatusScanner for DynamoStatusStore {
    /// Consistent pages of up to 1 MB, as Scan returns them.
    async fn scan_page(&self, start: Option<&str>) -> Result<StatusPage, StoreError> {
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .set_exclusive_start_key(start.map(|id| HashMap::from([("id".to_owned(), s(id))])))
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        let rows = output
            .items()
            .iter()
            .map(|item| self.row(item))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match output.last_evaluated_key().and_then(|key| key.get("id")) {
            Some(AttributeValue::S(id)) => Some(id.clone()),
            _ => None,
        };
        Ok(StatusPage { rows, next })
    }
}

#[async_trait]
impl StatusReader for DynamoStatusStore {
    /// Strongly consistent, so a reader never sees an id go backwards between two reads.
    async fn get(&self, id: &str) -> Result<Option<StatusRow>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        output.item().map(|item| self.row(item)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The update expressions written out once are the ones the row's attributes need.
    #[test]
    fn row_updates_set_every_attribute_and_handle_data() {
        let set = "SET #status = :status, #timestamp = :timestamp, #received_at = :received_at, \
                   #shard_id = :shard_id, #sequence_number = :sequence_number, #version = :version, \
                   #updated_at = :updated_at";
        assert_eq!(SET_ROW_WITH_DATA, format!("{set}, #data = :data"));
        assert_eq!(SET_ROW_WITHOUT_DATA, format!("{set} REMOVE #data"));
    }
}
