//! The query Lambda: `GET /messages/{id}` and `GET /shards` ← STATUS and OPLOG.

use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config, DynamoStores};
use tidemark::api::{Api, QueryApi};
use tidemark::config::ResourceNames;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let tables = DynamoStores::new(&sdk, &names);
    let api = Api {
        ingest: None,
        query: Some(QueryApi::new(tables.status, tables.checkpoints)),
    };
    tidemark::adapters::lambda_http::run(api).await
}
