//! The operator CLI's library: `tidemark serve` runs the whole pipeline in one process — the
//! ingest and query routes on one HTTP server, and the event source mapping emulator driving the
//! processor — on in-memory adapters or on the real AWS adapters against any endpoint.
//! The HTTP handling is the same [`tidemark::api::Api`] the Lambdas run.

pub mod bench;
pub mod bench_dynamodb;
pub mod coldstart;
pub mod cost;
pub mod serve;
pub mod smoke;
pub mod teardown;
