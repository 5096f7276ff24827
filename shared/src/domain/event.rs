//! The event model: what an accepted event is, whichever way it came in (the HTTP API, a stream
//! record). Its rules are in [`super::rules`], reading it from API input in [`super::input`], and
//! its bytes on the stream in [`super::record`].

use serde_json::value::RawValue;

use super::time::EventTime;

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
