//! `tidemark coldstart`: start each function binary many times and print its start-up figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tidemark_cli::coldstart::{self, ColdStart, Run};

use super::fail;

#[derive(Args)]
pub struct ColdstartArgs {
    /// Function binaries (e.g. target/release/ingest target/release/query target/release/processor).
    #[arg(required = true)]
    binaries: Vec<PathBuf>,
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    runs: u32,
    #[arg(long, default_value_t = 10_000)]
    batch_records: usize,
}

pub async fn run(args: ColdstartArgs) -> ExitCode {
    let server = match ColdStart::start().await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>12} {:>14} {:>12}",
        "function", "size", "start p50", "start p90", "start max", "invocation p50", "peak memory"
    );
    for binary in &args.binaries {
        let size = match std::fs::metadata(binary) {
            Ok(metadata) => metadata.len(),
            Err(e) => return fail(&format!("{}: {e}", binary.display())),
        };
        let event = match coldstart::event_for(binary, args.batch_records) {
            Ok(event) => event,
            Err(e) => return fail(&format!("building the invocation: {e}")),
        };
        let mut measured = Vec::new();
        for _ in 0..args.runs {
            match server.measure(binary, &event).await {
                Ok(run) => measured.push(run),
                Err(e) => return fail(&e),
            }
        }
        let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        println!("{}", summary_row(name, size, &measured));
    }
    println!(
        "({} runs each; the processor's invocation is a {}-record batch; sizes in decimal MB)",
        args.runs, args.batch_records
    );
    ExitCode::SUCCESS
}

/// One table row: size, start-up p50/p90/max, invocation p50, peak memory.
fn summary_row(name: &str, size: u64, measured: &[Run]) -> String {
    let mut startups: Vec<_> = measured.iter().map(|r| r.startup).collect();
    let mut invocations: Vec<_> = measured.iter().map(|r| r.invocation).collect();
    startups.sort();
    invocations.sort();
    let at = |v: &[Duration], q: f64| {
        v.get(((v.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let peak = measured
        .iter()
        .map(|r| r.peak_memory_kib)
        .max()
        .unwrap_or(0);
    format!(
        "{:<12} {:>8.2}MB {:>12} {:>12} {:>12} {:>14} {:>8.1} MiB",
        name,
        size as f64 / 1_000_000.0,
        ms(at(&startups, 0.5)),
        ms(at(&startups, 0.9)),
        ms(at(&startups, 1.0)),
        ms(at(&invocations, 0.5)),
        peak as f64 / 1024.0
    )
}
