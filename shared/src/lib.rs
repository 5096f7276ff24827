//! Tidemark: a trustworthy latest-state view of high-volume status events on Kinesis and
//! DynamoDB. See the repository README for the guarantees.
//!
//! - [`domain`]: events, versions, validation and batch decisions, free of AWS types.
//! - [`ports`]: the traits the pipeline needs; [`adapters`]: AWS, in-memory and fault-injecting.
//! - [`api`]: the HTTP contract (routes, requests, answers), however requests arrive.
//! - [`consumers`]: what a consumer of the stream answers and the checkpoint its loop writes;
//!   the consumers themselves (the processor, the archiver, the views).
//! - [`run`]: running them: the [`run::registry`] of the consumers a stack runs, the event
//!   source mapping emulator of `tidemark serve`, replay of a given-up range, rebuild from the
//!   archive and the stream, verify.

pub mod adapters;
pub mod api;
pub mod config;
pub mod consumers;
pub mod domain;
pub mod ports;
pub mod publish;
pub mod run;
pub mod telemetry;
