//! [`Adapters`]: the one set of adapters every entry point builds — the three functions, `serve`,
//! replay, the benchmarks and the tests — on AWS or in memory, and the one way to build a
//! [`Processor`] from it.
//!
//! Each capability (a port) is built on first use and then shared. That is what keeps the
//! function binaries small: the ingest function asks only for the stream writer, so the
//! DynamoDB adapters' code is never linked into it, and the other two never link Kinesis.

use std::sync::{Arc, OnceLock};

use aws_config::SdkConfig;

use super::dynamodb::{
    DynamoCheckpointStore, DynamoDeadLetterStore, DynamoIdempotencyStore, DynamoStatusStore,
};
use super::kinesis::KinesisStream;
use super::memory::MemoryBackend;
use crate::config::ResourceNames;
use crate::domain::Clock;
use crate::ports::*;
use crate::processor::{Processor, ProcessorSettings};

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
}

#[derive(Clone)]
enum Backend {
    Aws(Arc<AwsBackend>),
    Memory(MemoryBackend),
}

/// One SDK client per service, built when the first adapter of that service is.
struct AwsBackend {
    sdk: SdkConfig,
    names: ResourceNames,
    kinesis: OnceLock<Arc<KinesisStream>>,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
}

impl AwsBackend {
    fn kinesis(&self) -> Arc<KinesisStream> {
        Arc::clone(self.kinesis.get_or_init(|| {
            Arc::new(KinesisStream::new(
                aws_sdk_kinesis::Client::new(&self.sdk),
                &self.names.stream,
            ))
        }))
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.dynamodb
            .get_or_init(|| aws_sdk_dynamodb::Client::new(&self.sdk))
            .clone()
    }

    fn status(&self) -> Arc<DynamoStatusStore> {
        Arc::new(DynamoStatusStore::new(
            self.dynamodb(),
            &self.names.status_table,
        ))
    }

    fn checkpoints(&self) -> Arc<DynamoCheckpointStore> {
        Arc::new(DynamoCheckpointStore::new(
            self.dynamodb(),
            &self.names.oplog_table,
        ))
    }

    fn dead_letters(&self) -> Arc<DynamoDeadLetterStore> {
        Arc::new(DynamoDeadLetterStore::new(
            self.dynamodb(),
            &self.names.deadletter_table,
        ))
    }

    fn idempotency(&self) -> Arc<DynamoIdempotencyStore> {
        Arc::new(DynamoIdempotencyStore::new(
            self.dynamodb(),
            &self.names.idempotency_table,
        ))
    }
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
        }
    }

    /// Kinesis and DynamoDB through the SDK, for the named stream and tables. Makes no network
    /// call; clients are built when first needed and shared by every invocation after that.
    pub fn aws(sdk: &SdkConfig, names: &ResourceNames) -> Self {
        Self::from_backend(Backend::Aws(Arc::new(AwsBackend {
            sdk: sdk.clone(),
            names: names.clone(),
            kinesis: OnceLock::new(),
            dynamodb: OnceLock::new(),
        })))
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
    capability!(checkpoint_writer, with_checkpoint_writer: CheckpointWriter,
        aws: |a| a.checkpoints(), memory: |m| m.checkpoints.clone());
    capability!(checkpoint_reader, with_checkpoint_reader: CheckpointReader,
        aws: |a| a.checkpoints(), memory: |m| m.checkpoints.clone());
    capability!(dead_letter_writer, with_dead_letter_writer: DeadLetterWriter,
        aws: |a| a.dead_letters(), memory: |m| m.dead_letters.clone());
    capability!(dead_letter_reader, with_dead_letter_reader: DeadLetterReader,
        aws: |a| a.dead_letters(), memory: |m| m.dead_letters.clone());
    capability!(idempotency_store, with_idempotency_store: IdempotencyStore,
        aws: |a| a.idempotency(), memory: |m| m.idempotency.clone());

    /// The STATUS projection over this set's STATUS and DEADLETTER writers.
    pub fn processor(&self, settings: ProcessorSettings, clock: Arc<dyn Clock>) -> Processor {
        Processor::new(
            self.status_writer(),
            self.dead_letter_writer(),
            settings,
            clock,
        )
    }
}
