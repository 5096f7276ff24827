//! The notifier Lambda's handler: a batch of STATUS's DynamoDB stream → status-change events on
//! the stack's bus ([`tidemark::consumers::notifier`]), reporting the first record it could not
//! publish in `batchItemFailures` (the mapping needs `ReportBatchItemFailures`).

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use tidemark::adapters::dynamodb::status_row_of_image;
use tidemark::consumers::notifier::{ChangeNotifier, NotifyOutcome, StatusImages};
use tidemark::ports::StatusRow;

/// A DynamoDB stream event Lambda could not have sent: the invocation fails loudly (the mapping
/// retries it, then hands it to the on-failure destination).
#[derive(Debug, thiserror::Error)]
#[error("record {index} has no dynamodb.SequenceNumber")]
pub struct MissingSequenceNumber {
    pub index: usize,
}

/// What one invocation did, for its log line and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NotifierReport {
    pub outcome: NotifyOutcome,
    /// Records whose images are not STATUS rows: they can never become a change, so they are
    /// logged (with their position) and skipped, never retried.
    pub unreadable: usize,
}

/// The batch's records as rows; an image that is not a STATUS row is skipped, and counted.
fn images(event: Event) -> Result<(Vec<StatusImages>, usize), MissingSequenceNumber> {
    let mut unreadable = 0;
    let mut records = Vec::with_capacity(event.records.len());
    for (index, record) in event.records.into_iter().enumerate() {
        let EventRecord { change, .. } = record;
        let position = change
            .sequence_number
            .clone()
            .ok_or(MissingSequenceNumber { index })?;
        let read = |image: serde_dynamo::Item| -> Option<Result<StatusRow, String>> {
            let item: HashMap<String, AttributeValue> = image.into();
            (!item.is_empty()).then(|| status_row_of_image(&item).map_err(|e| e.to_string()))
        };
        match (
            read(change.old_image).transpose(),
            read(change.new_image).transpose(),
        ) {
            (Ok(old), Ok(new)) => records.push(StatusImages { position, old, new }),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(position, %error, "a STATUS stream record that is not a row: skipped");
                unreadable += 1;
            }
        }
    }
    Ok((records, unreadable))
}

/// One invocation: publish the batch's changes and answer with the first that failed.
pub async fn handle(
    notifier: &ChangeNotifier,
    event: Event,
) -> Result<(DynamoDbEventResponse, NotifierReport), MissingSequenceNumber> {
    let (records, unreadable) = images(event)?;
    let outcome = notifier.notify(&records).await;
    let mut response = DynamoDbEventResponse::default();
    if let Some(position) = &outcome.first_failed {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(position.clone());
        response.batch_item_failures.push(failure);
    }
    Ok((
        response,
        NotifierReport {
            outcome,
            unreadable,
        },
    ))
}
