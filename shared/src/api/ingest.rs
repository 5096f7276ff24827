//! `POST /events` and `POST /events/batch`.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, value::RawValue};

use futures::stream::{self, StreamExt};
use http::HeaderValue;

use super::idempotent::{Admission, Claim, IdempotencyKeys};
use super::{
    json_body, ApiError, ApiRequest, ApiResponse, ErrorCode, IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_REPLAYED,
};
use crate::domain::consistency::ConsistencyToken;
use crate::domain::digest::sha256_hex;
use crate::domain::idempotency::{validate_idempotency_key, KeyScope};
use crate::domain::input::{batch_default_time, parse_batch_item, IDEMPOTENCY_KEY_FIELD};
use crate::domain::limits::{IDEMPOTENCY_CONCURRENCY, MAX_RECORD_BYTES, MAX_TOKEN_CHARS};
use crate::domain::{
    parse_batch, parse_event, BatchItem, Clock, Event, EventTime, FieldError, Limits, Rule,
    SequenceNumber, SystemClock,
};
use crate::ports::{IdempotencyStore, OutgoingRecord, PutAck};
use crate::publish::{PublishError, Publisher};
use crate::telemetry::clock_ahead_emf_line;

pub struct IngestApi {
    publisher: Publisher,
    keys: IdempotencyKeys,
    limits: Limits,
    clock: Arc<dyn Clock>,
    emit_metrics: bool,
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Throttled(m) => ApiError::unavailable(
                ErrorCode::Throttled,
                format!("the stream is throttling, retry later: {m}"),
            ),
            PublishError::Unavailable(m) => ApiError::unavailable(
                ErrorCode::Unavailable,
                format!("the stream is unavailable, retry later: {m}"),
            ),
        }
    }
}

/// The stream record for an event. `index` is the event's place in a batch (`None` for the whole
/// body), for naming it in errors.
fn outgoing(event: &Event, index: Option<usize>) -> Result<OutgoingRecord, ApiError> {
    let data = event.encode().map_err(|e| {
        // Strings and already-valid JSON always serialise; if that ever breaks, say so loudly.
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("the event could not be encoded for the stream: {e}"),
        )
    })?;
    let record = OutgoingRecord {
        partition_key: event.id.clone(),
        data: Bytes::from(data),
    };
    // The field bounds keep every valid event far below this; the check makes sure a record
    // Kinesis would refuse is a 400 for this event, never a failed call for its neighbours.
    if record.size() > MAX_RECORD_BYTES {
        let field = index.map(|i| format!("events[{i}]"));
        let message = format!(
            "{} is {} bytes as a stream record, more than the {MAX_RECORD_BYTES} Kinesis accepts",
            field.as_deref().unwrap_or("the event"),
            record.size()
        );
        return Err(FieldError {
            field,
            rule: Rule::TooLarge,
            message,
        }
        .into());
    }
    Ok(record)
}

/// An accepted event's answer: where it sits on the stream, and the token that reads it back.
fn accepted(event: &Event, ack: &PutAck) -> serde_json::Value {
    let token =
        ConsistencyToken::event(&ack.shard_id, event.event_time, ack.sequence_number.clone());
    let mut body = json!({
        "id": event.id,
        "shard_id": ack.shard_id,
        "sequence_number": ack.sequence_number,
        "token": token.encode(),
    });
    let ahead_ms = event.event_time.millis_since(event.received_at);
    if ahead_ms > 0 {
        body["ahead_ms"] = json!(ahead_ms);
    }
    body
}

/// Accepted events timestamped ahead of the receive time: each one wins over every event for
/// its id that carries the true time, until the true time catches up. The rule allows it (up to
/// the skew limit), so it is not refused, but the client is told (`ahead_ms`) and the operator
/// sees it (a log line and, in Lambda, a metric).
fn report_ahead<'e>(events: impl IntoIterator<Item = &'e Event>, emit_metrics: bool) {
    let (count, max_ms) = events
        .into_iter()
        .map(|e| e.event_time.millis_since(e.received_at))
        .filter(|&ms| ms > 0)
        .fold((0u64, 0u64), |(n, max), ms| (n + 1, max.max(ms)));
    if count == 0 {
        return;
    }
    tracing::info!(
        events_ahead = count,
        max_ahead_ms = max_ms,
        "accepted events timestamped ahead of the receive time; until then they win over events carrying the true time"
    );
    if emit_metrics {
        println!(
            "{}",
            clock_ahead_emf_line(count, max_ms, SystemClock.now().unix_millis())
        );
    }
}

/// One batch item on its way to an answer.
enum Item<'a> {
    Invalid(ApiError),
    /// Valid, with a key not yet claimed.
    Keyed {
        event: Event,
        record: OutgoingRecord,
        key: String,
        raw: &'a RawValue,
    },
    /// A retried item whose key already holds its answer.
    Replayed(serde_json::Value),
    Send {
        event: Event,
        record: OutgoingRecord,
        claim: Option<Claim>,
    },
}

fn replayed_response(answer: String) -> ApiResponse {
    ApiResponse::json_bytes(StatusCode::ACCEPTED, answer.into_bytes())
        .with_header(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))
}

/// Where a replayed item's event sits, read back from its stored answer (for the batch token).
fn replayed_ack(answer: &serde_json::Value) -> Option<PutAck> {
    Some(PutAck {
        shard_id: answer.get("shard_id")?.as_str()?.to_owned(),
        sequence_number: SequenceNumber::parse(answer.get("sequence_number")?.as_str()?).ok()?,
    })
}

impl IngestApi {
    /// Idempotency keys live in `keys` for a day ([`Self::with_idempotency_ttl`] changes that).
    pub fn new(
        publisher: Publisher,
        keys: Arc<dyn IdempotencyStore>,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            publisher,
            keys: IdempotencyKeys::new(keys),
            limits,
            clock,
            emit_metrics: false,
        }
    }

    /// How long a completed idempotency key answers retries.
    pub fn with_idempotency_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.keys = self.keys.with_ttl(ttl);
        self
    }

    /// Also prints CloudWatch Embedded Metric Format lines (the ingest Lambda).
    pub fn with_metrics(mut self) -> Self {
        self.emit_metrics = true;
        self
    }

    /// 202 with where the event sits; with an `Idempotency-Key`, a retry of the same body gets
    /// the first answer again (and `Idempotent-Replayed: true`) without putting anything.
    pub(crate) async fn post_event(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = json_body(request)?;
        let received_at = self.clock.now();
        let key = match request.idempotency_key.as_deref() {
            Some(key) => {
                validate_idempotency_key(key, IDEMPOTENCY_KEY_HEADER)?;
                Some(key)
            }
            None => None,
        };
        let raw: &RawValue = serde_json::from_str(body).map_err(|e| {
            FieldError::whole_body(
                Rule::MalformedJson,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        // Validated before the key is claimed: a refused request never holds a key.
        let (event, record) = self.prepare_event(raw, received_at)?;
        let Some(key) = key else {
            let answer = self.put_event(&event, &record).await?;
            return Ok(ApiResponse::json_bytes(
                StatusCode::ACCEPTED,
                answer.into_bytes(),
            ));
        };
        let claim = match self
            .keys
            .admit(
                KeyScope::Event,
                key,
                sha256_hex(body.as_bytes()),
                received_at,
                received_at,
                IDEMPOTENCY_KEY_HEADER,
            )
            .await
        {
            Admission::Proceed(claim) => claim,
            Admission::Replay(answer) => return Ok(replayed_response(answer)),
            Admission::Refused(error) => return Err(error),
        };
        // A takeover puts the event as the first attempt stamped it.
        let restamped = if claim.received_at == received_at {
            Ok((event, record))
        } else {
            self.prepare_event(raw, claim.received_at)
        };
        let put = match restamped {
            Ok((event, record)) => self.put_event(&event, &record).await,
            Err(e) => Err(e),
        };
        match put {
            Ok(answer) => {
                self.keys.complete(&claim, &answer).await;
                Ok(ApiResponse::json_bytes(
                    StatusCode::ACCEPTED,
                    answer.into_bytes(),
                ))
            }
            Err(e) => {
                self.keys.release(&claim).await;
                Err(e)
            }
        }
    }

    /// One event and its stream record, stamped as received at `received_at`.
    fn prepare_event(
        &self,
        raw: &RawValue,
        received_at: EventTime,
    ) -> Result<(Event, OutgoingRecord), ApiError> {
        let event = parse_event(raw, None, received_at, &self.limits)?;
        let record = outgoing(&event, None)?;
        Ok((event, record))
    }

    /// Puts one event; its answer as JSON text (what an idempotency key stores).
    async fn put_event(&self, event: &Event, record: &OutgoingRecord) -> Result<String, ApiError> {
        let ack = self.publisher.publish(record).await?;
        report_ahead([event], self.emit_metrics);
        let mut body = accepted(event, &ack);
        body["received_at"] = json!(event.received_at.to_rfc3339());
        Ok(body.to_string())
    }

    /// An item of a batch, ready to send unless it has a key to claim first.
    fn prepare_item<'a>(&self, index: usize, item: Result<BatchItem<'a>, FieldError>) -> Item<'a> {
        let item = match item {
            Ok(item) => item,
            Err(invalid) => return Item::Invalid(invalid.into()),
        };
        let record = match outgoing(&item.event, Some(index)) {
            Ok(record) => record,
            Err(invalid) => return Item::Invalid(invalid),
        };
        match item.idempotency_key {
            Some(key) => Item::Keyed {
                event: item.event,
                record,
                key,
                raw: item.raw,
            },
            None => Item::Send {
                event: item.event,
                record,
                claim: None,
            },
        }
    }

    /// A keyed item claims its key (or is replayed, or refused); other items pass through.
    async fn admit_item<'a>(
        &self,
        index: usize,
        item: Item<'a>,
        received_at: EventTime,
    ) -> Item<'a> {
        let Item::Keyed {
            event,
            record,
            key,
            raw,
        } = item
        else {
            return item;
        };
        let key_field = format!("events[{index}].{IDEMPOTENCY_KEY_FIELD}");
        let claim = match self
            .keys
            .admit(
                KeyScope::BatchItem,
                &key,
                sha256_hex(raw.get().as_bytes()),
                received_at,
                batch_default_time(received_at, index),
                &key_field,
            )
            .await
        {
            Admission::Proceed(claim) => claim,
            Admission::Replay(answer) => {
                return match serde_json::from_str::<serde_json::Value>(&answer) {
                    Ok(mut answer) => {
                        answer["replayed"] = json!(true);
                        Item::Replayed(answer)
                    }
                    Err(e) => Item::Invalid(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::Internal,
                        format!("the stored answer of {key_field} is not JSON: {e}"),
                    )),
                }
            }
            Admission::Refused(error) => return Item::Invalid(error),
        };
        if claim.received_at == received_at {
            return Item::Send {
                event,
                record,
                claim: Some(claim),
            };
        }
        let restamped = parse_batch_item(
            raw,
            index,
            claim.received_at,
            claim.default_time,
            &self.limits,
        )
        .map_err(ApiError::from)
        .and_then(|item| outgoing(&item.event, Some(index)).map(|record| (item.event, record)));
        match restamped {
            Ok((event, record)) => Item::Send {
                event,
                record,
                claim: Some(claim),
            },
            Err(invalid) => {
                self.keys.release(&claim).await;
                Item::Invalid(invalid)
            }
        }
    }

    /// 202 when every event was accepted; 207 when some were rejected (each result says which
    /// and why); when none was accepted, the first item's error status (400 for invalid input)
    /// or 503 when the stream failed. Each accepted item carries its own token, and the answer
    /// one covering them all. Items with an `idempotency_key` already answered are answered
    /// again (`"replayed": true`) and not put.
    pub(crate) async fn post_batch(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = json_body(request)?;
        let received_at = self.clock.now();
        let parsed = parse_batch(body, received_at, &self.limits)?;

        let mut items: Vec<Item<'_>> = parsed
            .into_iter()
            .enumerate()
            .map(|(i, item)| self.prepare_item(i, item))
            .collect();
        if items.iter().any(|item| matches!(item, Item::Keyed { .. })) {
            // The futures are built first: a stream mapping through a closure over the borrowed
            // items would not be provably `Send` for the Lambda runtime.
            let admissions: Vec<_> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.admit_item(i, item, received_at))
                .collect();
            items = stream::iter(admissions)
                .buffered(IDEMPOTENCY_CONCURRENCY)
                .collect()
                .await;
        }
        let records: Vec<OutgoingRecord> = items
            .iter()
            .filter_map(|item| match item {
                Item::Send { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect();
        let mut put_results = self.publisher.publish_all(&records).await.into_iter();

        let mut accepted_count = 0;
        let mut acks = Vec::new();
        let mut accepted_events = Vec::new();
        let mut first_invalid = None;
        let mut first_unavailable = None;
        // Each claimed key with the answer to store, or `None` to release it.
        let mut claims: Vec<(Claim, Option<String>)> = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let error = match item {
                Item::Send { event, claim, .. } => match put_results.next() {
                    Some(Ok(ack)) => {
                        accepted_count += 1;
                        let body = accepted(&event, &ack);
                        if let Some(claim) = claim {
                            claims.push((claim, Some(body.to_string())));
                        }
                        acks.push(ack);
                        accepted_events.push(event);
                        results.push(body);
                        continue;
                    }
                    put => {
                        claims.extend(claim.map(|claim| (claim, None)));
                        let error = put
                            .and_then(Result::err)
                            .unwrap_or_else(|| PublishError::Unavailable("not sent".into()));
                        let mut error = ApiError::from(error);
                        error.field = Some(format!("events[{i}]"));
                        error
                    }
                },
                Item::Replayed(answer) => {
                    accepted_count += 1;
                    acks.extend(replayed_ack(&answer));
                    results.push(answer);
                    continue;
                }
                Item::Invalid(error) => error,
                // Every keyed item was admitted above; one that was not is never sent.
                Item::Keyed { .. } => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    format!("events[{i}] was not admitted"),
                ),
            };
            results.push(json!({"error": error.body()}));
            if error.status == StatusCode::SERVICE_UNAVAILABLE {
                first_unavailable.get_or_insert(error);
            } else {
                first_invalid.get_or_insert(error);
            }
        }
        let settling: Vec<_> = claims
            .iter()
            .map(|(claim, answer)| self.keys.settle(claim, answer.as_deref()))
            .collect();
        stream::iter(settling)
            .buffer_unordered(IDEMPOTENCY_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;

        report_ahead(&accepted_events, self.emit_metrics);
        let status = match (accepted_count, first_unavailable, first_invalid) {
            (n, _, _) if n == results.len() => StatusCode::ACCEPTED,
            (0, Some(unavailable), _) => return Err(unavailable),
            (0, None, Some(invalid)) => {
                let mut body = json!({"error": invalid.body(), "results": results});
                body["error"]["message"] = json!(format!(
                    "no event in the batch was accepted; first: {}",
                    invalid.message
                ));
                let response = ApiResponse::json(invalid.status, &body);
                return Ok(if invalid.code == ErrorCode::IdempotencyInProgress.code() {
                    response.with_header(
                        http::header::RETRY_AFTER,
                        HeaderValue::from(super::RETRY_AFTER_SECONDS),
                    )
                } else {
                    response
                });
            }
            _ => StatusCode::MULTI_STATUS,
        };
        let mut body = json!({
            "accepted": accepted_count,
            "rejected": results.len() - accepted_count,
            "received_at": received_at.to_rfc3339(),
            "results": results,
        });
        // Covers every accepted item; left out only when too long for a URL (see the limit).
        let token = ConsistencyToken::batch(
            acks.iter()
                .map(|ack| (ack.shard_id.as_str(), &ack.sequence_number)),
        )
        .map(|token| token.encode())
        .filter(|token| token.len() <= MAX_TOKEN_CHARS);
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        Ok(ApiResponse::json(status, &body))
    }
}
