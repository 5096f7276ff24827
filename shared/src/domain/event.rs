//! The event model, its validation, and its encoding on the stream.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::limits::{
    DEFAULT_MAX_DATA_BYTES, DEFAULT_MAX_FUTURE_SKEW, MAX_BATCH_EVENTS, MAX_ID_CHARS,
    MAX_STATUS_CHARS,
};
use super::time::EventTime;

/// The configurable limits applied to every event, at ingest and again in the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_data_bytes: usize,
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
        }
    }
}

/// A validated event, stamped with the time the API received it.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub status: String,
    /// The timestamp as the producer wrote it (offset kept), or `received_at` when it gave none.
    pub timestamp: String,
    /// `timestamp` as an instant: what versions compare.
    pub event_time: EventTime,
    /// The `data` object as compact JSON text, exactly as sent apart from whitespace.
    pub data: Option<Box<RawValue>>,
    pub received_at: EventTime,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.status == other.status
            && self.timestamp == other.timestamp
            && self.event_time == other.event_time
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
            && self.received_at == other.received_at
    }
}

impl Eq for Event {}

/// Which rule a rejected field broke. The `code` is what clients see in the error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    MalformedJson,
    InvalidType,
    UnknownField,
    Required,
    Empty,
    TooLong,
    ControlCharacter,
    InvalidTimestamp,
    FutureTimestamp,
    TooLarge,
    BatchSize,
}

impl Rule {
    pub fn code(self) -> &'static str {
        match self {
            Rule::MalformedJson => "malformed_json",
            Rule::InvalidType => "invalid_type",
            Rule::UnknownField => "unknown_field",
            Rule::Required => "required",
            Rule::Empty => "empty",
            Rule::TooLong => "too_long",
            Rule::ControlCharacter => "control_character",
            Rule::InvalidTimestamp => "invalid_timestamp",
            Rule::FutureTimestamp => "future_timestamp",
            Rule::TooLarge => "too_large",
            Rule::BatchSize => "batch_size",
        }
    }
}

/// A rejected input: the field (a JSON path such as `events[3].timestamp`), the rule and a
/// sentence saying what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: Option<String>,
    pub rule: Rule,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, rule: Rule, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            rule,
            message: message.into(),
        }
    }

    pub fn whole_body(rule: Rule, message: impl Into<String>) -> Self {
        Self {
            field: None,
            rule,
            message: message.into(),
        }
    }
}

/// Builds field paths under an optional prefix (`events[3]`), without allocating when there is none.
#[derive(Clone, Copy)]
struct FieldPath<'a>(Option<&'a str>);

impl FieldPath<'_> {
    fn of(self, name: &str) -> String {
        match self.0 {
            Some(prefix) => format!("{prefix}.{name}"),
            None => name.to_owned(),
        }
    }

    fn whole(self) -> Option<String> {
        self.0.map(str::to_owned)
    }
}

/// Checks an id: 1–256 characters (the partition-key limit), no control characters.
pub fn validate_id(id: &str, field: &str) -> Result<(), FieldError> {
    validate_text(id, field, MAX_ID_CHARS)?;
    if id.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            Rule::ControlCharacter,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

fn validate_status(status: &str, field: &str) -> Result<(), FieldError> {
    validate_text(status, field, MAX_STATUS_CHARS)
}

fn validate_text(text: &str, field: &str, max_chars: usize) -> Result<(), FieldError> {
    if text.is_empty() {
        return Err(FieldError::new(
            field,
            Rule::Empty,
            format!("{field} must be 1 to {max_chars} characters, got an empty string"),
        ));
    }
    // Byte length bounds the character count from above: only count when it could matter.
    if text.len() > max_chars && text.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            Rule::TooLong,
            format!("{field} must be 1 to {max_chars} characters"),
        ));
    }
    Ok(())
}

fn parse_timestamp(
    text: &str,
    field: &str,
    reference: EventTime,
    limits: &Limits,
) -> Result<EventTime, FieldError> {
    let event_time = EventTime::parse_rfc3339(text).ok_or_else(|| {
        FieldError::new(
            field,
            Rule::InvalidTimestamp,
            format!(
                "{field} must be an RFC 3339 date-time with an offset, e.g. 2024-05-01T12:00:00.5+02:00"
            ),
        )
    })?;
    if event_time > reference.saturating_add(limits.max_future_skew) {
        return Err(FieldError::new(
            field,
            Rule::FutureTimestamp,
            format!(
                "{field} is more than {}s ahead of the receive time {reference}",
                limits.max_future_skew.as_secs()
            ),
        ));
    }
    Ok(event_time)
}

/// Checks `data` is a JSON object within the size bound and returns it compacted.
fn validate_data(
    raw: &RawValue,
    field: &str,
    limits: &Limits,
) -> Result<Box<RawValue>, FieldError> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(FieldError::new(
            field,
            Rule::InvalidType,
            format!("{field} must be a JSON object"),
        ));
    }
    // Already compact (always so for records Tidemark wrote): keep it without re-parsing.
    if !raw
        .get()
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return check_data_size(raw.get().len(), field, limits).map(|()| raw.to_owned());
    }
    let compact = compact_json(raw.get());
    check_data_size(compact.len(), field, limits)?;
    RawValue::from_string(compact).map_err(|e| {
        FieldError::new(
            field,
            Rule::MalformedJson,
            format!("{field} is not valid JSON: {e}"),
        )
    })
}

fn check_data_size(bytes: usize, field: &str, limits: &Limits) -> Result<(), FieldError> {
    if bytes > limits.max_data_bytes {
        return Err(FieldError::new(
            field,
            Rule::TooLarge,
            format!(
                "{field} is {bytes} bytes as compact JSON, more than the {} allowed",
                limits.max_data_bytes
            ),
        ));
    }
    Ok(())
}

/// Removes insignificant whitespace from valid JSON text, leaving strings untouched.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

fn json_error(e: &serde_json::Error, at: FieldPath<'_>, expected: &str) -> FieldError {
    match e.classify() {
        serde_json::error::Category::Data => FieldError {
            field: at.whole(),
            rule: Rule::InvalidType,
            message: format!("{} must be {expected}", at.0.unwrap_or("the request body")),
        },
        _ => FieldError {
            field: at.whole(),
            rule: Rule::MalformedJson,
            message: format!("the request body is not valid JSON: {e}"),
        },
    }
}

fn string_field(raw: &RawValue, field: &str) -> Result<String, FieldError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| {
        FieldError::new(
            field,
            Rule::InvalidType,
            format!("{field} must be a string"),
        )
    })
}

fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}

/// Parses and validates one event from API input. `received_at` is the API's receive time: the
/// default timestamp and the reference for the future-skew rule. `prefix` names the event inside
/// a batch (`events[3]`) so errors point at the right field.
pub fn parse_event(
    raw: &RawValue,
    prefix: Option<&str>,
    received_at: EventTime,
    limits: &Limits,
) -> Result<Event, FieldError> {
    let at = FieldPath(prefix);
    let fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| json_error(&e, at, "a JSON object"))?;

    let mut id = None;
    let mut status = None;
    let mut timestamp = None;
    let mut data = None;
    for (name, value) in &fields {
        match name.as_ref() {
            "id" => id = Some(*value),
            "status" => status = Some(*value),
            "timestamp" if !is_null(value) => timestamp = Some(*value),
            "data" if !is_null(value) => data = Some(*value),
            "timestamp" | "data" => {}
            other => {
                return Err(FieldError::new(
                    at.of(other),
                    Rule::UnknownField,
                    format!(
                        "{} is not a field of an event (id, status, timestamp, data)",
                        at.of(other)
                    ),
                ))
            }
        }
    }

    fn required<'v>(value: Option<&'v RawValue>, field: &str) -> Result<&'v RawValue, FieldError> {
        value.ok_or_else(|| FieldError::new(field, Rule::Required, format!("{field} is required")))
    }
    let id_field = at.of("id");
    let id = string_field(required(id, &id_field)?, &id_field)?;
    validate_id(&id, &id_field)?;
    let status_field = at.of("status");
    let status = string_field(required(status, &status_field)?, &status_field)?;
    validate_status(&status, &status_field)?;

    let (timestamp, event_time) = match timestamp {
        Some(raw) => {
            let field = at.of("timestamp");
            let text = string_field(raw, &field)?;
            let event_time = parse_timestamp(&text, &field, received_at, limits)?;
            (text, event_time)
        }
        None => (received_at.to_rfc3339(), received_at),
    };
    let data = data
        .map(|raw| validate_data(raw, &at.of("data"), limits))
        .transpose()?;

    Ok(Event {
        id,
        status,
        timestamp,
        event_time,
        data,
        received_at,
    })
}

/// Parses `{"events":[…]}`: the envelope must be valid, with 1–500 events; each event is then
/// validated on its own so one bad event does not reject the others.
pub fn parse_batch(
    body: &str,
    received_at: EventTime,
    limits: &Limits,
) -> Result<Vec<Result<Event, FieldError>>, FieldError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BatchBody<'a> {
        #[serde(borrow)]
        events: Option<&'a RawValue>,
    }
    let batch: BatchBody<'_> = serde_json::from_str(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data if e.to_string().starts_with("unknown field") => {
            FieldError::whole_body(
                Rule::UnknownField,
                format!("the batch body has only one field, events: {e}"),
            )
        }
        _ => json_error(&e, FieldPath(None), "a JSON object with an events array"),
    })?;
    let events = batch
        .events
        .ok_or_else(|| FieldError::new("events", Rule::Required, "events is required"))?;
    let events: Vec<&RawValue> = serde_json::from_str(events.get()).map_err(|_| {
        FieldError::new(
            "events",
            Rule::InvalidType,
            "events must be an array of events",
        )
    })?;
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(FieldError::new(
            "events",
            Rule::BatchSize,
            format!(
                "events must hold 1 to {MAX_BATCH_EVENTS} events, got {}",
                events.len()
            ),
        ));
    }
    Ok(events
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_event(raw, Some(&format!("events[{i}]")), received_at, limits))
        .collect())
}

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
    pub fn encode(&self) -> Vec<u8> {
        let envelope = Envelope {
            id: Cow::Borrowed(&self.id),
            status: Cow::Borrowed(&self.status),
            timestamp: Cow::Borrowed(&self.timestamp),
            received_at: Cow::Owned(self.received_at.to_rfc3339()),
            data: self.data.as_deref(),
        };
        // Serialising strings and already-valid raw JSON into a Vec cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

/// Why a stream record can never be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("invalid: {0}")]
    Invalid(FieldError),
    #[error("invalid sequence number: {0}")]
    BadSequenceNumber(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
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
    use crate::domain::limits::MAX_DATA_BYTES_CEILING;

    fn now() -> EventTime {
        EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap()
    }

    fn parse(json: &str) -> Result<Event, FieldError> {
        parse_with(json, &Limits::default())
    }

    fn parse_with(json: &str, limits: &Limits) -> Result<Event, FieldError> {
        let raw: &RawValue = serde_json::from_str(json).unwrap();
        parse_event(raw, None, now(), limits)
    }

    fn rejected(json: &str) -> (Option<String>, Rule) {
        let e = parse(json).unwrap_err();
        (e.field, e.rule)
    }

    fn field(name: &str) -> Option<String> {
        Some(name.to_owned())
    }

    #[test]
    fn minimal_event_defaults_timestamp_to_receive_time() {
        let e = parse(r#"{"id":"a","status":"b"}"#).unwrap();
        assert_eq!(e.event_time, now());
        assert_eq!(e.timestamp, "2024-05-01T12:00:00Z");
        assert_eq!(e.received_at, now());
        assert!(e.data.is_none());
    }

    #[test]
    fn id_limits_at_and_past_the_edge() {
        let at = "é".repeat(MAX_ID_CHARS); // 256 characters, 512 bytes: characters count
        assert!(parse(&format!(r#"{{"id":"{at}","status":"s"}}"#)).is_ok());
        let past = "x".repeat(MAX_ID_CHARS + 1);
        assert_eq!(
            rejected(&format!(r#"{{"id":"{past}","status":"s"}}"#)),
            (field("id"), Rule::TooLong)
        );
        assert_eq!(
            rejected(r#"{"id":"","status":"s"}"#),
            (field("id"), Rule::Empty)
        );
        assert_eq!(
            rejected(r#"{"id":"a\u0000b","status":"s"}"#),
            (field("id"), Rule::ControlCharacter)
        );
        assert_eq!(
            rejected(r#"{"id":"a\nb","status":"s"}"#),
            (field("id"), Rule::ControlCharacter)
        );
        assert_eq!(
            rejected(r#"{"id":7,"status":"s"}"#),
            (field("id"), Rule::InvalidType)
        );
        assert_eq!(rejected(r#"{"status":"s"}"#), (field("id"), Rule::Required));
        assert_eq!(
            rejected(r#"{"id":null,"status":"s"}"#),
            (field("id"), Rule::InvalidType)
        );
    }

    #[test]
    fn status_limits_at_and_past_the_edge() {
        let at = "s".repeat(MAX_STATUS_CHARS);
        assert!(parse(&format!(r#"{{"id":"a","status":"{at}"}}"#)).is_ok());
        let past = "s".repeat(MAX_STATUS_CHARS + 1);
        assert_eq!(
            rejected(&format!(r#"{{"id":"a","status":"{past}"}}"#)),
            (field("status"), Rule::TooLong)
        );
        assert_eq!(
            rejected(r#"{"id":"a","status":""}"#),
            (field("status"), Rule::Empty)
        );
        assert_eq!(rejected(r#"{"id":"a"}"#), (field("status"), Rule::Required));
        assert_eq!(
            rejected(r#"{"id":"a","status":["x"]}"#),
            (field("status"), Rule::InvalidType)
        );
    }

    #[test]
    fn timestamps_with_offsets_and_nanoseconds() {
        let e =
            parse(r#"{"id":"a","status":"s","timestamp":"2024-05-01T13:00:00.123456789+01:00"}"#)
                .unwrap();
        assert_eq!(
            e.timestamp, "2024-05-01T13:00:00.123456789+01:00",
            "kept as written"
        );
        assert_eq!(e.event_time.to_rfc3339(), "2024-05-01T12:00:00.123456789Z");
        assert!(parse(r#"{"id":"a","status":"s","timestamp":null}"#).is_ok());
        for bad in [
            r#""2024-05-01T12:00:00""#,
            r#""2024-05-01""#,
            r#""tomorrow""#,
            r#""""#,
        ] {
            let json = format!(r#"{{"id":"a","status":"s","timestamp":{bad}}}"#);
            assert_eq!(
                rejected(&json),
                (field("timestamp"), Rule::InvalidTimestamp),
                "{bad}"
            );
        }
        assert_eq!(
            rejected(r#"{"id":"a","status":"s","timestamp":1714564800}"#),
            (field("timestamp"), Rule::InvalidType)
        );
    }

    #[test]
    fn future_skew_at_and_past_the_edge() {
        // now is 12:00:00Z; the default skew is 5 minutes.
        assert!(parse(r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:05:00Z"}"#).is_ok());
        assert!(
            parse(r#"{"id":"a","status":"s","timestamp":"2024-05-01T14:05:00+02:00"}"#).is_ok()
        );
        assert_eq!(
            rejected(r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:05:00.000000001Z"}"#),
            (field("timestamp"), Rule::FutureTimestamp)
        );
        assert_eq!(
            rejected(r#"{"id":"a","status":"s","timestamp":"2024-05-01T07:05:01-05:00"}"#),
            (field("timestamp"), Rule::FutureTimestamp)
        );
        // The past is always fine: late events are exactly what versions are for.
        assert!(parse(r#"{"id":"a","status":"s","timestamp":"1999-01-01T00:00:00Z"}"#).is_ok());
        let strict = Limits {
            max_future_skew: Duration::ZERO,
            ..Limits::default()
        };
        assert!(parse_with(
            r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:00:00Z"}"#,
            &strict
        )
        .is_ok());
        assert!(parse_with(
            r#"{"id":"a","status":"s","timestamp":"2024-05-01T12:00:00.001Z"}"#,
            &strict
        )
        .is_err());
    }

    #[test]
    fn data_must_be_a_bounded_object_and_is_compacted() {
        let e = parse(r#"{"id":"a","status":"s","data":{ "k" : [1, 2, "a b"] }}"#).unwrap();
        assert_eq!(e.data.unwrap().get(), r#"{"k":[1,2,"a b"]}"#);
        assert!(parse(r#"{"id":"a","status":"s","data":null}"#)
            .unwrap()
            .data
            .is_none());
        for bad in ["[1]", "\"x\"", "3", "true"] {
            let json = format!(r#"{{"id":"a","status":"s","data":{bad}}}"#);
            assert_eq!(rejected(&json), (field("data"), Rule::InvalidType), "{bad}");
        }
        let limits = Limits {
            max_data_bytes: 16,
            ..Limits::default()
        };
        // {"k":"0123456789"} is 18 bytes; {"k":"01234567"} is 16.
        assert!(parse_with(
            r#"{"id":"a","status":"s","data":{"k": "01234567"}}"#,
            &limits
        )
        .is_ok());
        let e = parse_with(
            r#"{"id":"a","status":"s","data":{"k":"012345678"}}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!((e.field.as_deref(), e.rule), (Some("data"), Rule::TooLarge));
        const { assert!(DEFAULT_MAX_DATA_BYTES <= MAX_DATA_BYTES_CEILING) };
    }

    #[test]
    fn compaction_leaves_strings_alone() {
        assert_eq!(
            compact_json(r#"{ "a b" : "c \" d\\" , "e":[ 1 ,2 ] }"#),
            r#"{"a b":"c \" d\\","e":[1,2]}"#
        );
    }

    #[test]
    fn unknown_fields_and_non_objects_are_named() {
        assert_eq!(
            rejected(r#"{"id":"a","status":"s","timestmp":"x"}"#),
            (field("timestmp"), Rule::UnknownField)
        );
        assert_eq!(rejected(r#"[1,2]"#), (None, Rule::InvalidType));
        assert_eq!(rejected(r#""event""#), (None, Rule::InvalidType));
    }

    #[test]
    fn batch_envelope_and_per_event_fields() {
        let batch = |json: &str| parse_batch(json, now(), &Limits::default());
        let one = format!(r#"{{"events":[{}]}}"#, r#"{"id":"a","status":"s"}"#);
        assert_eq!(batch(&one).unwrap().len(), 1);
        let event = r#"{"id":"a","status":"s"}"#;
        let at = format!(
            r#"{{"events":[{}]}}"#,
            vec![event; MAX_BATCH_EVENTS].join(",")
        );
        assert_eq!(batch(&at).unwrap().len(), MAX_BATCH_EVENTS);
        let past = format!(
            r#"{{"events":[{}]}}"#,
            vec![event; MAX_BATCH_EVENTS + 1].join(",")
        );
        assert_eq!(batch(&past).unwrap_err().rule, Rule::BatchSize);
        assert_eq!(batch(r#"{"events":[]}"#).unwrap_err().rule, Rule::BatchSize);
        assert_eq!(batch(r#"{}"#).unwrap_err().rule, Rule::Required);
        assert_eq!(
            batch(r#"{"events":{}}"#).unwrap_err().rule,
            Rule::InvalidType
        );
        assert_eq!(
            batch(r#"{"events":[],"more":1}"#).unwrap_err().rule,
            Rule::UnknownField
        );
        assert_eq!(
            batch(r#"{"events":[}"#).unwrap_err().rule,
            Rule::MalformedJson
        );
        let mixed =
            batch(r#"{"events":[{"id":"a","status":"s"},{"id":"b","status":""},5]}"#).unwrap();
        assert!(mixed[0].is_ok());
        let e = mixed[1].clone().unwrap_err();
        assert_eq!(
            (e.field.as_deref(), e.rule),
            (Some("events[1].status"), Rule::Empty)
        );
        let e = mixed[2].clone().unwrap_err();
        assert_eq!(
            (e.field.as_deref(), e.rule),
            (Some("events[2]"), Rule::InvalidType)
        );
    }

    #[test]
    fn stream_records_round_trip_and_poison_is_explained() {
        let e = parse(
            r#"{"id":"a","status":"s","timestamp":"2024-05-01T11:00:00+02:00","data":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(decode_record(&e.encode(), &Limits::default()).unwrap(), e);
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
        let future = br#"{"id":"a","status":"s","timestamp":"2024-05-01T11:06:00Z","received_at":"2024-05-01T11:00:00Z"}"#;
        assert!(matches!(
            decode_record(future, &Limits::default()),
            Err(PoisonReason::Invalid(_))
        ));
    }
}
