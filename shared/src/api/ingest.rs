//! `POST /events` and `POST /events/batch`.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, value::RawValue};

use super::{json_body, ApiError, ApiRequest, ApiResponse, ErrorCode};
use crate::domain::consistency::ConsistencyToken;
use crate::domain::limits::{MAX_RECORD_BYTES, MAX_TOKEN_CHARS};
use crate::domain::{
    parse_batch, parse_event, Clock, Event, FieldError, Limits, Rule, SystemClock,
};
use crate::ports::{OutgoingRecord, PutAck};
use crate::publish::{PublishError, Publisher};
use crate::telemetry::clock_ahead_emf_line;

pub struct IngestApi {
    publisher: Publisher,
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

/// The stream record for an event. `field` names the event in errors (`events[3]` in a batch;
/// `None` for the whole body).
fn outgoing(event: &Event, field: Option<&str>) -> Result<OutgoingRecord, ApiError> {
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
        let message = format!(
            "{} is {} bytes as a stream record, more than the {MAX_RECORD_BYTES} Kinesis accepts",
            field.unwrap_or("the event"),
            record.size()
        );
        return Err(FieldError {
            field: field.map(str::to_owned),
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

impl IngestApi {
    pub fn new(publisher: Publisher, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            publisher,
            limits,
            clock,
            emit_metrics: false,
        }
    }

    /// Also prints CloudWatch Embedded Metric Format lines (the ingest Lambda).
    pub fn with_metrics(mut self) -> Self {
        self.emit_metrics = true;
        self
    }

    pub(crate) async fn post_event(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = json_body(request)?;
        let received_at = self.clock.now();
        let raw: &RawValue = serde_json::from_str(body).map_err(|e| {
            FieldError::whole_body(
                Rule::MalformedJson,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        let event = parse_event(raw, None, received_at, &self.limits)?;
        let ack = self.publisher.publish(&outgoing(&event, None)?).await?;
        report_ahead([&event], self.emit_metrics);
        let mut body = accepted(&event, &ack);
        body["received_at"] = json!(received_at.to_rfc3339());
        Ok(ApiResponse::json(StatusCode::ACCEPTED, &body))
    }

    /// 202 when every event was accepted; 207 when some were rejected (each result says which
    /// and why); 400 when none was valid; 503 when none could be put because the stream failed.
    /// Each accepted item carries its own token, and the answer one covering them all.
    pub(crate) async fn post_batch(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = json_body(request)?;
        let received_at = self.clock.now();
        let parsed = parse_batch(body, received_at, &self.limits)?;

        let prepared: Vec<Result<(Event, OutgoingRecord), ApiError>> = parsed
            .into_iter()
            .enumerate()
            .map(|(i, parsed)| {
                let event = parsed?;
                let record = outgoing(&event, Some(&format!("events[{i}]")))?;
                Ok((event, record))
            })
            .collect();
        let records: Vec<OutgoingRecord> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(_, record)| record.clone()))
            .collect();
        let mut put_results = self.publisher.publish_all(&records).await.into_iter();

        let mut accepted_count = 0;
        let mut acks = Vec::new();
        let mut accepted_events = Vec::new();
        let mut first_invalid = None;
        let mut first_stream_error = None;
        let results: Vec<serde_json::Value> = prepared
            .into_iter()
            .enumerate()
            .map(|(i, prepared)| match prepared {
                Ok((event, _)) => match put_results.next() {
                    Some(Ok(ack)) => {
                        accepted_count += 1;
                        let body = accepted(&event, &ack);
                        acks.push(ack);
                        accepted_events.push(event);
                        body
                    }
                    put => {
                        let error = put
                            .and_then(Result::err)
                            .unwrap_or_else(|| PublishError::Unavailable("not sent".into()));
                        let mut error = ApiError::from(error);
                        error.field = Some(format!("events[{i}]"));
                        let body = json!({"error": error.body()});
                        first_stream_error.get_or_insert(error);
                        body
                    }
                },
                Err(invalid) => {
                    let body = json!({"error": invalid.body()});
                    first_invalid.get_or_insert(invalid);
                    body
                }
            })
            .collect();

        report_ahead(&accepted_events, self.emit_metrics);
        let status = match (accepted_count, first_stream_error, first_invalid) {
            (n, _, _) if n == results.len() => StatusCode::ACCEPTED,
            (0, Some(stream_error), _) => return Err(stream_error),
            (0, None, Some(invalid)) => {
                let mut body = json!({"error": invalid.body(), "results": results});
                body["error"]["message"] = json!(format!(
                    "no event in the batch is valid; first: {}",
                    invalid.message
                ));
                return Ok(ApiResponse::json(StatusCode::BAD_REQUEST, &body));
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
