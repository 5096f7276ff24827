//! The status view in DynamoDB: one table, key `pk` + `sk`, three kinds of item
//! ([`crate::domain::status_view`] has the rule):
//! - entry `e#<id>` / `e`: the id's status, version and shard;
//! - list item `m#<shard>#<status>` / `<version>`: one per entry, so a status's ids are a
//!   strongly consistent Query per shard, newest first (a GSI would be eventually consistent,
//!   and a read-your-writes token could not promise the list);
//! - counter `c#<shard>` / `<status>`: `count`, the entries in that bucket.
//!
//! A commit is one TransactWriteItems: the entries (each conditional on the version that was
//! read), the list items moved, the counters added to. Write units per changed id: 2 × (entry +
//! new list item + old list item) = 6, plus 2 per counter per commit; a redelivered or older
//! event costs one strongly consistent read (BatchGetItem), nothing written.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::{corrupt, get_s, s, store_error, Item};
use crate::adapters::sdk::classify;
use crate::domain::status_view::{
    counter_deltas, sum_counts, CounterKey, ListPosition, StatusCount, ViewChange, ViewEntry,
};
use crate::domain::VersionKey;
use crate::ports::{MemberPage, StatusViewReader, StatusViewWriter, StoreError, ViewCommit};

#[derive(Clone)]
pub struct DynamoStatusView {
    client: Client,
    table: String,
}

/// BatchGetItem takes at most 100 keys per call.
const BATCH_GET_KEYS: usize = 100;
/// Keys DynamoDB leaves unprocessed (throttled) are asked again this many times, with a pause
/// doubling from 20 ms; past that the read fails and the batch is retried by the mapping.
const UNPROCESSED_ATTEMPTS: u32 = 8;
const ENTRY_SK: &str = "e";

mod scan;

fn entry_pk(id: &str) -> String {
    format!("e#{id}")
}

fn list_pk(shard_id: &str, status: &str) -> String {
    format!("m#{shard_id}#{status}")
}

fn counter_pk(shard_id: &str) -> String {
    format!("c#{shard_id}")
}

fn key(pk: String, sk: &str) -> Item {
    Item::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(sk))])
}

fn rejected(e: impl std::fmt::Display) -> StoreError {
    StoreError::Rejected(e.to_string())
}

impl DynamoStatusView {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn entry_of(&self, item: &Item) -> Result<ViewEntry, StoreError> {
        Ok(ViewEntry {
            id: get_s(item, "id", &self.table)?,
            status: get_s(item, "status", &self.table)?,
            version: VersionKey(get_s(item, "version", &self.table)?),
            shard_id: get_s(item, "shard_id", &self.table)?,
        })
    }

    fn writes(&self, changes: &[ViewChange]) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = Vec::new();
        for change in changes {
            let after = &change.after;
            let mut entry = Put::builder()
                .table_name(&self.table)
                .set_item(Some(key(entry_pk(&after.id), ENTRY_SK)))
                .item("id", s(&after.id))
                .item("status", s(&after.status))
                .item("version", s(after.version.as_str()))
                .item("shard_id", s(&after.shard_id));
            entry = match &change.before {
                None => entry.condition_expression("attribute_not_exists(pk)"),
                Some(before) => entry
                    .condition_expression("#version = :read")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":read", s(before.version.as_str())),
            };
            items.push(
                TransactWriteItem::builder()
                    .put(entry.build().map_err(rejected)?)
                    .build(),
            );
            if let Some(before) = &change.before {
                let old = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(
                        list_pk(&before.shard_id, &before.status),
                        before.version.as_str(),
                    )))
                    .build()
                    .map_err(rejected)?;
                items.push(TransactWriteItem::builder().delete(old).build());
            }
            let listed = Put::builder()
                .table_name(&self.table)
                .set_item(Some(key(
                    list_pk(&after.shard_id, &after.status),
                    after.version.as_str(),
                )))
                .item("id", s(&after.id))
                .build()
                .map_err(rejected)?;
            items.push(TransactWriteItem::builder().put(listed).build());
        }
        for (counter, delta) in counter_deltas(changes) {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(counter_pk(&counter.shard_id), &counter.status)))
                .update_expression("ADD #count :delta")
                .expression_attribute_names("#count", "count")
                .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
                .build()
                .map_err(rejected)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(items)
    }

    /// Every item of one partition, in key order (all pages).
    async fn query_all(&self, pk: String) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
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

    /// Up to `limit` list items of one bucket below `below`, newest first.
    async fn list_page(
        &self,
        shard_id: &str,
        status: &str,
        below: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<ViewEntry>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .expression_attribute_values(":pk", s(&list_pk(shard_id, status)));
        query = match below {
            // (version, shard) below the position: a smaller version, or an equal one in a
            // shard that sorts first.
            Some(p) if shard_id < p.shard_id.as_str() => query
                .key_condition_expression("pk = :pk AND sk <= :below")
                .expression_attribute_values(":below", s(p.version.as_str())),
            Some(p) => query
                .key_condition_expression("pk = :pk AND sk < :below")
                .expression_attribute_values(":below", s(p.version.as_str())),
            None => query.key_condition_expression("pk = :pk"),
        };
        let output = query.send().await.map_err(|e| store_error(classify(&e)))?;
        output
            .items()
            .iter()
            .map(|item| {
                Ok(ViewEntry {
                    id: get_s(item, "id", &self.table)?,
                    status: status.to_owned(),
                    version: VersionKey(get_s(item, "sk", &self.table)?),
                    shard_id: shard_id.to_owned(),
                })
            })
            .collect()
    }
}

/// A cancelled transaction: a failed condition is the view's normal conflict; every other
/// reason (a concurrent transaction on the same item, throttling) is worth retrying.
fn commit_error(
    e: aws_sdk_dynamodb::error::SdkError<
        TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> Result<ViewCommit, StoreError> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        e.as_service_error()
    {
        let codes: Vec<&str> = cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|r| r.code())
            .filter(|code| *code != "None")
            .collect();
        if codes.contains(&"ConditionalCheckFailed") {
            return Ok(ViewCommit::Conflict);
        }
        let message = format!("transaction cancelled: {codes:?}");
        return Err(
            if codes
                .iter()
                .any(|c| c.contains("Throttl") || c.contains("ThroughputExceeded"))
            {
                StoreError::Throttled(message)
            } else if codes.contains(&"ValidationError") {
                StoreError::Rejected(message)
            } else {
                StoreError::Unavailable(message)
            },
        );
    }
    Err(store_error(classify(&e)))
}

#[async_trait]
impl StatusViewWriter for DynamoStatusView {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            let keys: Vec<Item> = chunk.iter().map(|id| key(entry_pk(id), ENTRY_SK)).collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(rejected)?,
            );
            let mut pause = std::time::Duration::from_millis(20);
            let mut attempts = 0;
            while let Some(request) = pending.take() {
                attempts += 1;
                if attempts > UNPROCESSED_ATTEMPTS {
                    return Err(StoreError::Throttled(format!(
                        "{}: keys still unprocessed after {UNPROCESSED_ATTEMPTS} BatchGetItem calls",
                        self.table
                    )));
                }
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| store_error(classify(&e)))?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let entry = self.entry_of(item)?;
                    found.insert(entry.id.clone(), entry);
                }
                pending = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if pending.is_some() {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        Ok(found)
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        if changes.is_empty() {
            return Ok(ViewCommit::Committed);
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(self.writes(changes)?))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ViewCommit::Committed),
            Err(e) => commit_error(e),
        }
    }
}

#[async_trait]
impl StatusViewReader for DynamoStatusView {
    /// One strongly consistent Query per shard, reading every counter of the shard.
    async fn counts(&self, shards: &[String]) -> Result<Vec<StatusCount>, StoreError> {
        let pages = futures::future::try_join_all(
            shards.iter().map(|shard| self.query_all(counter_pk(shard))),
        )
        .await?;
        let mut counters = Vec::new();
        for (shard, items) in shards.iter().zip(pages) {
            for item in items {
                let status = get_s(&item, "sk", &self.table)?;
                let count = match item.get("count") {
                    Some(AttributeValue::N(n)) => n.parse::<i64>().map_err(|_| {
                        corrupt(&self.table, format!("has count = {n}, not a whole number"))
                    })?,
                    _ => return Err(corrupt(&self.table, "has a counter without count".into())),
                };
                counters.push((
                    CounterKey {
                        shard_id: shard.clone(),
                        status,
                    },
                    count,
                ));
            }
        }
        Ok(sum_counts(counters))
    }

    /// One strongly consistent Query per shard for up to `limit` items, merged newest first.
    async fn members(
        &self,
        shards: &[String],
        status: &str,
        below: Option<&ListPosition>,
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        // One more than asked tells whether a next page exists.
        let pages = futures::future::try_join_all(
            shards
                .iter()
                .map(|shard| self.list_page(shard, status, below, limit + 1)),
        )
        .await?;
        let mut entries: Vec<ViewEntry> = pages.into_iter().flatten().collect();
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.position()));
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more
            .then(|| entries.last().map(ViewEntry::position))
            .flatten();
        Ok(MemberPage { entries, next })
    }
}
