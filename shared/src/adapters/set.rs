//! [`Adapters`]: the one set of adapters every entry point builds — the three functions, `serve`,
//! replay, the benchmarks and the tests — on AWS or in memory, and the one way to build a
//! [`Processor`] from it.
//!
//! Each capability (a port) is built on first use and then shared. That is what keeps the
//! function binaries small: the ingest function asks only for the stream writer, so the
//! DynamoDB adapters' code is never linked into it, and the other two never link Kinesis.

use std::sync::{Arc, OnceLock};

use aws_config::SdkConfig;

use super::aws_backend::AwsBackend;
use super::dynamodb::DynamoStatusStore;
use super::memory::{MemoryBackend, MemoryStream};
use super::mirror::{MirrorMarkedCheckpoints, MirroredStatusWriter};
use crate::api::query::QueryApi;
use crate::config::ResourceNames;
use crate::consumers::processor::{Processor, ProcessorSettings};
use crate::consumers::{Checkpoints, ConsumerCheckpoints};
use crate::domain::progress::ConsumerName;
use crate::domain::Clock;
use crate::ports::*;

/// The stream and the tables, as ports. Cloning is cheap and shares what is built.
#[derive(Clone)]
pub struct Adapters {
    backend: Backend,
    stream_writer: OnceLock<Arc<dyn StreamWriter>>,
    shard_reader: OnceLock<Arc<dyn ShardReader>>,
    status_writer: OnceLock<Arc<dyn StatusWriter>>,
    status_reader: OnceLock<Arc<dyn StatusReader>>,
    status_scanner: OnceLock<Arc<dyn StatusScanner>>,
    checkpoint_writer: OnceLock<Arc<dyn CheckpointWriter>>,
    checkpoint_reader: OnceLock<Arc<dyn CheckpointReader>>,
    dead_letter_writer: OnceLock<Arc<dyn DeadLetterWriter>>,
    dead_letter_reader: OnceLock<Arc<dyn DeadLetterReader>>,
    idempotency_store: OnceLock<Arc<dyn IdempotencyStore>>,
    archive_writer: OnceLock<Arc<dyn ArchiveWriter>>,
    archive_reader: OnceLock<Arc<dyn ArchiveReader>>,
    history_writer: OnceLock<Arc<dyn HistoryWriter>>,
    history_reader: OnceLock<Arc<dyn HistoryReader>>,
    status_view_writer: OnceLock<Arc<dyn StatusViewWriter>>,
    status_view_reader: OnceLock<Arc<dyn StatusViewReader>>,
    status_view_scanner: OnceLock<Arc<dyn StatusViewScanner>>,
    /// OPLOG in place of the backend's, for every consumer's checkpoints ([`Self::with_oplog`]).
    oplog: Option<Arc<dyn Oplog>>,
}

/// OPLOG, both halves: what each consumer's checkpoints are scoped over.
pub trait Oplog: CheckpointWriter + CheckpointReader {}

impl<T: CheckpointWriter + CheckpointReader + ?Sized> Oplog for T {}

#[derive(Clone)]
enum Backend {
    Aws(Arc<AwsBackend>),
    Memory(MemoryBackend),
}

fn scoped<T: CheckpointWriter + CheckpointReader + ?Sized + 'static>(
    oplog: Arc<T>,
    consumer: ConsumerName,
) -> Arc<ConsumerCheckpoints<Arc<T>>> {
    Arc::new(ConsumerCheckpoints::new(oplog, consumer))
}

/// An accessor per capability, and a `with_…` that replaces it (a fault-injecting wrapper, a
/// recording double) for everything built from the set afterwards.
macro_rules! capability {
    ($get:ident, $with:ident: $trait:ident, aws: |$aws:ident| $from_aws:expr, memory: |$mem:ident| $from_memory:expr) => {
        pub fn $get(&self) -> Arc<dyn $trait> {
            Arc::clone(self.$get.get_or_init(|| match &self.backend {
                Backend::Aws($aws) => $from_aws,
                Backend::Memory($mem) => $from_memory,
            }))
        }

        pub fn $with(mut self, adapter: Arc<dyn $trait>) -> Self {
            self.$get = OnceLock::from(adapter);
            self
        }
    };
}

impl Adapters {
    fn from_backend(backend: Backend) -> Self {
        Self {
            backend,
            stream_writer: OnceLock::new(),
            shard_reader: OnceLock::new(),
            status_writer: OnceLock::new(),
            status_reader: OnceLock::new(),
            status_scanner: OnceLock::new(),
            checkpoint_writer: OnceLock::new(),
            checkpoint_reader: OnceLock::new(),
            dead_letter_writer: OnceLock::new(),
            dead_letter_reader: OnceLock::new(),
            idempotency_store: OnceLock::new(),
            archive_writer: OnceLock::new(),
            archive_reader: OnceLock::new(),
            history_writer: OnceLock::new(),
            history_reader: OnceLock::new(),
            status_view_writer: OnceLock::new(),
            status_view_reader: OnceLock::new(),
            status_view_scanner: OnceLock::new(),
            oplog: None,
        }
    }

    /// Kinesis and DynamoDB through the SDK, for the named stream and tables. Makes no network
    /// call; clients are built when first needed and shared by every invocation after that.
    pub fn aws(sdk: &SdkConfig, names: &ResourceNames) -> Self {
        Self::from_backend(Backend::Aws(Arc::new(AwsBackend::new(sdk, names, None))))
    }

    /// A fresh in-memory stream of `shards` shards and empty tables.
    pub fn memory(shards: usize) -> Self {
        Self::in_memory(MemoryBackend::new(shards))
    }

    /// The in-memory stream and tables of `backend` (shared with its other clones).
    pub fn in_memory(backend: MemoryBackend) -> Self {
        Self::from_backend(Backend::Memory(backend))
    }

    /// The in-memory state behind this set, for tests and benchmarks to inspect; `None` on AWS.
    pub fn memory_backend(&self) -> Option<&MemoryBackend> {
        match &self.backend {
            Backend::Memory(memory) => Some(memory),
            Backend::Aws(_) => None,
        }
    }

    /// The in-memory stream, when it is the one this set reads: `None` on AWS and when another
    /// log (on disk, a Kafka topic, a wrapper) took its place, so that whoever trims the
    /// in-memory stream does nothing when nobody writes to it.
    pub fn memory_stream(&self) -> Option<Arc<MemoryStream>> {
        let memory = self.memory_backend()?;
        let reader = self.shard_reader();
        // Addresses only: the same object behind both pointers.
        std::ptr::addr_eq(Arc::as_ptr(&reader), Arc::as_ptr(&memory.stream))
            .then(|| memory.stream.clone())
    }

    capability!(stream_writer, with_stream_writer: StreamWriter,
        aws: |a| a.kinesis(), memory: |m| m.stream.clone());
    capability!(shard_reader, with_shard_reader: ShardReader,
        aws: |a| a.kinesis(), memory: |m| m.stream.clone());
    capability!(status_writer, with_status_writer: StatusWriter,
        aws: |a| a.status(), memory: |m| m.status.clone());
    capability!(status_reader, with_status_reader: StatusReader,
        aws: |a| a.status(), memory: |m| m.status.clone());
    capability!(status_scanner, with_status_scanner: StatusScanner,
        aws: |a| a.status(), memory: |m| m.status.clone());
    // The processor's OPLOG rows (every other consumer's: `checkpoints_of`).
    capability!(checkpoint_writer, with_checkpoint_writer: CheckpointWriter,
        aws: |a| scoped(a.checkpoints(), ConsumerName::PROCESSOR), memory: |m| scoped(m.checkpoints.clone(), ConsumerName::PROCESSOR));
    capability!(checkpoint_reader, with_checkpoint_reader: CheckpointReader,
        aws: |a| scoped(a.checkpoints(), ConsumerName::PROCESSOR), memory: |m| scoped(m.checkpoints.clone(), ConsumerName::PROCESSOR));

    /// The consumer `name`'s own rows of OPLOG, each consumer seeing only its own. The
    /// processor's are the `checkpoint_writer`/`checkpoint_reader` above, so a test that
    /// replaces those (faults) reaches every loop of the processor.
    pub fn checkpoints_of(&self, name: ConsumerName) -> Checkpoints {
        if name == ConsumerName::PROCESSOR {
            return Checkpoints {
                writer: self.checkpoint_writer(),
                reader: self.checkpoint_reader(),
            };
        }
        if let Some(oplog) = &self.oplog {
            let own = scoped(oplog.clone(), name);
            return Checkpoints {
                writer: own.clone(),
                reader: own,
            };
        }
        match &self.backend {
            Backend::Aws(a) => {
                let own = scoped(a.checkpoints(), name);
                Checkpoints {
                    writer: own.clone(),
                    reader: own,
                }
            }
            Backend::Memory(m) => {
                let own = scoped(m.checkpoints.clone(), name);
                Checkpoints {
                    writer: own.clone(),
                    reader: own,
                }
            }
        }
    }

    /// Every consumer's checkpoints in `oplog` instead of the backend's OPLOG (`serve
    /// --data-dir`: OPLOG on disk). Call before any checkpoint store is first used.
    pub fn with_oplog(mut self, oplog: Arc<dyn Oplog>) -> Self {
        let processor = scoped(oplog.clone(), ConsumerName::PROCESSOR);
        self.oplog = Some(oplog);
        self.with_checkpoint_writer(processor.clone())
            .with_checkpoint_reader(processor)
    }
    capability!(archive_writer, with_archive_writer: ArchiveWriter,
        aws: |a| a.archive(), memory: |m| m.archive.clone());
    capability!(archive_reader, with_archive_reader: ArchiveReader,
        aws: |a| a.archive(), memory: |m| m.archive.clone());
    capability!(history_writer, with_history_writer: HistoryWriter,
        aws: |a| a.history_writer(), memory: |m| m.history.clone());
    capability!(history_reader, with_history_reader: HistoryReader,
        aws: |a| a.history_reader(), memory: |m| m.history.clone());

    /// Whether this stack keeps per-id history (`HistoryEnabled`; always in memory).
    pub fn history_enabled(&self) -> bool {
        match &self.backend {
            Backend::Aws(aws) => aws.names.history_table.is_some(),
            Backend::Memory(_) => true,
        }
    }

    /// HISTORY items written from now on expire after `ttl` (DynamoDB TTL); `None` keeps them.
    /// Call before the history writer is first used.
    pub fn with_history_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        if let Backend::Aws(aws) = &self.backend {
            self.backend = Backend::Aws(Arc::new(AwsBackend::new(&aws.sdk, &aws.names, ttl)));
        }
        self
    }
    capability!(dead_letter_writer, with_dead_letter_writer: DeadLetterWriter,
        aws: |a| a.dead_letters(), memory: |m| m.dead_letters.clone());
    capability!(dead_letter_reader, with_dead_letter_reader: DeadLetterReader,
        aws: |a| a.dead_letters(), memory: |m| m.dead_letters.clone());
    capability!(status_view_writer, with_status_view_writer: StatusViewWriter,
        aws: |a| a.status_view(), memory: |m| m.status_view.clone());
    capability!(status_view_reader, with_status_view_reader: StatusViewReader,
        aws: |a| a.status_view(), memory: |m| m.status_view.clone());
    capability!(status_view_scanner, with_status_view_scanner: StatusViewScanner,
        aws: |a| a.status_view(), memory: |m| m.status_view.clone());
    capability!(idempotency_store, with_idempotency_store: IdempotencyStore,
        aws: |a| a.idempotency(), memory: |m| m.idempotency.clone());

    /// During a switch: every row to `mirror` first, then STATUS; checkpoints marked with
    /// `mirror_name` ([`super::mirror`]). Call before those writers are first used.
    pub fn mirroring_status(self, mirror: Arc<dyn StatusWriter>, mirror_name: &str) -> Self {
        let status = self.status_writer();
        let checkpoints = self.checkpoint_writer();
        self.with_status_writer(Arc::new(MirroredStatusWriter::new(mirror, status)))
            .with_checkpoint_writer(Arc::new(MirrorMarkedCheckpoints::new(
                checkpoints,
                mirror_name,
            )))
    }

    /// [`Self::mirroring_status`] into the DynamoDB table `table` (in memory: a fresh table).
    pub fn mirroring_status_table(self, table: &str) -> Self {
        let mirror: Arc<dyn StatusWriter> = match &self.backend {
            Backend::Aws(a) => Arc::new(DynamoStatusStore::new(a.dynamodb(), table)),
            Backend::Memory(_) => Arc::new(super::memory::MemoryStatusStore::default()),
        };
        self.mirroring_status(mirror, table)
    }

    /// The STATUS projection over this set's STATUS and DEADLETTER writers.
    pub fn processor(&self, settings: ProcessorSettings, clock: Arc<dyn Clock>) -> Processor {
        Processor::new(
            self.status_writer(),
            self.dead_letter_writer(),
            settings,
            clock,
        )
    }

    /// The query routes over this set's readers: STATUS, the processor's checkpoints, the
    /// stream's shards, HISTORY when the set keeps it (otherwise the route answers 501), and
    /// STATUS's change feed when it keeps one (in memory, [`MemoryBackend::with_change_feed`]).
    /// [`crate::run::registry::Registry::query_api`] adds every registered consumer's checkpoints
    /// and the views' routes.
    pub fn query_api(&self) -> QueryApi {
        let query = QueryApi::new(
            self.status_reader(),
            self.checkpoint_reader(),
            self.shard_reader(),
        );
        let query = match self.memory_backend().and_then(|m| m.status.change_feed()) {
            Some(feed) => query.with_change_feed(feed),
            None => query,
        };
        if self.history_enabled() {
            query.with_history(self.history_reader())
        } else {
            query
        }
    }
}
