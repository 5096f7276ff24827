//! The rules every event obeys, at ingest and again when the processor reads it back: which rule
//! a rejected field broke, and the checks themselves. Each bound is a named limit in
//! [`super::limits`].

use std::fmt;

use serde_json::value::RawValue;

use super::data::check_data_readable;
use super::limits::{
    Limits, MAX_ID_CHARS, MAX_STATUS_CHARS, MAX_TIMESTAMP_CHARS, MAX_TIMESTAMP_FRACTION_DIGITS,
};
use super::time::EventTime;

/// Which rule a rejected field broke. The `code` is what clients see in the error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray)]
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
    DuplicateKey,
    TooDeep,
    InvalidNumber,
    InvalidString,
    OutOfRange,
    InvalidToken,
    /// A character outside what the field allows (an idempotency key: visible ASCII).
    InvalidCharacter,
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
            Rule::DuplicateKey => "duplicate_key",
            Rule::TooDeep => "too_deep",
            Rule::InvalidNumber => "invalid_number",
            Rule::InvalidString => "invalid_string",
            Rule::OutOfRange => "out_of_range",
            Rule::InvalidToken => "invalid_token",
            Rule::InvalidCharacter => "invalid_character",
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

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Fills `slot` with `value`, refusing a second value for the same field (`field` names it):
/// JSON object keys and query parameters alike, where a repeat would otherwise silently win.
pub(crate) fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    field: impl FnOnce() -> String,
) -> Result<(), FieldError> {
    if slot.replace(value).is_some() {
        let field = field();
        return Err(FieldError::new(
            &field,
            Rule::DuplicateKey,
            format!("{field} appears twice; send it once"),
        ));
    }
    Ok(())
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

pub(crate) fn validate_status(status: &str, field: &str) -> Result<(), FieldError> {
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

pub(crate) fn parse_timestamp(
    text: &str,
    field: &str,
    reference: EventTime,
    limits: &Limits,
) -> Result<EventTime, FieldError> {
    if text.len() > MAX_TIMESTAMP_CHARS {
        return Err(FieldError::new(
            field,
            Rule::TooLong,
            format!("{field} must be at most {MAX_TIMESTAMP_CHARS} characters (RFC 3339 with at most nanoseconds)"),
        ));
    }
    let invalid = || {
        FieldError::new(
            field,
            Rule::InvalidTimestamp,
            format!(
                "{field} must be an RFC 3339 date-time with an offset, e.g. 2024-05-01T12:00:00.5+02:00 \
                 (date and time separated by T, at most {MAX_TIMESTAMP_FRACTION_DIGITS} fraction digits)"
            ),
        )
    };
    // The parser accepts any byte between date and time; RFC 3339 allows only T (or t).
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(invalid());
    }
    let fraction_digits = text
        .get(19..)
        .and_then(|rest| rest.strip_prefix('.'))
        .map_or(0, |rest| {
            rest.bytes().take_while(u8::is_ascii_digit).count()
        });
    if fraction_digits > MAX_TIMESTAMP_FRACTION_DIGITS {
        return Err(invalid());
    }
    let event_time = EventTime::parse_rfc3339(text).ok_or_else(invalid)?;
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

/// Checks `data` is a JSON object within the size bound that can be read back as sent (see
/// `data.rs`), and returns it compacted.
pub(crate) fn validate_data(
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
    // Already compact (always so for records Tidemark wrote): keep it without copying.
    let compact = if raw
        .get()
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        let compact = compact_json(raw.get());
        check_data_size(compact.len(), field, limits)?;
        Some(compact)
    } else {
        check_data_size(raw.get().len(), field, limits)?;
        None
    };
    // After the size check, so the walk is bounded by the size limit.
    check_data_readable(compact.as_deref().unwrap_or(raw.get()), field)?;
    match compact {
        None => Ok(raw.to_owned()),
        Some(compact) => RawValue::from_string(compact).map_err(|e| {
            FieldError::new(
                field,
                Rule::MalformedJson,
                format!("{field} is not valid JSON: {e}"),
            )
        }),
    }
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

/// A JSON `null`, which an optional field treats as absent.
pub(crate) fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}
