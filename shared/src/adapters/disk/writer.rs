//! The tables' one writer: every write is queued to a thread, and the writes queued while a
//! transaction is under way share the next one (group commit). redb runs one write transaction
//! at a time and each costs a commit, so a transaction per row held the processor to about
//! 10,000 rows/s on this machine (BENCHMARKS.md); shared, the 32 rows a batch has in flight and
//! the other consumers' writes cost one commit together.
//!
//! The writes of a group run in the order queued, each seeing those before it, exactly as if
//! each were its own transaction. A write whose body fails with a decision (a refused item, a
//! corrupt row) is answered with it and the others commit; an engine error in any body fails
//! the whole group uncommitted, since that body may have stopped halfway.
//!
//! A group is committed with fsync when one of its writes asks for it (a key's answer) or when
//! the last such commit is [`DURABLE_EVERY`] old; the others are not, and become durable with
//! the next one that is, or on their own once writes stop. A durable commit writes every page
//! changed since the last one, and one per checkpoint was most of the writer's time
//! (BENCHMARKS.md); what a crash loses of the tables is then at most that long of writes, which
//! the consumers apply again from the log (`tables.rs` says why that is sound).

use std::path::PathBuf;
use std::sync::Arc;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::tables::{failed, WriteError};
use super::worker::Worker;
use crate::ports::StoreError;

/// Writes one transaction takes at most, so one commit's latency stays bounded under load.
const MAX_GROUP: usize = 256;
/// Writes queued before a writer waits for room (backpressure).
const QUEUE: usize = 4096;
/// How old the last durable commit may be before the next group is made durable: bounds what a
/// crash makes the consumers apply again, and the pages held in memory until then.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What a write does once its transaction's fate is known: the commit's error, if it failed.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write's body: run in the group's transaction (or `None`: there is none), it returns how to
/// answer once the group is committed, and whether it failed the engine.
type Body = Box<dyn FnOnce(Option<&WriteTransaction>) -> (Finish, bool) + Send>;

struct Queued {
    body: Body,
    durable: bool,
}

pub(super) struct Writer {
    worker: Worker<Queued>,
    path: PathBuf,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>, path: PathBuf) -> Result<Self, String> {
        let thread_path = path.clone();
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| failed(&path, e))?;
        let worker = Worker::start("tidemark-tables", QUEUE, move |queue| {
            run(&db, &thread_path, queue, timer)
        })
        .map_err(|e| failed(&path, e))?;
        Ok(Self { worker, path })
    }

    /// Runs `body` in the next group's transaction and answers once it is committed (with
    /// fsync when `durable`); `after` runs then, on the writer thread, in commit order.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        durable: bool,
        body: impl FnOnce(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
        after: impl FnOnce(&T) + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let path = self.path.clone();
        let body: Body = Box::new(move |txn| {
            let outcome = txn.map(body);
            let engine_failed = matches!(outcome, Some(Err(WriteError::Engine(_))));
            let finish: Finish = Box::new(move |commit| {
                let answer = match (outcome, commit) {
                    (Some(Err(WriteError::Store(e))), _) => Err(e),
                    (Some(Err(WriteError::Engine(e))), _) => {
                        Err(StoreError::Unavailable(failed(&path, super::explain(e))))
                    }
                    (_, Err(e)) => Err(e),
                    (Some(Ok(value)), Ok(())) => {
                        after(&value);
                        Ok(value)
                    }
                    (None, Ok(())) => Err(StoreError::Unavailable(failed(&path, "no transaction"))),
                };
                let _ = reply.send(answer);
            });
            (finish, engine_failed)
        });
        let gone = || StoreError::Unavailable(failed(&self.path, "the tables are closed"));
        self.worker
            .send(Queued { body, durable })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// `timer`: this thread's own runtime, only to wait for the queue with a deadline.
fn run(
    db: &Database,
    path: &std::path::Path,
    mut queue: mpsc::Receiver<Queued>,
    timer: tokio::runtime::Runtime,
) {
    let mut last_durable = std::time::Instant::now();
    // Whether a commit since the last durable one was not made durable.
    let mut behind = false;
    loop {
        let first = if behind {
            // Writes stopped after a commit that was not made durable: it is made durable on its
            // own once it is DURABLE_EVERY old, so a crash while idle leaves the consumers
            // nothing to apply again and a restart goes straight to listening.
            let left = DURABLE_EVERY.saturating_sub(last_durable.elapsed());
            // The timeout is made inside `block_on`: its timer belongs to that runtime.
            match timer.block_on(async { tokio::time::timeout(left, queue.recv()).await }) {
                Ok(Some(write)) => write,
                Ok(None) => break,
                Err(_) => {
                    // Tried once per period, whatever its outcome: a failing disk is not retried
                    // in a busy loop, and the next write reports its error.
                    behind = !commit(db, path, Vec::new(), true);
                    last_durable = std::time::Instant::now();
                    continue;
                }
            }
        } else {
            match queue.blocking_recv() {
                Some(write) => write,
                None => break,
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        let durable =
            group.iter().any(|write| write.durable) || last_durable.elapsed() >= DURABLE_EVERY;
        let committed = commit(db, path, group, durable);
        if committed && durable {
            last_durable = std::time::Instant::now();
            behind = false;
        } else if committed {
            behind = true;
        }
    }
    if behind {
        // A graceful stop leaves every commit durable.
        commit(db, path, Vec::new(), true);
    }
}

/// One transaction for the whole group; every write is answered after it. Whether it was
/// committed.
fn commit(db: &Database, path: &std::path::Path, group: Vec<Queued>, durable: bool) -> bool {
    let error = |e: &dyn std::fmt::Display| StoreError::Unavailable(failed(path, e));
    let txn = db
        .begin_write()
        .map_err(super::explain)
        .and_then(|mut txn| {
            if durable {
                // The allocator's state saved with the commit, as in the log (log.rs).
                txn.set_quick_repair(true);
            } else {
                txn.set_durability(Durability::None)
                    .map_err(super::explain)?;
            }
            Ok(txn)
        });
    let txn = match txn {
        Ok(txn) => txn,
        Err(e) => {
            for write in group {
                let (finish, _) = (write.body)(None);
                finish(Err(error(&e)));
            }
            return false;
        }
    };
    let mut finishes = Vec::with_capacity(group.len());
    let mut engine_failed = false;
    for write in group {
        let (finish, failed_here) = (write.body)(Some(&txn));
        engine_failed |= failed_here;
        finishes.push(finish);
    }
    let committed = if engine_failed {
        // Dropped uncommitted: nothing of the group is written.
        Err(error(
            &"a write failed halfway; nothing of its group was written",
        ))
    } else {
        txn.commit().map_err(|e| error(&super::explain(e)))
    };
    let ok = committed.is_ok();
    for finish in finishes {
        finish(committed.clone());
    }
    ok
}
