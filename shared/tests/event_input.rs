//! Reading events from API input, at and past every bound: ids, statuses, timestamps with offsets
//! and the future-skew rule, `data`, unknown fields, and the batch envelope.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::time::Duration;

use serde_json::value::RawValue;
use tidemark::domain::limits::{
    Limits, DEFAULT_MAX_DATA_BYTES, MAX_BATCH_EVENTS, MAX_DATA_BYTES_CEILING, MAX_ID_CHARS,
    MAX_STATUS_CHARS,
};
use tidemark::domain::rules::compact_json;
use tidemark::domain::{parse_batch, parse_event, BatchItem, Event, EventTime, FieldError, Rule};

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
    let e = parse(r#"{"id":"a","status":"s","timestamp":"2024-05-01T13:00:00.123456789+01:00"}"#)
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
    assert!(parse(r#"{"id":"a","status":"s","timestamp":"2024-05-01T14:05:00+02:00"}"#).is_ok());
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
    fn batch(json: &str) -> Result<Vec<Result<BatchItem<'_>, FieldError>>, FieldError> {
        parse_batch(json, now(), &Limits::default())
    }
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
    let mixed = batch(r#"{"events":[{"id":"a","status":"s"},{"id":"b","status":""},5]}"#).unwrap();
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

/// A batch item may carry an idempotency key (bounded, visible ASCII, once per batch); a single
/// event may not, since its key is the `Idempotency-Key` header.
#[test]
fn idempotency_keys_belong_to_batch_items() {
    let parsed = parse_batch(
        r#"{"events":[
            {"id":"a","status":"s","idempotency_key":"k-1"},
            {"id":"b","status":"s","idempotency_key":null},
            {"id":"c","status":"s","idempotency_key":"k-1"},
            {"id":"d","status":"s","idempotency_key":"has space"},
            {"id":"e","status":"s","idempotency_key":7}
        ]}"#,
        now(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        parsed[0].as_ref().unwrap().idempotency_key.as_deref(),
        Some("k-1")
    );
    assert_eq!(parsed[1].as_ref().unwrap().idempotency_key, None);
    let refused = |i: usize| {
        let e = parsed[i].as_ref().unwrap_err();
        (e.field.clone().unwrap(), e.rule)
    };
    assert_eq!(
        refused(2),
        ("events[2].idempotency_key".into(), Rule::DuplicateKey)
    );
    assert_eq!(
        refused(3),
        ("events[3].idempotency_key".into(), Rule::InvalidCharacter)
    );
    assert_eq!(
        refused(4),
        ("events[4].idempotency_key".into(), Rule::InvalidType)
    );
    let single: &RawValue =
        serde_json::from_str(r#"{"id":"a","status":"s","idempotency_key":"k"}"#).unwrap();
    let e = parse_event(single, None, now(), &Limits::default()).unwrap_err();
    assert_eq!(
        (e.field.as_deref(), e.rule),
        (Some("idempotency_key"), Rule::UnknownField)
    );
    assert!(e.message.contains("Idempotency-Key"), "{}", e.message);
}
