//! Tidemark: a trustworthy latest-state view of high-volume status events on Kinesis and
//! DynamoDB. See the repository README for the guarantees.
//!
//! - [`domain`]: events, versions, validation and batch decisions, free of AWS types.
//! - [`ports`]: the traits the pipeline needs; [`adapters`]: AWS, in-memory and fault-injecting.
//! - [`api`]: the HTTP contract; [`processor`]: one Kinesis batch; [`consumer`]: what a consumer
//!   of the stream answers and the checkpoint its loop writes; [`esm`]: the event source mapping
//!   emulator used by `tidemark serve`; [`replay`]: re-applying a given-up range; [`rebuild`]:
//!   STATUS again from the stream; [`verify`]: comparing two STATUS tables.

pub mod adapters;
pub mod api;
pub mod archiver;
pub mod config;
pub mod consumer;
pub mod domain;
pub mod esm;
pub mod ports;
pub mod processor;
pub mod publish;
pub mod rebuild;
pub mod registry;
pub mod replay;
pub mod telemetry;
pub mod verify;
pub mod views;
