//! The domain: events, versions, validation and per-batch decisions. No AWS types here, so all
//! of it is unit- and property-tested without any server.
//!
//! - [`event`]: the model; [`rules`]: the rules each field obeys (`data` also obeys those in
//!   `data.rs`: readable back as sent); [`limits`]: every bound, named.
//! - [`input`]: reading events from API input; [`record`]: their bytes on the stream.
//! - [`version`], [`sequence`], [`time`]: what "newest" means; [`batch`]: coalescing and settling.
//! - [`archive`]: the archive's objects (every record, kept past the stream's retention).
//! - [`consistency`]: reading one's own write; [`idempotency`]: answering a retried request once.

pub mod archive;
pub mod batch;
pub mod consistency;
mod data;
pub mod digest;
pub mod event;
pub mod idempotency;
pub mod input;
pub mod limits;
pub(crate) mod opaque;
pub mod partition;
pub mod progress;
pub mod record;
pub mod rules;
pub mod sequence;
pub mod snapshot;
pub mod status_view;
pub mod time;
pub mod version;

pub use batch::{coalesce, settle, Coalesced, Settlement, VersionedEvent};
pub use event::Event;
pub use input::{parse_batch, parse_event, BatchItem};
pub use limits::Limits;
pub use record::{decode_log_record, decode_record, PoisonReason};
pub use rules::{FieldError, Rule};
pub use sequence::SequenceNumber;
pub use time::{Clock, EventTime, FixedClock, SystemClock};
pub use version::{Version, VersionKey};
