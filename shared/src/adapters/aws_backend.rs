//! The AWS side of [`super::Adapters`]: one SDK client per service, built when the first
//! adapter of that service is, and the adapters built on them.

use std::sync::{Arc, OnceLock};

use aws_config::SdkConfig;

use super::dynamodb::{
    DynamoCheckpointStore, DynamoDeadLetterStore, DynamoHistoryStore, DynamoIdempotencyStore,
    DynamoStatusStore, DynamoStatusView,
};
use super::kinesis::KinesisStream;
use super::no_history::NoHistory;
use super::s3::S3Archive;
use crate::config::ResourceNames;
use crate::ports::*;

/// One SDK client per service, built when the first adapter of that service is.
pub(super) struct AwsBackend {
    pub(super) sdk: SdkConfig,
    pub(super) names: ResourceNames,
    pub(super) kinesis: OnceLock<Arc<KinesisStream>>,
    pub(super) dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    pub(super) s3: OnceLock<aws_sdk_s3::Client>,
    pub(super) history_ttl: Option<std::time::Duration>,
}

impl AwsBackend {
    pub(super) fn new(
        sdk: &SdkConfig,
        names: &ResourceNames,
        history_ttl: Option<std::time::Duration>,
    ) -> Self {
        Self {
            sdk: sdk.clone(),
            names: names.clone(),
            kinesis: OnceLock::new(),
            dynamodb: OnceLock::new(),
            s3: OnceLock::new(),
            history_ttl,
        }
    }

    pub(super) fn kinesis(&self) -> Arc<KinesisStream> {
        Arc::clone(self.kinesis.get_or_init(|| {
            Arc::new(KinesisStream::new(
                aws_sdk_kinesis::Client::new(&self.sdk),
                &self.names.stream,
            ))
        }))
    }

    pub(super) fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.dynamodb
            .get_or_init(|| aws_sdk_dynamodb::Client::new(&self.sdk))
            .clone()
    }

    pub(super) fn status(&self) -> Arc<DynamoStatusStore> {
        Arc::new(DynamoStatusStore::new(
            self.dynamodb(),
            &self.names.status_table,
        ))
    }

    pub(super) fn checkpoints(&self) -> Arc<DynamoCheckpointStore> {
        Arc::new(DynamoCheckpointStore::new(
            self.dynamodb(),
            &self.names.oplog_table,
        ))
    }

    pub(super) fn dead_letters(&self) -> Arc<DynamoDeadLetterStore> {
        Arc::new(DynamoDeadLetterStore::new(
            self.dynamodb(),
            &self.names.deadletter_table,
        ))
    }

    pub(super) fn archive(&self) -> Arc<S3Archive> {
        let client = self.s3.get_or_init(|| S3Archive::client(&self.sdk)).clone();
        Arc::new(S3Archive::new(client, &self.names.archive_bucket))
    }

    pub(super) fn history(&self) -> Option<Arc<DynamoHistoryStore>> {
        let table = self.names.history_table.as_ref()?;
        Some(Arc::new(DynamoHistoryStore::new(
            self.dynamodb(),
            table,
            self.history_ttl,
        )))
    }

    /// HISTORY; on a stack without it, every write and read fails naming why (callers ask
    /// [`Adapters::history_enabled`] first).
    pub(super) fn history_writer(&self) -> Arc<dyn HistoryWriter> {
        match self.history() {
            Some(history) => history,
            None => Arc::new(NoHistory),
        }
    }

    pub(super) fn history_reader(&self) -> Arc<dyn HistoryReader> {
        match self.history() {
            Some(history) => history,
            None => Arc::new(NoHistory),
        }
    }

    pub(super) fn status_view(&self) -> Arc<DynamoStatusView> {
        Arc::new(DynamoStatusView::new(
            self.dynamodb(),
            &self.names.status_view_table,
        ))
    }

    pub(super) fn idempotency(&self) -> Arc<DynamoIdempotencyStore> {
        Arc::new(DynamoIdempotencyStore::new(
            self.dynamodb(),
            &self.names.idempotency_table,
        ))
    }
}
