//! Adapters behind the ports, and [`Adapters`], the set every entry point builds.

mod aws_backend;
pub mod bootstrap;
#[cfg(feature = "disk")]
pub mod disk;
pub mod dynamodb;
pub mod eventbridge;
pub mod faults;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod kinesis;
#[cfg(feature = "lambda-http")]
pub mod lambda_http;
pub mod memory;
pub mod metered;
pub mod mirror;
mod no_history;
pub mod s3;
pub mod sdk;
mod set;

pub use set::{Adapters, Oplog};
