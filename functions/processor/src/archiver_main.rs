//! The archiver Lambda: a Kinesis batch → one S3 object and its HISTORY entries, then the
//! archiver's own OPLOG checkpoint. A second event source mapping on the same stream, so a
//! failing archive never holds STATUS back.

use std::sync::Arc;

use lambda_runtime::service_fn;
use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::adapters::Adapters;
use tidemark::config::{history_ttl_from_env, limits_from_env, ResourceNames};
use tidemark::domain::SystemClock;
use tidemark_processor::Handler;

/// The same allocator as the processor: the batch's gzip and SDK buffers are many small
/// allocations too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let limits = limits_from_env()?;
    let history_ttl = history_ttl_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let adapters = Adapters::aws(&sdk, &names).with_history_ttl(history_ttl);
    let handler = Handler::archiver(&adapters, limits, Arc::new(SystemClock));
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event| handler.handle(event))).await
}
