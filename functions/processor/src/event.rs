//! Which log an invocation comes from, read from the event's own shape: a Kinesis mapping sends
//! `{"Records": [...]}`, an MSK or self-managed Kafka mapping `{"eventSource": ..., "records":
//! {"topic-N": [...]}}`. A consumer's function can then have both mappings at once (the
//! template's `KafkaSource`: the API's events through the stack's stream, another producer's
//! through the topic) with nothing to configure.
//!
//! Both shapes are read in the one pass that reads the event (the fields of both are optional
//! here), so a Kinesis batch costs what it did when the function read only `KinesisEvent`.

use std::collections::HashMap;

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde::{Deserialize, Serialize};

use crate::kafka::{KafkaEvent, KafkaEventResponse, KafkaRecord};

/// An invocation from either kind of mapping.
#[derive(Debug, Default, Deserialize)]
pub struct LogEvent {
    #[serde(rename = "Records", default)]
    kinesis_records: Option<Vec<KinesisEventRecord>>,
    #[serde(rename = "eventSource", default)]
    event_source: Option<String>,
    #[serde(default)]
    records: Option<HashMap<String, Vec<KafkaRecord>>>,
}

/// The event as the one log it came from.
#[derive(Debug)]
pub enum LogBatch {
    Kinesis(KinesisEvent),
    Kafka(KafkaEvent),
}

/// An event of neither shape, or of both: no mapping sends one, so the invocation fails loudly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnknownShape {
    #[error("the event has neither Kinesis's `Records` nor Kafka's `records`")]
    Neither,
    #[error("the event has both Kinesis's `Records` and Kafka's `records`")]
    Both,
}

impl LogEvent {
    pub fn into_batch(self) -> Result<LogBatch, UnknownShape> {
        match (self.kinesis_records, self.records) {
            (Some(records), None) => {
                let mut event = KinesisEvent::default();
                event.records = records;
                Ok(LogBatch::Kinesis(event))
            }
            (None, Some(records)) => Ok(LogBatch::Kafka(KafkaEvent {
                event_source: self.event_source,
                records,
            })),
            (None, None) => Err(UnknownShape::Neither),
            (Some(_), Some(_)) => Err(UnknownShape::Both),
        }
    }
}

/// The answer in the shape the sending mapping reads.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LogEventResponse {
    Kinesis(KinesisEventResponse),
    Kafka(KafkaEventResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(json: &str) -> Result<LogBatch, UnknownShape> {
        serde_json::from_str::<LogEvent>(json).unwrap().into_batch()
    }

    #[test]
    fn each_fixture_is_read_as_the_log_that_sends_it() {
        let kinesis = include_str!("../../../events/processor/kinesis-batch.json");
        let kafka = include_str!("../../../events/kafka/status-batch.json");
        match batch(kinesis).unwrap() {
            LogBatch::Kinesis(event) => {
                let direct: KinesisEvent = serde_json::from_str(kinesis).unwrap();
                assert_eq!(event.records.len(), direct.records.len());
                assert!(!event.records.is_empty());
            }
            other => panic!("the Kinesis fixture read as {other:?}"),
        }
        match batch(kafka).unwrap() {
            LogBatch::Kafka(event) => {
                assert_eq!(event.event_source.as_deref(), Some("SelfManagedKafka"));
                assert_eq!(event.records.len(), 2);
            }
            other => panic!("the Kafka fixture read as {other:?}"),
        }
    }

    #[test]
    fn an_empty_kinesis_batch_is_kinesis_and_other_shapes_fail() {
        assert!(matches!(
            batch(r#"{"Records":[]}"#),
            Ok(LogBatch::Kinesis(_))
        ));
        assert_eq!(batch("{}").unwrap_err(), UnknownShape::Neither);
        assert_eq!(
            batch(r#"{"Records":[],"records":{}}"#).unwrap_err(),
            UnknownShape::Both
        );
    }

    #[test]
    fn answers_keep_each_mappings_shape() {
        use crate::kafka::{KafkaBatchItemFailure, KafkaItemIdentifier};
        use aws_lambda_events::event::streams::KinesisBatchItemFailure;
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier =
            Some("49590338271490256608559692538361571095921575989136588898".into());
        let mut kinesis = KinesisEventResponse::default();
        kinesis.batch_item_failures.push(failure);
        assert_eq!(
            serde_json::to_value(LogEventResponse::Kinesis(kinesis)).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier":
                "49590338271490256608559692538361571095921575989136588898"}]})
        );
        let kafka = KafkaEventResponse {
            batch_item_failures: vec![KafkaBatchItemFailure {
                item_identifier: KafkaItemIdentifier {
                    partition: "tidemark-events-1".into(),
                    offset: 10,
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(LogEventResponse::Kafka(kafka)).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier":
                {"partition": "tidemark-events-1", "offset": 10}}]})
        );
    }
}
