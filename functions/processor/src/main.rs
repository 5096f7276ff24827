//! The processor Lambda: a Kinesis batch → STATUS / OPLOG / DEADLETTER, reporting the lowest
//! failed record in `batchItemFailures` (the mapping needs `ReportBatchItemFailures`).

use std::sync::Arc;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use lambda_runtime::{service_fn, LambdaEvent};
use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config, AwsAdapters};
use tidemark::config::{processor_settings_from_env, ResourceNames};
use tidemark::domain::{Clock, EventTime, SystemClock};
use tidemark::ports::StreamRecord;
use tidemark::processor::Processor;

/// Lambda's `eventID` is `shardId-000000000000:<sequence number>`; one batch is one shard.
fn shard_id(event: &KinesisEvent) -> &str {
    event
        .records
        .first()
        .and_then(|r| r.event_id.as_deref())
        .and_then(|id| id.split_once(':'))
        .map_or("unknown-shard", |(shard, _)| shard)
}

fn stream_records(event: KinesisEvent) -> Vec<StreamRecord> {
    event
        .records
        .into_iter()
        .map(|r| {
            let arrival = r.kinesis.approximate_arrival_timestamp.0;
            StreamRecord {
                sequence_number: r.kinesis.sequence_number,
                partition_key: r.kinesis.partition_key,
                data: r.kinesis.data.0.into(),
                approximate_arrival: arrival
                    .timestamp_nanos_opt()
                    .map(|nanos| EventTime::from_unix_nanos(nanos.into())),
            }
        })
        .collect()
}

async fn handle(
    processor: &Processor,
    event: LambdaEvent<KinesisEvent>,
) -> Result<KinesisEventResponse, lambda_runtime::Error> {
    let shard = shard_id(&event.payload).to_owned();
    let records = stream_records(event.payload);
    let outcome = processor.process_batch(&shard, &records).await;
    // One line per batch: the structured log and, through EMF, the CloudWatch metrics.
    println!(
        "{}",
        outcome.report.to_emf_line(SystemClock.now().unix_millis())
    );
    let mut response = KinesisEventResponse::default();
    if let Some(sequence) = outcome.failure {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(sequence);
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let settings = processor_settings_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let aws = AwsAdapters::new(&sdk, &names);
    let processor = Processor::new(
        aws.status,
        aws.checkpoints,
        aws.dead_letters,
        settings,
        Arc::new(SystemClock),
    );
    let processor = &processor;
    lambda_runtime::run(service_fn(move |event| handle(processor, event))).await
}
