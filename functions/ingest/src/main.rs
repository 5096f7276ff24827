//! The ingest Lambda: `POST /events` and `POST /events/batch` → Kinesis.

use std::sync::Arc;

use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::adapters::Adapters;
use tidemark::api::{Api, IngestApi};
use tidemark::config::{limits_from_env, ResourceNames};
use tidemark::domain::SystemClock;
use tidemark::publish::{Publisher, RetryPolicy};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let limits = limits_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let stream = Adapters::aws(&sdk, &names).stream_writer();
    let publisher = Publisher::new(stream, RetryPolicy::default());
    let api = Api {
        ingest: Some(IngestApi::new(publisher, limits, Arc::new(SystemClock)).with_metrics()),
        query: None,
    };
    tidemark::adapters::lambda_http::run(api).await
}
