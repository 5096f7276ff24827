//! Adapters on an embedded storage engine, for `tidemark serve --data-dir`: what must outlive a
//! crash of the process, on disk in one file per kind.
//!
//! The engine is redb (pure Rust, one file, ACID transactions on a copy-on-write B-tree, each
//! commit made durable with fsync before it returns). Why it and not another engine:
//! `docs/serve.md#what-serve-keeps` and BENCHMARKS.md ("serve --data-dir").
//!
//! [`DiskLog`] is the stream: a 202 is answered only once the event's record is committed to
//! it, so no acknowledged event can be lost by a crash, and its sequence numbers continue from
//! the file, so none is ever given twice. [`DiskTables`] are STATUS, OPLOG, HISTORY, DEADLETTER
//! and the status view ([`on_disk`]), so a restart resumes every consumer from its own
//! checkpoint and replays nothing.

mod codec;
mod keys;
mod log;
mod records;
mod reset;
mod tables;
mod view;
mod worker;
mod writer;

pub use log::DiskLog;
pub use reset::DiskView;
pub use tables::DiskTables;

use std::sync::Arc;

use super::Adapters;

/// Why a file could not be opened; for one another process holds, what to do about it.
fn open_failed(path: &std::path::Path, e: redb::DatabaseError) -> String {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => format!(
            "{} is in use by another process (another `tidemark serve` on this data \
             directory?): stop it, or give this one another --data-dir",
            path.display()
        ),
        e => format!("{}: {e}", path.display()),
    }
}

/// An engine error as the user needs it. After a write that failed (a full disk) redb takes no
/// write until the file is opened again; its own words ("close and re-open the database") mean
/// nothing to someone running `serve`.
fn explain(e: impl Into<redb::Error>) -> String {
    match e.into() {
        redb::Error::PreviousIo => "an earlier write to this file failed (a full disk?) and no \
            write is taken until serve is restarted: make room, then restart it (nothing \
            answered 202 is lost)"
            .into(),
        e => e.to_string(),
    }
}

/// `adapters` with every table and the idempotency keys on `tables`: the stream, the archive
/// and the change feed stay where `adapters` has them.
pub fn on_disk(adapters: Adapters, tables: Arc<DiskTables>) -> Adapters {
    adapters
        .with_status_writer(tables.clone())
        .with_status_reader(tables.clone())
        .with_status_scanner(tables.clone())
        .with_oplog(tables.clone())
        .with_history_writer(tables.clone())
        .with_history_reader(tables.clone())
        .with_dead_letter_writer(tables.clone())
        .with_dead_letter_reader(tables.clone())
        .with_status_view_writer(tables.clone())
        .with_status_view_reader(tables.clone())
        .with_status_view_scanner(tables.clone())
        .with_idempotency_store(tables)
}
