//! Reading events from API input: one event (`POST /events`) or a batch envelope
//! (`POST /events/batch`), with errors that name the JSON path of the offending field.

use std::borrow::Cow;
use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::time::Duration;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::event::Event;
use super::idempotency::validate_idempotency_key;
use super::limits::{Limits, MAX_BATCH_EVENTS};
use super::rules::{
    is_null, parse_timestamp, set_once, validate_data, validate_id, validate_status, FieldError,
    Rule,
};
use super::time::EventTime;

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

/// An object's members in the order sent, duplicates kept so they can be refused by name (a
/// map would silently keep the last one).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

fn string_field(raw: &RawValue, field: &str) -> Result<String, FieldError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| {
        // Valid JSON that is a string yet not a Rust string can only hold a lone surrogate.
        if raw.get().starts_with('"') {
            FieldError::new(
                field,
                Rule::InvalidString,
                format!(
                    "{field} holds a \\u escape that is not a Unicode character (a lone surrogate)"
                ),
            )
        } else {
            FieldError::new(
                field,
                Rule::InvalidType,
                format!("{field} must be a string"),
            )
        }
    })
}

/// Parses and validates one event from API input. `received_at` is the API's receive time: the
/// default timestamp and the reference for the future-skew rule. `prefix` names the event inside
/// a batch (`events[3]`) so errors point at the right field. A single event takes its
/// idempotency key from the `Idempotency-Key` header, so the body field is refused.
pub fn parse_event(
    raw: &RawValue,
    prefix: Option<&str>,
    received_at: EventTime,
    limits: &Limits,
) -> Result<Event, FieldError> {
    let (event, key) = parse_event_at(raw, prefix, received_at, received_at, limits)?;
    if key.is_some() {
        let field = FieldPath(prefix).of(IDEMPOTENCY_KEY_FIELD);
        return Err(FieldError::new(
            &field,
            Rule::UnknownField,
            format!("{field} belongs to batch items; send a single event's key as the Idempotency-Key header"),
        ));
    }
    Ok(event)
}

/// A batch item's optional idempotency key.
pub const IDEMPOTENCY_KEY_FIELD: &str = "idempotency_key";

/// One valid item of a batch: its event, its idempotency key, and its JSON text as sent (what
/// the key's fingerprint covers).
#[derive(Clone, Debug)]
pub struct BatchItem<'a> {
    pub event: Event,
    pub idempotency_key: Option<String>,
    pub raw: &'a RawValue,
}

/// [`parse_event`] where an event without a timestamp gets `default_time` instead of the
/// receive time (a batch item's position, see [`parse_batch`]), and its idempotency key.
fn parse_event_at(
    raw: &RawValue,
    prefix: Option<&str>,
    received_at: EventTime,
    default_time: EventTime,
    limits: &Limits,
) -> Result<(Event, Option<String>), FieldError> {
    let at = FieldPath(prefix);
    let Members(members) =
        serde_json::from_str(raw.get()).map_err(|e| json_error(&e, at, "a JSON object"))?;

    let mut id = None;
    let mut status = None;
    let mut timestamp = None;
    let mut data = None;
    let mut idempotency_key = None;
    for (name, value) in members {
        let slot = match name.as_ref() {
            "id" => &mut id,
            "status" => &mut status,
            "timestamp" => &mut timestamp,
            "data" => &mut data,
            IDEMPOTENCY_KEY_FIELD => &mut idempotency_key,
            other => {
                return Err(FieldError::new(
                    at.of(other),
                    Rule::UnknownField,
                    format!(
                        "{} is not a field of an event (id, status, timestamp, data; idempotency_key in a batch)",
                        at.of(other)
                    ),
                ))
            }
        };
        set_once(slot, value, || at.of(&name))?;
    }
    // An explicit null is the same as leaving an optional field out.
    let timestamp = timestamp.filter(|raw| !is_null(raw));
    let data = data.filter(|raw| !is_null(raw));
    let idempotency_key = idempotency_key
        .filter(|raw| !is_null(raw))
        .map(|raw| {
            let field = at.of(IDEMPOTENCY_KEY_FIELD);
            let key = string_field(raw, &field)?;
            validate_idempotency_key(&key, &field)?;
            Ok(key)
        })
        .transpose()?;

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
        None => (default_time.to_rfc3339(), default_time),
    };
    let data = data
        .map(|raw| validate_data(raw, &at.of("data"), limits))
        .transpose()?;

    Ok((
        Event {
            id,
            status,
            timestamp,
            event_time,
            data,
            received_at,
        },
        idempotency_key,
    ))
}

/// Parses `{"events":[…]}`: the envelope must be valid, with 1–500 events; each event is then
/// validated on its own so one bad event does not reject the others. Events without a timestamp
/// keep their request order: the i-th gets the receive time plus i nanoseconds, so their versions
/// differ by event time and the sequence numbers (which a retried PutRecords entry changes) never
/// decide between them. An idempotency key used by an earlier item of the same batch is refused.
pub fn parse_batch<'a>(
    body: &'a str,
    received_at: EventTime,
    limits: &Limits,
) -> Result<Vec<Result<BatchItem<'a>, FieldError>>, FieldError> {
    let Members(members) = serde_json::from_str(body)
        .map_err(|e| json_error(&e, FieldPath(None), "a JSON object with an events array"))?;
    let mut events = None;
    for (name, value) in members {
        if name != "events" {
            return Err(FieldError::new(
                name.as_ref(),
                Rule::UnknownField,
                format!("{name} is not a field of a batch: its only field is events"),
            ));
        }
        set_once(&mut events, value, || "events".to_owned())?;
    }
    let events =
        events.ok_or_else(|| FieldError::new("events", Rule::Required, "events is required"))?;
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
    let mut first_use: HashMap<String, usize> = HashMap::new();
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let item = parse_batch_item(
                raw,
                i,
                received_at,
                batch_default_time(received_at, i),
                limits,
            )?;
            if let Some(key) = &item.idempotency_key {
                match first_use.entry(key.clone()) {
                    Entry::Occupied(earlier) => {
                        let field = format!("events[{i}].{IDEMPOTENCY_KEY_FIELD}");
                        return Err(FieldError::new(
                            &field,
                            Rule::DuplicateKey,
                            format!(
                                "{field} is the key of events[{}] too; each item needs its own",
                                earlier.get()
                            ),
                        ));
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
            }
            Ok(item)
        })
        .collect())
}

/// Request order, whatever PutRecords retries do to sequence numbers: the i-th event without a
/// timestamp is i nanoseconds after the receive time.
pub fn batch_default_time(received_at: EventTime, index: usize) -> EventTime {
    received_at.saturating_add(Duration::from_nanos(index as u64))
}

/// The `index`-th item of a batch, stamped with the given times (a request that took over an
/// idempotency key restamps its item with the first attempt's).
pub fn parse_batch_item<'a>(
    raw: &'a RawValue,
    index: usize,
    received_at: EventTime,
    default_time: EventTime,
    limits: &Limits,
) -> Result<BatchItem<'a>, FieldError> {
    let (event, idempotency_key) = parse_event_at(
        raw,
        Some(&format!("events[{index}]")),
        received_at,
        default_time,
        limits,
    )?;
    Ok(BatchItem {
        event,
        idempotency_key,
        raw,
    })
}
