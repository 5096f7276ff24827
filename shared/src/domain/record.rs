//! The stream record codec: the bytes Tidemark puts on the stream for an event, and reading them
//! back (with the same rules as the API) in the processor. What can never be read is poison.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::event::Event;
use super::limits::Limits;
use super::rules::{
    is_null, parse_timestamp, validate_data, validate_id, validate_status, FieldError, Rule,
};
use super::time::EventTime;

/// The record Tidemark writes to the stream for an event. The field names are the wire format
/// between ingest and processor; unknown fields are ignored on read so they can be added later.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    received_at: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

impl Event {
    /// The stream record's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let envelope = Envelope {
            id: Cow::Borrowed(&self.id),
            status: Cow::Borrowed(&self.status),
            timestamp: Cow::Borrowed(&self.timestamp),
            received_at: Cow::Owned(self.received_at.to_rfc3339()),
            data: self.data.as_deref(),
        };
        serde_json::to_vec(&envelope)
    }
}

/// Why a stream record can never be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("invalid: {0}")]
    Invalid(FieldError),
}

/// Decodes a record of the log: Tidemark's own envelope ([`decode_record`]), or else, when the
/// log stamped the record with its arrival (`arrival`), a plain status event another producer
/// wrote, `{id, status, timestamp?, data?}`, read by exactly the API's rules
/// ([`super::input::parse_event`]) as if it had been received at its arrival. Anything else is
/// poison, with the plain event's reason (the likelier intent of a record without our envelope).
pub fn decode_log_record(
    bytes: &[u8],
    arrival: Option<EventTime>,
    limits: &Limits,
) -> Result<Event, PoisonReason> {
    let own = decode_record(bytes, limits);
    let (Err(PoisonReason::Undecodable(_)), Some(arrival)) = (&own, arrival) else {
        return own;
    };
    let raw: &RawValue =
        serde_json::from_slice(bytes).map_err(|e| PoisonReason::Undecodable(e.to_string()))?;
    super::input::parse_event(raw, None, arrival, limits).map_err(PoisonReason::Invalid)
}

/// Decodes a stream record and validates it with the same rules as the API. The future-skew
/// rule is checked against the record's own `received_at`, so the processor agrees with the
/// ingest decision whatever its own clock says.
pub fn decode_record(bytes: &[u8], limits: &Limits) -> Result<Event, PoisonReason> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| PoisonReason::Undecodable(e.to_string()))?;
    let received_at = EventTime::parse_rfc3339(&envelope.received_at).ok_or_else(|| {
        PoisonReason::Invalid(FieldError::new(
            "received_at",
            Rule::InvalidTimestamp,
            "received_at must be an RFC 3339 date-time",
        ))
    })?;
    let invalid = PoisonReason::Invalid;
    validate_id(&envelope.id, "id").map_err(invalid)?;
    validate_status(&envelope.status, "status").map_err(invalid)?;
    let event_time =
        parse_timestamp(&envelope.timestamp, "timestamp", received_at, limits).map_err(invalid)?;
    let data = envelope
        .data
        .filter(|raw| !is_null(raw))
        .map(|raw| validate_data(raw, "data", limits))
        .transpose()
        .map_err(invalid)?;
    Ok(Event {
        id: envelope.id.into_owned(),
        status: envelope.status.into_owned(),
        timestamp: envelope.timestamp.into_owned(),
        event_time,
        data,
        received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::parse_event;

    fn parse(json: &str) -> Result<Event, FieldError> {
        let now = EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let raw: &RawValue = serde_json::from_str(json).unwrap();
        parse_event(raw, None, now, &Limits::default())
    }

    #[test]
    fn stream_records_round_trip_and_poison_is_explained() {
        let e = parse(
            r#"{"id":"a","status":"s","timestamp":"2024-05-01T11:00:00+02:00","data":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(
            decode_record(&e.encode().unwrap(), &Limits::default()).unwrap(),
            e
        );
        assert!(matches!(
            decode_record(b"not json", &Limits::default()),
            Err(PoisonReason::Undecodable(_))
        ));
        assert!(matches!(
            decode_record(&[0xff, 0xfe], &Limits::default()),
            Err(PoisonReason::Undecodable(_))
        ));
        let bad_id = br#"{"id":"","status":"s","timestamp":"2024-05-01T11:00:00Z","received_at":"2024-05-01T11:00:00Z"}"#;
        assert!(matches!(
            decode_record(bad_id, &Limits::default()),
            Err(PoisonReason::Invalid(_))
        ));
        // The skew rule is judged against the record's own received_at, not the processor's clock.
        let late = br#"{"id":"a","status":"s","timestamp":"2024-05-01T11:04:00Z","received_at":"2024-05-01T11:00:00Z"}"#;
        assert!(decode_record(late, &Limits::default()).is_ok());
        // A foreign record holds data the query route could not hand back as sent: poison.
        let unreadable = br#"{"id":"a","status":"s","timestamp":"2024-05-01T11:00:00Z","received_at":"2024-05-01T11:00:00Z","data":{"n":1e400}}"#;
        assert!(matches!(
            decode_record(unreadable, &Limits::default()),
            Err(PoisonReason::Invalid(FieldError {
                rule: Rule::InvalidNumber,
                ..
            }))
        ));
        let future = br#"{"id":"a","status":"s","timestamp":"2024-05-01T11:06:00Z","received_at":"2024-05-01T11:00:00Z"}"#;
        assert!(matches!(
            decode_record(future, &Limits::default()),
            Err(PoisonReason::Invalid(_))
        ));
    }

    #[test]
    fn a_plain_event_from_another_producer_is_read_by_the_api_rules_at_its_arrival() {
        let arrival = EventTime::parse_rfc3339("2024-05-01T12:00:00Z");
        let limits = Limits::default();
        let plain = br#"{"id":"a","status":"shipped","data":{"x":1}}"#;
        let event = decode_log_record(plain, arrival, &limits).unwrap();
        assert_eq!((event.id.as_str(), event.status.as_str()), ("a", "shipped"));
        assert_eq!(Some(event.received_at), arrival);
        assert_eq!(Some(event.event_time), arrival, "no timestamp: its arrival");
        // Without an arrival there is nothing to read it at; an unknown field is refused as by
        // the API; our own envelope is read as ever.
        assert!(decode_log_record(plain, None, &limits).is_err());
        let unknown = br#"{"id":"a","status":"s","colour":"red"}"#;
        assert!(matches!(
            decode_log_record(unknown, arrival, &limits),
            Err(PoisonReason::Invalid(_))
        ));
        let own = parse(r#"{"id":"b","status":"s","timestamp":"2024-05-01T11:00:00Z"}"#).unwrap();
        assert_eq!(
            decode_log_record(&own.encode().unwrap(), arrival, &limits).unwrap(),
            own
        );
        assert!(matches!(
            decode_log_record(b"not json", arrival, &limits),
            Err(PoisonReason::Undecodable(_))
        ));
    }
}
