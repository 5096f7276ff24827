//! `POST /events` and `POST /events/batch`.

mod batch;

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
}
