//! The Kafka tests' broker: `TIDEMARK_KAFKA_BOOTSTRAP` (set by ./scripts/test, which starts one
//! with infra/kafka/up). Never skipped: a missing or silent broker is a loud failure with the fix.
//! Each test gets a topic of its own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tidemark::adapters::kafka::{KafkaLog, KafkaTopic};
use tidemark::adapters::Adapters;

pub const KAFKA_VAR: &str = "TIDEMARK_KAFKA_BOOTSTRAP";

/// A fresh topic of `partitions` partitions on the test broker.
pub async fn kafka_log(test: &str, partitions: u32) -> Arc<KafkaLog> {
    let bootstrap = std::env::var(KAFKA_VAR)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{KAFKA_VAR} is not set. The Kafka tests need a broker: run ./scripts/test (it \
                 starts one), or start one with infra/kafka/up and set {KAFKA_VAR}=127.0.0.1:19092"
            )
        });
    let answers = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&bootstrap),
    )
    .await;
    if !matches!(answers, Ok(Ok(_))) {
        panic!(
            "no Kafka broker answers at {bootstrap} ({KAFKA_VAR}): start one with infra/kafka/up"
        );
    }
    let topic = format!(
        "tm-{test}-{}-{}-{}",
        std::process::id(),
        super::NEXT.fetch_add(1, Ordering::SeqCst),
        fastrand::u32(..)
    );
    let url = format!("kafka://{bootstrap}/{topic}");
    let topic = KafkaTopic::parse(&url).unwrap();
    Arc::new(
        KafkaLog::connect(&topic, partitions)
            .await
            .unwrap_or_else(|e| panic!("connecting to the Kafka broker at {bootstrap}: {e}")),
    )
}

/// `adapters` with the topic as their stream: written by the ingest, read by every consumer.
pub fn over_kafka(adapters: Adapters, log: Arc<KafkaLog>) -> Adapters {
    adapters
        .with_stream_writer(log.clone())
        .with_shard_reader(log)
}
