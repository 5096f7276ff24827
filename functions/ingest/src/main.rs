//! The ingest Lambda: `POST /events` and `POST /events/batch` → Kinesis.

use std::sync::Arc;

use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::adapters::Adapters;
use tidemark::api::{Api, IngestApi};
use tidemark::config::{idempotency_ttl_from_env, limits_from_env, ResourceNames};
use tidemark::domain::SystemClock;
use tidemark::publish::{Publisher, RetryPolicy};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let limits = limits_from_env()?;
    let idempotency_ttl = idempotency_ttl_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let adapters = Adapters::aws(&sdk, &names);
    let publisher = Publisher::new(adapters.stream_writer(), RetryPolicy::default());
    let ingest = IngestApi::new(
        publisher,
        adapters.idempotency_store(),
        limits,
        Arc::new(SystemClock),
    )
    .with_idempotency_ttl(idempotency_ttl)
    .with_metrics();
    let api = Api {
        ingest: Some(ingest),
        query: None,
    };
    tidemark::adapters::lambda_http::run(api).await
}
