//! The processor Lambda: a Kinesis batch → STATUS / OPLOG / DEADLETTER.

use std::sync::Arc;

use lambda_runtime::service_fn;
use tidemark::adapters::sdk::{endpoint_from_env, load_sdk_config};
use tidemark::adapters::Adapters;
use tidemark::config::{processor_settings_from_env, ResourceNames};
use tidemark::domain::SystemClock;
use tidemark_processor::Handler;

/// Each conditional write allocates and frees many small buffers in the SDK; mimalloc cut the
/// client CPU per write by about a tenth (BENCHMARKS.md, issue 15).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark::telemetry::init_tracing(true);
    let names = ResourceNames::from_env()?;
    let settings = processor_settings_from_env()?;
    let sdk = load_sdk_config(endpoint_from_env().as_deref()).await;
    let handler = Handler::new(
        &Adapters::aws(&sdk, &names),
        settings,
        Arc::new(SystemClock),
    );
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event| handler.handle(event))).await
}
