//! `tidemark cost`: the cost per million events for every shape of traffic, counted by running
//! the pipeline in memory with metered adapters, and what a stack costs a month at rest.

use std::process::ExitCode;

use clap::Args;
use tidemark_cli::cost::{
    at_rest_per_month, change_events_per_million, measure, per_million, storage_per_month, Prices,
    Row, Shape, TemplateDefaults, TABLE_HEADER,
};

use super::fail;

#[derive(Args)]
pub struct CostArgs {
    /// Events measured per shape (the figures are per million either way; more only smooths
    /// the batch boundaries).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// A price table in the shape of infra/cost/prices.json (default: that file, as built in).
    #[arg(long)]
    prices: Option<std::path::PathBuf>,
    /// Shard counts to price a stack at rest for.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 4, 16])]
    shards: Vec<u32>,
}

pub async fn run(args: CostArgs) -> ExitCode {
    let prices = match &args.prices {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| Prices::parse(&text).map_err(|e| e.to_string())),
        None => Prices::bundled().map_err(|e| e.to_string()),
    };
    let prices = match prices {
        Ok(prices) => prices,
        Err(e) => return fail(&e),
    };
    let template = match TemplateDefaults::bundled() {
        Ok(template) => template,
        Err(e) => return fail(&e),
    };
    println!(
        "Cost per million events, {} list prices checked {}, template defaults ({} MB ingest, {} MB consumers, batches of {}), in USD:\n",
        prices.region,
        prices.checked,
        template.ingest_memory_mb,
        template.consumer_memory_mb,
        template.batch_size
    );
    println!("{TABLE_HEADER}");
    for shape in Shape::all() {
        let measured = match measure(shape, args.events, template.batch_size).await {
            Ok(measured) => measured,
            Err(e) => return fail(&e),
        };
        let row = Row {
            cost: per_million(&measured, &prices, &template),
            storage: storage_per_month(&measured, &prices),
            measured: &measured,
        };
        println!("{row}");
    }
    println!(
        "\n(storage per month: the archive in S3 and the HISTORY items, for each month they are kept.)"
    );
    println!("Lambda durations are estimated: {}", prices.durations.note);
    let changes = change_events_per_million(&prices, &template);
    println!(
        "\nStatus-change events (StatusChangeEvents, on by default), per million changes of STATUS \
         (one per applied STATUS write: one per event with distinct ids, fewer when an id's \
         events share a batch): EventBridge ${:.2}, notifier Lambda ${:.3}, total ${:.2}.",
        changes.eventbridge,
        changes.lambda,
        changes.total()
    );
    println!(
        "\nAt rest, per month (shards, enhanced fan-out, the KMS key, {} alarms):",
        template.alarms
    );
    for shards in &args.shards {
        println!(
            "  {shards:>3} shard(s): ${:.2}",
            at_rest_per_month(*shards, &prices, &template)
        );
    }
    ExitCode::SUCCESS
}
