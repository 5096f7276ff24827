//! The processor Lambda's handler: a Kinesis batch → STATUS / OPLOG / DEADLETTER, reporting the
//! lowest failed record in `batchItemFailures` (the mapping needs `ReportBatchItemFailures`).
//! A library so the benchmarks measure exactly what the Lambda runs.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use lambda_runtime::LambdaEvent;
use tidemark::domain::{Clock, EventTime, SystemClock};
use tidemark::ports::StreamRecord;
use tidemark::processor::Processor;
use tidemark::telemetry::BatchReport;

/// Lambda's `eventID` is `shardId-000000000000:<sequence number>`; one batch is one shard.
pub fn shard_id(event: &KinesisEvent) -> &str {
    event
        .records
        .first()
        .and_then(|r| r.event_id.as_deref())
        .and_then(|id| id.split_once(':'))
        .map_or("unknown-shard", |(shard, _)| shard)
}

pub fn stream_records(event: KinesisEvent) -> Vec<StreamRecord> {
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

/// One invocation: process the batch, print its report line, answer with the failures.
pub async fn handle(
    processor: &Processor,
    event: LambdaEvent<KinesisEvent>,
) -> Result<KinesisEventResponse, lambda_runtime::Error> {
    let (response, report) = process(processor, event.payload).await;
    // One line per batch: the structured log and, through EMF, the CloudWatch metrics.
    println!("{}", report.to_emf_line(SystemClock.now().unix_millis()));
    Ok(response)
}

/// The batch without the logging: what the benchmarks time.
pub async fn process(
    processor: &Processor,
    event: KinesisEvent,
) -> (KinesisEventResponse, BatchReport) {
    let shard = shard_id(&event).to_owned();
    let records = stream_records(event);
    let outcome = processor.process_batch(&shard, &records).await;
    let mut response = KinesisEventResponse::default();
    if let Some(sequence) = outcome.failure {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(sequence);
        response.batch_item_failures.push(failure);
    }
    (response, outcome.report)
}
