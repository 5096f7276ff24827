//! The domain: events, versions, validation and per-batch decisions. No AWS types here, so all
//! of it is unit- and property-tested without any server.

pub mod batch;
pub mod event;
pub mod limits;
pub mod sequence;
pub mod time;
pub mod version;

pub use batch::{coalesce, settle, Coalesced, Settlement, VersionedEvent};
pub use event::{
    decode_record, parse_batch, parse_event, Event, FieldError, Limits, PoisonReason, Rule,
};
pub use sequence::SequenceNumber;
pub use time::{Clock, EventTime, FixedClock, SystemClock};
pub use version::{Version, VersionKey};
