//! Counting what a shape of traffic uses: events go through the real ingest API into an
//! in-memory stream, and every registered consumer applies them in full batches of the
//! template's `BatchSize`, with each port wrapped in a meter. Full batches are what a busy stack
//! sees; a quiet one invokes each consumer once per batching window instead, which adds Lambda
//! requests but no DynamoDB writes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::metered::{Meter, Metered, Usage};
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, IngestApi};
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::{CheckpointedConsumer, Consumer};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{Clock, FixedClock, Limits, SystemClock};
use tidemark::ports::{ShardReader, StartPosition, StreamRecord};
use tidemark::publish::{Publisher, RetryPolicy};
use tidemark::run::registry::{ConsumerSettings, Registry};

/// A shape of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Events per request: 1 (`POST /events`) or up to 500 (`POST /events/batch`).
    pub batch: usize,
    /// How many events in a row share an id: 1 for distinct ids, 10 for an id that moves
    /// through ten statuses within a batch.
    pub repeats: usize,
    pub history: bool,
    pub idempotency: bool,
}

impl Shape {
    /// Every combination of single/batched, distinct/repeated ids, history on/off and keys
    /// on/off.
    pub fn all() -> Vec<Shape> {
        let mut shapes = Vec::new();
        for batch in [1, 500] {
            for repeats in [1, 10] {
                for history in [true, false] {
                    for idempotency in [false, true] {
                        shapes.push(Shape {
                            batch,
                            repeats,
                            history,
                            idempotency,
                        });
                    }
                }
            }
        }
        shapes
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {}, history {}, {}",
            if self.batch == 1 {
                "single events".to_owned()
            } else {
                format!("batches of {}", self.batch)
            },
            if self.repeats == 1 {
                "distinct ids".to_owned()
            } else {
                format!("{} per id", self.repeats)
            },
            if self.history { "on" } else { "off" },
            if self.idempotency { "keys" } else { "no keys" },
        )
    }
}

/// What `events` events of one shape used.
#[derive(Clone, Debug)]
pub struct Measured {
    pub shape: Shape,
    pub events: u64,
    /// HTTP requests (each an API Gateway request and an ingest invocation).
    pub requests: u64,
    /// Bytes of the records on the stream (what enhanced fan-out delivers).
    pub record_bytes: u64,
    /// Batches per consumer (each an invocation of its function).
    pub batches: HashMap<&'static str, u64>,
    pub usage: Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("request {request} was answered {status}: {body}")]
    Refused {
        request: u64,
        status: StatusCode,
        body: String,
    },
    #[error("the {consumer} consumer failed a batch: {reason}")]
    Consumer {
        consumer: &'static str,
        reason: String,
    },
    #[error("reading the in-memory stream failed: {0}")]
    Stream(String),
}

const STATUSES: [&str; 5] = ["created", "packed", "shipped", "delivered", "returned"];

/// Runs `events` events of `shape` through ingest and every standard consumer, in batches of
/// `batch_size`, on one shard (costs per event do not depend on the shard count when batches
/// are full).
pub async fn measure(
    shape: Shape,
    events: usize,
    batch_size: usize,
) -> Result<Measured, MeasureError> {
    let memory = MemoryBackend::new(1);
    let meter = Meter::new();
    let adapters = Adapters::in_memory(memory.clone())
        .with_stream_writer(Arc::new(Metered::new(memory.stream.clone(), &meter)))
        .with_idempotency_store(Arc::new(Metered::new(memory.idempotency.clone(), &meter)))
        .with_status_writer(Arc::new(Metered::new(memory.status.clone(), &meter)))
        .with_dead_letter_writer(Arc::new(Metered::new(memory.dead_letters.clone(), &meter)))
        .with_archive_writer(Arc::new(Metered::new(memory.archive.clone(), &meter)))
        .with_history_writer(Arc::new(Metered::new(memory.history.clone(), &meter)))
        .with_status_view_writer(Arc::new(Metered::new(memory.status_view.clone(), &meter)));
    // One receive time for every event: the batch route still orders its events by index.
    let clock = Arc::new(FixedClock(SystemClock.now()));
    let api = Api {
        ingest: Some(IngestApi::new(
            Publisher::new(adapters.stream_writer(), RetryPolicy::default()),
            adapters.idempotency_store(),
            Limits::default(),
            clock.clone(),
        )),
        query: None,
    };

    let mut requests = 0u64;
    let mut sent = 0usize;
    while sent < events {
        let size = shape.batch.min(events - sent);
        let items: Vec<serde_json::Value> = (sent..sent + size)
            .map(|i| {
                let mut event = json!({
                    "id": format!("order-{:08}", i / shape.repeats),
                    "status": STATUSES[i % STATUSES.len()],
                    "data": {"carrier": "ups", "weight_kg": 1.5, "hub": "FRA"},
                });
                if shape.idempotency && shape.batch > 1 {
                    event["idempotency_key"] = json!(format!("key-{i}"));
                }
                event
            })
            .collect();
        let (path, body, key) = if shape.batch == 1 {
            let key = shape.idempotency.then(|| format!("key-{sent}"));
            ("/events", items[0].to_string(), key)
        } else {
            (
                "/events/batch",
                json!({ "events": items }).to_string(),
                None,
            )
        };
        requests += 1;
        let response = api
            .handle(ApiRequest {
                method: Method::POST,
                path: path.into(),
                query: None,
                content_type: Some("application/json".into()),
                idempotency_key: key,
                body: Bytes::from(body),
            })
            .await;
        if response.status != StatusCode::ACCEPTED {
            return Err(MeasureError::Refused {
                request: requests,
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        sent += size;
    }

    let records = all_records(&memory).await?;
    let record_bytes = records
        .iter()
        .flat_map(|(_, rs)| rs.iter())
        .map(|r| (r.partition_key.len() + r.data.len()) as u64)
        .sum();
    let settings = ConsumerSettings {
        processor: Default::default(),
        clock,
    };
    let mut batches = HashMap::new();
    for registration in Registry::standard().iter() {
        let name = registration.name;
        let consumer: Arc<dyn Consumer> = if name == ConsumerName::ARCHIVER && !shape.history {
            Arc::new(Archiver::new(
                adapters.archive_writer(),
                None,
                settings.processor.limits,
                settings.clock.clone(),
            ))
        } else {
            registration.consumer(&adapters, &settings)
        };
        let checkpointed = CheckpointedConsumer::new(
            consumer,
            Arc::new(Metered::new(adapters.checkpoints_of(name).writer, &meter)),
        );
        for (shard, shard_records) in &records {
            for batch in shard_records.chunks(batch_size.max(1)) {
                let outcome = checkpointed.run_batch(shard, batch).await;
                if let Some(failed) = outcome.failure {
                    return Err(MeasureError::Consumer {
                        consumer: name.as_str(),
                        reason: format!("at {failed}: {:?}", outcome.report.last_error),
                    });
                }
                *batches.entry(name.as_str()).or_insert(0) += 1;
            }
        }
    }
    Ok(Measured {
        shape,
        events: events as u64,
        requests,
        record_bytes,
        batches,
        usage: meter.usage(),
    })
}

async fn all_records(
    memory: &MemoryBackend,
) -> Result<Vec<(String, Vec<StreamRecord>)>, MeasureError> {
    let stream = &memory.stream;
    let error = |e: tidemark::ports::StreamError| MeasureError::Stream(e.to_string());
    let mut all = Vec::new();
    for shard in stream.list_shards().await.map_err(error)? {
        let iterator = stream
            .shard_iterator(&shard.shard_id, &StartPosition::TrimHorizon)
            .await
            .map_err(error)?;
        let records = stream
            .get_records(&iterator, usize::MAX)
            .await
            .map_err(error)?
            .records;
        all.push((shard.shard_id, records));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tidemark::adapters::metered::Table;

    use super::*;

    fn per_event(measured: &Measured, table: Table) -> f64 {
        measured.usage.write_units.get(&table).copied().unwrap_or(0) as f64 / measured.events as f64
    }

    /// The counts follow the pipeline's rules: one STATUS write per id per batch (so ten events
    /// of one id in a batch cost one), one HISTORY item per event when history is on, a claim and
    /// a completion per idempotency key, one OPLOG write per batch and consumer, one S3 PUT per
    /// archiver batch, one PUT payload unit per record.
    #[tokio::test]
    async fn the_counts_follow_the_pipeline_rules() {
        let shape = |repeats, history, idempotency| Shape {
            batch: 1,
            repeats,
            history,
            idempotency,
        };
        let distinct = measure(shape(1, true, true), 2_000, 1_000).await.unwrap();
        assert_eq!(distinct.requests, 2_000);
        assert_eq!(distinct.usage.put_records, 2_000);
        assert_eq!(distinct.usage.put_payload_units, 2_000);
        assert_eq!(per_event(&distinct, Table::Status), 1.0);
        assert_eq!(per_event(&distinct, Table::History), 1.0);
        assert_eq!(per_event(&distinct, Table::Idempotency), 2.0);
        assert_eq!(distinct.usage.write_units[&Table::Oplog], 3 * 2);
        assert_eq!(distinct.usage.s3_puts, 2);
        assert!(distinct.batches.values().all(|batches| *batches == 2));

        let repeated = measure(shape(10, false, false), 2_000, 1_000)
            .await
            .unwrap();
        assert_eq!(per_event(&repeated, Table::Status), 0.1);
        assert_eq!(per_event(&repeated, Table::History), 0.0);
        assert_eq!(per_event(&repeated, Table::Idempotency), 0.0);
        assert!(
            per_event(&repeated, Table::StatusView) < per_event(&distinct, Table::StatusView) / 5.0,
            "the view moves once per id per batch"
        );
    }
}
