//! The query Lambda: `GET /messages/{id}`, `GET /messages/{id}/history`, `GET /statuses`,
//! `GET /statuses/{status}/messages` and `GET /shards` ← STATUS, HISTORY, the status view, OPLOG
//! and the stream's shard list.

use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::adapters::Adapters;
use tidemark::api::Api;
use tidemark::config::{stuck_after_from_env, ResourceNames};
use tidemark::run::registry;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let stuck_after = stuck_after_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let adapters = Adapters::aws(&sdk, &names);
    let api = Api {
        ingest: None,
        query: Some(
            registry::query_api(&adapters, registry::STANDARD_CONSUMERS)
                .with_stuck_after(stuck_after),
        ),
    };
    tidemark::adapters::lambda_http::run(api).await
}
