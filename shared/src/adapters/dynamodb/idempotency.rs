//! Idempotency keys: claims, completions and releases, each a conditional write.

use super::*;

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
