//! STATUS, OPLOG, DEADLETTER and the idempotency keys on DynamoDB. Every STATUS and OPLOG write is conditional, and a
//! failed condition is the normal "stale" outcome, never an error.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use bytes::Bytes;

use super::sdk::{classify, Failure};
use crate::domain::idempotency::{IdempotencyRecord, KeyState};
use crate::domain::{EventTime, SequenceNumber, VersionKey};
use crate::ports::*;

mod status_view;
pub use status_view::DynamoStatusView;

type Item = HashMap<String, AttributeValue>;

/// The broad mapping every operation shares, by error code: `ValidationException` has no typed
/// variant in the SDK (it is not in the service model), and the others mean the same whichever
/// operation raised them. Outcomes that decide behaviour (a failed condition) are checked with
/// the SDK's typed checks instead, per operation.
///
/// A `ValidationException` is about this item only when DynamoDB says the item is too large
/// ("Item size has exceeded the maximum allowed size", "Item size to update has exceeded …");
/// every other one (a key that does not match the table's schema, a bad expression) would refuse
/// every item alike, so it is a configuration error and must not turn records into dead letters.
fn store_error(failure: Failure) -> StoreError {
    match failure {
        Failure::Throttled(m) => StoreError::Throttled(m),
        Failure::Service { code, message } => match code.as_str() {
            "ValidationException" if is_item_size_refusal(&message) => {
                StoreError::ItemRejected(message)
            }
            "ValidationException"
            | "ResourceNotFoundException"
            | "ItemCollectionSizeLimitExceededException" => StoreError::Rejected(message),
            _ => StoreError::Unavailable(message),
        },
        Failure::Unreachable(m) => StoreError::Unavailable(m),
    }
}

fn is_item_size_refusal(message: &str) -> bool {
    message.contains("Item size") && message.contains("exceeded the maximum allowed size")
}

/// A failed condition on UpdateItem is the normal "already as new" answer, not an error.
fn is_condition_failure(error: &SdkError<UpdateItemError, HttpResponse>) -> bool {
    error
        .as_service_error()
        .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
}

fn corrupt(table: &str, what: String) -> StoreError {
    StoreError::Rejected(format!("a row of {table} {what}"))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn get_s(item: &Item, name: &str, table: &str) -> Result<String, StoreError> {
    get_optional_s(item, name, table)?
        .ok_or_else(|| corrupt(table, format!("has no string attribute {name}")))
}

/// An attribute that may be absent (`data`); present with another type is an error, not `None`.
fn get_optional_s(item: &Item, name: &str, table: &str) -> Result<Option<String>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(_) => Err(corrupt(table, format!("has a non-string {name}"))),
    }
}

fn get_n(item: &Item, name: &str, table: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| corrupt(table, format!("has {name} = {v}, not a count"))),
        _ => Err(corrupt(table, format!("has no number attribute {name}"))),
    }
}

fn get_sequence(item: &Item, table: &str) -> Result<SequenceNumber, StoreError> {
    let text = get_s(item, "sequence_number", table)?;
    SequenceNumber::parse(&text).map_err(|e| corrupt(table, format!("has {e}")))
}

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

/// A STATUS row, or a HISTORY entry (the same attributes; HISTORY calls `updated_at`
/// `archived_at`).
fn row_of(item: &Item, t: &str) -> Result<StatusRow, StoreError> {
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("shard_id", s(&checkpoint.shard_id))
            // Progress clears `behind_*`: the next batch that falls behind starts a new "since".
            .update_expression(
                "SET #sequence_number = :sequence_number, #sequence_key = :sequence_key, \
                 #updated_at = :updated_at, #lag_ms = :lag_ms ADD #records_applied :records_applied \
                 REMOVE behind_sequence_number, behind_since, behind_at",
            )
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
            .expression_attribute_values(":lag_ms", AttributeValue::N(checkpoint.lag_ms.to_string()))
            .expression_attribute_values(
                ":records_applied",
                AttributeValue::N(checkpoint.records_applied.to_string()),
            )
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

/// Reads a whole (small) table: OPLOG has one row per shard; DEADLETTER is for inspection.
async fn scan_all(client: &Client, table: &str) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let output = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        items.extend(output.items().iter().cloned());
        match output.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(items),
        }
    }
}

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

/// Idempotency keys: key `key`. Times are Unix nanoseconds (`received_at_ns`, `default_time_ns`)
/// so a takeover restores them exactly; `expires_at` (Unix seconds) is the table's TTL attribute,
/// and the claim's condition treats an expired record as free before TTL gets to deleting it.
#[derive(Clone)]
pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
}

const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";
/// A claim that finds the key held but the holder gone by the time it reads it tries again;
/// twice more is plenty, since a holder disappears only by release or expiry.
const CLAIM_ATTEMPTS: usize = 3;

impl DynamoIdempotencyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn record(&self, item: &Item) -> Result<IdempotencyRecord, StoreError> {
        let t = &self.table;
        let nanos = |name: &str| -> Result<EventTime, StoreError> {
            match item.get(name) {
                Some(AttributeValue::N(n)) => n
                    .parse::<i128>()
                    .map(EventTime::from_unix_nanos)
                    .map_err(|_| corrupt(t, format!("has {name} = {n}, not a time"))),
                _ => Err(corrupt(t, format!("has no number attribute {name}"))),
            }
        };
        let int = |name: &str| -> Result<i64, StoreError> {
            match item.get(name) {
                Some(AttributeValue::N(n)) => n
                    .parse::<i64>()
                    .map_err(|_| corrupt(t, format!("has {name} = {n}, not a time"))),
                _ => Err(corrupt(t, format!("has no number attribute {name}"))),
            }
        };
        let state = match get_s(item, "state", t)?.as_str() {
            IN_PROGRESS => KeyState::InProgress {
                lease_until_ms: int("lease_until_ms")?,
            },
            COMPLETED => KeyState::Completed {
                answer: get_s(item, "answer", t)?,
            },
            other => return Err(corrupt(t, format!("has the unknown state {other:?}"))),
        };
        Ok(IdempotencyRecord {
            key: get_s(item, "key", t)?,
            fingerprint: get_s(item, "fingerprint", t)?,
            received_at: nanos("received_at_ns")?,
            default_time: nanos("default_time_ns")?,
            state,
            expires_at: int("expires_at")?,
        })
    }

    async fn read(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(classify(&e)))?;
        output.item().map(|item| self.record(item)).transpose()
    }

    /// An update of an in-progress key held under `lease_ms`; false when it is not (any more).
    async fn update_held(
        &self,
        key: &str,
        lease_ms: i64,
        update: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", s(key))
            .update_expression(update)
            .condition_expression("#state = :in_progress AND #lease = :held_lease")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#lease", "lease_until_ms")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":held_lease", number(lease_ms));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(store_error(classify(&e))),
        }
    }
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: EventTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let KeyState::InProgress { lease_until_ms } = record.state else {
            return Err(StoreError::Rejected(
                "an idempotency key is claimed in progress, never completed".into(),
            ));
        };
        for _ in 0..CLAIM_ATTEMPTS {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("key", s(&record.key))
                .item("fingerprint", s(&record.fingerprint))
                .item("received_at_ns", number(record.received_at.unix_nanos()))
                .item("default_time_ns", number(record.default_time.unix_nanos()))
                .item("state", s(IN_PROGRESS))
                .item("lease_until_ms", number(lease_until_ms))
                .item("expires_at", number(record.expires_at))
                .condition_expression("attribute_not_exists(#key) OR #expires_at <= :now")
                .expression_attribute_names("#key", "key")
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_values(":now", number(now.unix_millis().div_euclid(1000)))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(None),
                Err(error) => error,
            };
            let Some(PutItemError::ConditionalCheckFailedException(failed)) =
                error.as_service_error()
            else {
                return Err(store_error(classify(&error)));
            };
            // The holder comes with the failure; an emulator that leaves it out is read instead.
            let holder = match failed.item() {
                Some(item) => Some(self.record(item)?),
                None => self.read(&record.key).await?,
            };
            if let Some(holder) = holder {
                return Ok(Some(holder));
            }
        }
        Err(StoreError::Unavailable(format!(
            "the idempotency key {} changed hands {CLAIM_ATTEMPTS} times while being claimed",
            record.key
        )))
    }

    async fn take_over(
        &self,
        key: &str,
        expected_lease_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.update_held(
            key,
            expected_lease_ms,
            "SET #lease = :lease",
            vec![(":lease", number(lease_until_ms))],
        )
        .await
    }

    async fn complete(&self, key: &str, lease_ms: i64, answer: &str) -> Result<bool, StoreError> {
        self.update_held(
            key,
            lease_ms,
            "SET #state = :completed, answer = :answer REMOVE #lease",
            vec![(":completed", s(COMPLETED)), (":answer", s(answer))],
        )
        .await
    }

    async fn release(&self, key: &str, lease_ms: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("key", s(key))
            .condition_expression("#state = :in_progress AND #lease = :held_lease")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#lease", "lease_until_ms")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":held_lease", number(lease_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
            {
                Ok(false)
            }
            Err(e) => Err(store_error(classify(&e))),
        }
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

    /// Only an item's own size makes a record poison; other validation errors are configuration.
    #[test]
    fn only_item_size_refusals_are_about_the_item() {
        let validation = |message: &str| {
            store_error(Failure::Service {
                code: "ValidationException".into(),
                message: message.into(),
            })
        };
        for message in [
            "Item size has exceeded the maximum allowed size",
            "Item size to update has exceeded the maximum allowed size",
        ] {
            assert!(
                matches!(validation(message), StoreError::ItemRejected(_)),
                "{message}"
            );
        }
        for message in [
            "The provided key element does not match the schema",
            "Invalid UpdateExpression: Syntax error",
        ] {
            assert!(
                matches!(validation(message), StoreError::Rejected(_)),
                "{message}"
            );
        }
        let missing = store_error(Failure::Service {
            code: "ResourceNotFoundException".into(),
            message: "Requested resource not found".into(),
        });
        assert!(matches!(missing, StoreError::Rejected(_)));
    }
}
