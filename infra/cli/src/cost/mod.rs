//! What a stack costs: per million events in each shape of traffic, computed from the billable
//! units the real pipeline code uses ([`measure`], through `tidemark::adapters::metered`) and a
//! price table kept in one file (`infra/cost/prices.json`, with its region and date); and at rest,
//! per month, with N shards. Lambda duration is the one estimated input (see the price file's
//! `durations`); everything else is counted.

pub mod measure;
pub mod prices;
pub mod template;

use std::fmt;

pub use measure::{measure, Measured, Shape};
pub use prices::{Price, Prices};
pub use template::TemplateDefaults;
use tidemark::adapters::metered::Table;

const HOURS_PER_MONTH: f64 = 730.0;
const BYTES_PER_GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Dollars per million events, by service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerMillion {
    pub api_gateway: f64,
    pub lambda: f64,
    pub kinesis: f64,
    pub dynamodb: f64,
    pub s3: f64,
}

impl PerMillion {
    pub fn total(&self) -> f64 {
        self.api_gateway + self.lambda + self.kinesis + self.dynamodb + self.s3
    }
}

/// The cost of a million events shaped like `measured`, at `prices`, with the template's memory
/// sizes. Every count is scaled from the measured events to a million.
pub fn per_million(
    measured: &Measured,
    prices: &Prices,
    template: &TemplateDefaults,
) -> PerMillion {
    let scale = 1_000_000.0 / measured.events.max(1) as f64;
    let usage = &measured.usage;
    let d = &prices.durations;
    let gb = |mb: u32| f64::from(mb) / 1024.0;

    let ingest_ms = if measured.shape.batch > 1 {
        d.ingest_batch_request_ms
    } else {
        d.ingest_request_ms
    } + if measured.shape.idempotency {
        2.0 * d.ingest_idempotency_key_ms
    } else {
        0.0
    };
    let ingest_gb_seconds =
        measured.requests as f64 * ingest_ms / 1000.0 * gb(template.ingest_memory_mb);
    let consumer_batches: u64 = measured.batches.values().sum();
    // Every consumer's writes go through its own function; their durations add up. The keys'
    // writes are the ingest function's, counted in its duration above.
    let key_units = usage
        .write_units
        .get(&Table::Idempotency)
        .copied()
        .unwrap_or(0);
    let consumer_ms = consumer_batches as f64 * d.consumer_batch_ms
        + (usage.write_units_total() - key_units) as f64 * d.consumer_ms_per_write_unit;
    let consumer_gb_seconds = consumer_ms / 1000.0 * gb(template.consumer_memory_mb);
    let invocations = measured.requests + consumer_batches;

    PerMillion {
        api_gateway: scale * measured.requests as f64 * prices.api_gateway_http_request.usd,
        lambda: scale
            * (invocations as f64 * prices.lambda_request.usd
                + (ingest_gb_seconds + consumer_gb_seconds) * prices.lambda_arm_gb_second.usd),
        kinesis: scale
            * (usage.put_payload_units as f64 * prices.kinesis_put_payload_unit.usd
                + measured.record_bytes as f64 / BYTES_PER_GB
                    * f64::from(template.efo_consumers)
                    * prices.kinesis_efo_gb.usd),
        dynamodb: scale
            * (usage.write_units_total() as f64 * prices.dynamodb_write_unit.usd
                + usage.read_units_total() as f64 * prices.dynamodb_read_unit.usd),
        s3: scale * usage.s3_puts as f64 * prices.s3_put.usd,
    }
}

/// Dollars per million status-change events (`StatusChangeEvents`), by service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeEventsCost {
    pub eventbridge: f64,
    pub lambda: f64,
}

impl ChangeEventsCost {
    pub fn total(&self) -> f64 {
        self.eventbridge + self.lambda
    }
}

/// What a million changes of STATUS cost as events: one custom event each, and the notifier's
/// invocations (a batch of the mapping's size each) and their time (a PutEvents call per ten
/// changes). Reading STATUS's stream from a Lambda trigger is free.
pub fn change_events_per_million(prices: &Prices, template: &TemplateDefaults) -> ChangeEventsCost {
    let changes = 1_000_000.0;
    let invocations = changes / f64::from(template.notifier_batch_size.max(1));
    let calls = changes / tidemark::ports::MAX_CHANGES_PER_PUBLISH as f64;
    let gb_seconds = calls * prices.durations.notifier_put_events_ms / 1000.0
        * f64::from(template.notifier_memory_mb)
        / 1024.0;
    ChangeEventsCost {
        eventbridge: changes * prices.eventbridge_custom_event.usd,
        lambda: invocations * prices.lambda_request.usd
            + gb_seconds * prices.lambda_arm_gb_second.usd,
    }
}

/// What a stack with `shards` shards costs a month with no events: shards, enhanced fan-out
/// consumers, the KMS key and the alarms. Lambda, API Gateway and on-demand DynamoDB cost nothing
/// at rest; stored data (DynamoDB, S3) is billed per GB-month on top (see [`storage_per_month`]).
pub fn at_rest_per_month(shards: u32, prices: &Prices, template: &TemplateDefaults) -> f64 {
    let shard_hours = f64::from(shards) * HOURS_PER_MONTH;
    shard_hours * prices.kinesis_shard_hour.usd
        + shard_hours
            * f64::from(template.efo_consumers)
            * prices.kinesis_efo_consumer_shard_hour.usd
        + prices.kms_key_month.usd
        + f64::from(template.alarms) * prices.cloudwatch_alarm_month.usd
}

/// What keeping a million events' data costs a month: the archive in S3 and, in DynamoDB, the
/// HISTORY items (STATUS and the view hold one row per id, not per event).
pub fn storage_per_month(measured: &Measured, prices: &Prices) -> f64 {
    let scale = 1_000_000.0 / measured.events.max(1) as f64;
    let history_bytes = measured
        .usage
        .written_bytes
        .get(&Table::History)
        .copied()
        .unwrap_or(0);
    scale
        * (measured.usage.s3_bytes as f64 / BYTES_PER_GB * prices.s3_gb_month.usd
            + history_bytes as f64 / BYTES_PER_GB * prices.dynamodb_gb_month.usd)
}

/// One row of the printed table.
pub struct Row<'a> {
    pub measured: &'a Measured,
    pub cost: PerMillion,
    pub storage: f64,
}

impl fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.measured;
        let per_event = |n: u64| n as f64 / m.events.max(1) as f64;
        write!(
            f,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.2} WU, {:.2} RU | {:.3} |",
            m.shape,
            self.cost.api_gateway,
            self.cost.lambda,
            self.cost.kinesis,
            self.cost.dynamodb,
            self.cost.s3,
            self.cost.total(),
            per_event(m.usage.write_units_total()),
            per_event(m.usage.read_units_total()),
            self.storage,
        )
    }
}

pub const TABLE_HEADER: &str = "| shape | API Gateway | Lambda | Kinesis | DynamoDB | S3 | total | DynamoDB units per event | storage per month |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use tidemark::adapters::metered::Usage;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    /// A hand-computed case: 1,000 single events with idempotency keys, 1 PUT unit each, 3 write
    /// units and 1 read unit each, one S3 PUT and 1 MiB archived, three consumers of 1 batch each.
    #[test]
    fn the_arithmetic_matches_a_hand_computed_case() {
        let prices = Prices::bundled().unwrap();
        let template = TemplateDefaults {
            ingest_memory_mb: 256,
            consumer_memory_mb: 1024,
            batch_size: 1000,
            efo_consumers: 1,
            alarms: 9,
            notifier_memory_mb: 128,
            notifier_batch_size: 100,
        };
        let measured = Measured {
            shape: Shape {
                batch: 1,
                repeats: 1,
                history: true,
                idempotency: true,
            },
            events: 1_000,
            requests: 1_000,
            record_bytes: 250_000,
            batches: HashMap::from([("processor", 1), ("archiver", 1), ("status-view", 1)]),
            usage: Usage {
                put_payload_units: 1_000,
                put_records: 1_000,
                s3_puts: 1,
                s3_bytes: 1024 * 1024,
                write_units: HashMap::from([(Table::Status, 1_000), (Table::History, 2_000)]),
                read_units: HashMap::from([(Table::StatusView, 1_000)]),
                written_bytes: HashMap::from([(Table::History, 500_000)]),
            },
        };
        let cost = per_million(&measured, &prices, &template);
        // × 1,000 to a million events.
        assert!(close(cost.api_gateway, 1_000.0 * 1_000.0 * 1.0e-6)); // $1.00
        assert!(close(
            cost.dynamodb,
            1_000.0 * (3_000.0 * 6.25e-7 + 1_000.0 * 1.25e-7)
        )); // $2.00
        assert!(close(cost.s3, 1_000.0 * 5.0e-6)); // $0.005
        let efo = 250_000.0 / (1024.0 * 1024.0 * 1024.0) * 0.013;
        assert!(close(cost.kinesis, 1_000.0 * (1_000.0 * 1.4e-8 + efo)));
        // Ingest: 1,000 × (20 + 2 × 10) ms × 0.25 GB = 10 GB-s; consumers: (3 × 20 + 3,000 ×
        // 0.5) ms × 1 GB = 1.56 GB-s; 1,003 invocations.
        let lambda = 1_003.0 * 2.0e-7 + (10.0 + 1.56) * 1.33334e-5;
        assert!(
            close(cost.lambda, 1_000.0 * lambda),
            "{} vs {}",
            cost.lambda,
            1_000.0 * lambda
        );

        // At rest, 2 shards: 2 × 730 shard-hours × ($0.015 + $0.015 EFO) + $1 key + 9 × $0.10.
        assert!(close(
            at_rest_per_month(2, &prices, &template),
            1_460.0 * 0.03 + 1.0 + 0.9
        ));
        // Storage: 1 MiB of archive and 0.5 MB of HISTORY per 1,000 events, × 1,000.
        let storage =
            1_000.0 * (1.0 / 1024.0 * 0.023 + 500_000.0 / (1024.0 * 1024.0 * 1024.0) * 0.25);
        assert!(close(storage_per_month(&measured, &prices), storage));

        // Change events: a million events at $1 per million; 10,000 invocations of 100 changes;
        // 100,000 PutEvents calls × 20 ms × 0.125 GB = 250 GB-s.
        let changes = change_events_per_million(&prices, &template);
        assert!(close(changes.eventbridge, 1.0));
        assert!(close(
            changes.lambda,
            10_000.0 * 2.0e-7 + 250.0 * 1.33334e-5
        ));
    }
}
