//! The status view Lambda: a Kinesis batch (through its own enhanced fan-out consumer) → the
//! view's entries, lists and counters, then its own OPLOG checkpoint.

use tidemark::run::registry::Registration;

/// The same allocator as the processor: many small SDK buffers per transaction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark_processor::run(Registration::status_view()).await
}
