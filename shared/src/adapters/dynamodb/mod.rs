//! STATUS, OPLOG, DEADLETTER, HISTORY, the idempotency keys and the status view on DynamoDB,
//! one file per table; the error mapping and attribute helpers they share live here. Every
//! STATUS and OPLOG write is conditional, and a failed condition is the normal "stale" outcome,
//! never an error.

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

mod checkpoints;
mod dead_letters;
mod history;
mod idempotency;
mod status;
mod status_view;

pub use checkpoints::DynamoCheckpointStore;
pub use dead_letters::DynamoDeadLetterStore;
pub use history::DynamoHistoryStore;
pub use idempotency::DynamoIdempotencyStore;
pub use status::{status_row_of_image, DynamoStatusStore};
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

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
