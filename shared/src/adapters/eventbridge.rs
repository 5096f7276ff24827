//! Status changes as events on an EventBridge bus: `source` [`EVENT_SOURCE`], `detail-type`
//! [`DETAIL_TYPE`], `detail` the change's JSON (the same object `GET /changes` lists), so a rule
//! matches them by those two and by any detail field (`new_status`, `id`).

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;

use super::sdk::{classify, Failure};
use crate::ports::{ChangePublisher, StatusChange, StoreError};

pub const EVENT_SOURCE: &str = "tidemark";
pub const DETAIL_TYPE: &str = "Status changed";

/// Entry error codes EventBridge documents as worth retrying; any other (an access or a
/// validation error) needs an operator, and is retried like an outage by the mapping.
const THROTTLE_CODES: [&str; 2] = ["ThrottlingException", "InternalException"];

fn store_error(failure: Failure) -> StoreError {
    match failure {
        Failure::Throttled(m) => StoreError::Throttled(m),
        Failure::Service { code, message } => match code.as_str() {
            "ResourceNotFoundException" | "AccessDeniedException" => StoreError::Rejected(message),
            _ => StoreError::Unavailable(message),
        },
        Failure::Unreachable(m) => StoreError::Unavailable(m),
    }
}

#[derive(Clone)]
pub struct EventBridgePublisher {
    client: Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl ChangePublisher for EventBridgePublisher {
    async fn publish(&self, changes: &[StatusChange]) -> Vec<Result<(), StoreError>> {
        let entries: Vec<PutEventsRequestEntry> = changes
            .iter()
            .map(|change| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(EVENT_SOURCE)
                    .detail_type(DETAIL_TYPE)
                    .detail(change.to_json().to_string())
                    .build()
            })
            .collect();
        let answer = match self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                let error = store_error(classify(&e));
                return changes.iter().map(|_| Err(error.clone())).collect();
            }
        };
        // One result per entry, in request order; an entry without an event id failed.
        let results = answer.entries();
        changes
            .iter()
            .enumerate()
            .map(|(i, _)| match results.get(i) {
                Some(entry) if entry.event_id().is_some() => Ok(()),
                Some(entry) => {
                    let code = entry.error_code().unwrap_or("unknown");
                    let message = format!("{code}: {}", entry.error_message().unwrap_or_default());
                    Err(if THROTTLE_CODES.contains(&code) {
                        StoreError::Throttled(message)
                    } else {
                        StoreError::Unavailable(message)
                    })
                }
                None => Err(StoreError::Unavailable(
                    "PutEvents answered fewer entries than it was sent".into(),
                )),
            })
            .collect()
    }
}
