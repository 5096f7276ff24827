//! Runs of the consumers over the stream or the archive: [`registry`] lists the consumers a
//! stack runs and builds each from the adapters; [`esm`] drives them as Lambda's event source
//! mapping does (`tidemark serve`); [`replay`] re-applies a range the mapping gave up on;
//! [`rebuild`] builds a view again from the archive and the stream; [`verify`] compares two
//! STATUS tables.

pub mod esm;
pub mod rebuild;
pub mod registry;
pub mod replay;
pub mod shard_pages;
pub mod snapshot;
pub mod verify;
