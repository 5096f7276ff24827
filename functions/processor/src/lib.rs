//! The stream consumers' Lambda handler: a Kinesis or Kafka batch → whichever registered consumer the
//! binary runs ([`run`]; `processor`: STATUS / DEADLETTER, `archiver`: the archive / HISTORY,
//! `status-view`: ids and counts by status), then OPLOG through the checkpoint the batch earned
//! (each consumer its own), reporting the lowest failed record in `batchItemFailures` (the mapping needs
//! `ReportBatchItemFailures`). A library so the tests and benchmarks run exactly what the Lambda
//! runs.

pub mod event;
pub mod kafka;
pub mod notifier;
pub mod synthetic;

use std::sync::Arc;

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use event::{LogBatch, LogEvent, LogEventResponse};
use kafka::{InvalidKafkaEvent, KafkaEvent, KafkaEventResponse};
use lambda_runtime::LambdaEvent;
use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::adapters::Adapters;
use tidemark::config::{
    history_ttl_from_env, mirror_status_table_from_env, processor_settings_from_env, ResourceNames,
};
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::consumers::{BatchOutcome, CheckpointedConsumer};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{Clock, EventTime, SequenceNumber, SystemClock};
use tidemark::ports::StreamRecord;
use tidemark::run::registry::{ConsumerSettings, Metrics, Registration};
use tidemark::telemetry::BatchReport;

/// A Kinesis event Lambda could not have sent: the invocation fails loudly (the mapping retries,
/// bisects, and finally hands the range to the on-failure destination) rather than guessing.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEvent {
    #[error("record {index} has no eventID of the form shardId-…:<sequence number>")]
    MissingShard { index: usize },
    #[error("record {index} has an invalid sequence number {text:?}: {reason}")]
    SequenceNumber {
        index: usize,
        text: String,
        reason: tidemark::domain::sequence::SequenceNumberError,
    },
}

/// The consumer loop of the Lambda: a consumer, and the OPLOG it checkpoints into.
pub struct Handler {
    consumer: CheckpointedConsumer,
    metrics: Metrics,
}

impl Handler {
    /// The processor: STATUS and DEADLETTER.
    pub fn new(adapters: &Adapters, settings: ProcessorSettings, clock: Arc<dyn Clock>) -> Self {
        let settings = ConsumerSettings {
            processor: settings,
            clock,
        };
        Self::registered(&Registration::processor(), adapters, &settings)
    }

    /// The handler of any registered consumer, with its own checkpoints.
    pub fn registered(
        registration: &Registration,
        adapters: &Adapters,
        settings: &ConsumerSettings,
    ) -> Self {
        Self {
            consumer: registration.checkpointed(adapters, settings),
            metrics: registration.metrics,
        }
    }

    /// One invocation from either mapping (the event's shape says which, [`event`]): each
    /// batch through the consumer, its checkpoint written, one report line each, the failures
    /// answered in the mapping's own shape.
    pub async fn handle(
        &self,
        event: LambdaEvent<LogEvent>,
    ) -> Result<LogEventResponse, lambda_runtime::Error> {
        let function_name = event.context.env_config.function_name.clone();
        let (response, reports) = match event.payload.into_batch()? {
            LogBatch::Kinesis(batch) => {
                let (response, report) = self.process(batch).await?;
                (LogEventResponse::Kinesis(response), vec![report])
            }
            LogBatch::Kafka(batch) => {
                let (response, reports) = self.process_kafka(batch).await?;
                (LogEventResponse::Kafka(response), reports)
            }
        };
        // One line per batch: the structured log and, through EMF, the CloudWatch metrics.
        let now = SystemClock.now().unix_millis();
        for report in reports {
            let line = match self.metrics {
                Metrics::Pipeline => report.to_emf_line(now, Some(&function_name)),
                // Not the processor's stack-wide counts: only this function's own metrics.
                Metrics::FunctionOnly => report.to_function_emf_line(now, &function_name),
            };
            println!("{line}");
        }
        Ok(response)
    }

    /// A Kafka event without the logging: what the tests check.
    pub async fn process_kafka(
        &self,
        event: KafkaEvent,
    ) -> Result<(KafkaEventResponse, Vec<BatchReport>), InvalidKafkaEvent> {
        let batches = kafka::partition_batches(event)?;
        let outcomes =
            futures::future::join_all(batches.into_iter().map(|(partition, records)| async move {
                let outcome = self.consumer.run_batch(&partition, &records).await;
                (partition, outcome)
            }))
            .await;
        Ok(kafka::response(outcomes))
    }

    /// The batch without the logging: what the tests check and the benchmarks time.
    pub async fn process(
        &self,
        event: KinesisEvent,
    ) -> Result<(KinesisEventResponse, BatchReport), InvalidEvent> {
        let Some((shard, records)) = stream_records(event)? else {
            return Ok((KinesisEventResponse::default(), BatchReport::default()));
        };
        Ok(response(self.consumer.run_batch(&shard, &records).await))
    }
}

/// The Lambda of one registered consumer: its configuration from the environment, its adapters
/// built once, then one [`Handler::handle`] per invocation. Each consumer's binary is this one
/// call with its registration (`Registration::processor()`, …), and only that consumer's code
/// is linked into it: the processor's binary carries no S3 client.
pub async fn run(registration: Registration) -> Result<(), lambda_runtime::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let settings = ConsumerSettings {
        processor: processor_settings_from_env()?,
        clock: Arc::new(SystemClock),
    };
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let mut adapters = Adapters::aws(&sdk, &names).with_history_ttl(history_ttl_from_env()?);
    if registration.name == ConsumerName::PROCESSOR {
        if let Some(mirror) = mirror_status_table_from_env() {
            adapters = adapters.mirroring_status_table(&mirror);
        }
    }
    let handler = Handler::registered(&registration, &adapters, &settings);
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler.handle(event)
    }))
    .await
}

/// Lambda's `eventID` is `shardId-000000000000:<sequence number>`; one batch is one shard.
fn shard_of(record: &KinesisEventRecord) -> Option<&str> {
    record
        .event_id
        .as_deref()
        .and_then(|id| id.split_once(':'))
        .map(|(shard, _)| shard)
}

/// The batch's shard and its records with typed sequence numbers; `None` for an empty event.
pub fn stream_records(
    event: KinesisEvent,
) -> Result<Option<(String, Vec<StreamRecord>)>, InvalidEvent> {
    let Some(first) = event.records.first() else {
        return Ok(None);
    };
    let shard = shard_of(first)
        .ok_or(InvalidEvent::MissingShard { index: 0 })?
        .to_owned();
    let records = event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let sequence_number =
                SequenceNumber::parse(&r.kinesis.sequence_number).map_err(|reason| {
                    InvalidEvent::SequenceNumber {
                        index,
                        text: r.kinesis.sequence_number.clone(),
                        reason,
                    }
                })?;
            let arrival = r.kinesis.approximate_arrival_timestamp.0;
            Ok(StreamRecord {
                sequence_number,
                partition_key: r.kinesis.partition_key,
                data: r.kinesis.data.0.into(),
                approximate_arrival: arrival
                    .timestamp_nanos_opt()
                    .map(|nanos| EventTime::from_unix_nanos(nanos.into())),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some((shard, records)))
}

fn response(outcome: BatchOutcome) -> (KinesisEventResponse, BatchReport) {
    let mut response = KinesisEventResponse::default();
    if let Some(sequence) = outcome.failure {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(sequence.as_str().to_owned());
        response.batch_item_failures.push(failure);
    }
    (response, outcome.report)
}
