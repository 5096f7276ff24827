//! The processor Lambda: a Kinesis batch → STATUS / OPLOG / DEADLETTER.

use tidemark::run::registry::Registration;

/// Each conditional write allocates and frees many small buffers in the SDK; mimalloc cut the
/// client CPU per write by about a tenth (BENCHMARKS.md, issue 15).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark_processor::run(Registration::processor()).await
}
