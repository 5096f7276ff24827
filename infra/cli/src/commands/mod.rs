//! One module per subcommand of the `tidemark` CLI: its arguments and what it does.

pub mod bench;
pub mod bench_archive;
pub mod bench_dynamodb;
pub mod bench_snapshot;
pub mod bootstrap;
pub mod coldstart;
pub mod cost;
pub mod follow;
pub mod rebuild;
pub mod replay;
pub mod serve;
pub mod smoke;
pub mod snapshot;
pub mod teardown;
pub mod verify;

use std::process::ExitCode;

/// Prints the error the way every subcommand reports one, and fails.
pub fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tidemark: {error}");
    ExitCode::FAILURE
}
