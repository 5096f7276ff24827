//! The archiver Lambda: a Kinesis batch → one S3 object and its HISTORY entries, then the
//! archiver's own OPLOG checkpoint. A second event source mapping on the same stream, so a
//! failing archive never holds STATUS back.

use tidemark::run::registry::Registration;

/// The same allocator as the processor: the batch's gzip and SDK buffers are many small
/// allocations too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tidemark_processor::run(Registration::archiver()).await
}
