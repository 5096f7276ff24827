//! The price table: `infra/cost/prices.json`, bundled into the binary, or another file in the
//! same shape (`tidemark cost --prices FILE`) for another region or a later date.

use serde::Deserialize;

/// The bundled price table.
pub const BUNDLED: &str = include_str!("../../../cost/prices.json");

/// One list price: dollars per unit, what the unit is, and where the figure comes from.
#[derive(Clone, Debug, Deserialize)]
pub struct Price {
    pub usd: f64,
    pub per: String,
    pub source: String,
}

/// The estimated Lambda durations (everything else is counted).
#[derive(Clone, Debug, Deserialize)]
pub struct Durations {
    pub note: String,
    pub ingest_request_ms: f64,
    pub ingest_batch_request_ms: f64,
    pub ingest_idempotency_key_ms: f64,
    pub consumer_batch_ms: f64,
    pub consumer_ms_per_write_unit: f64,
    /// One PutEvents call of the notifier (up to 10 changes).
    pub notifier_put_events_ms: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub region: String,
    pub checked: String,
    pub note: String,
    pub api_gateway_http_request: Price,
    pub lambda_request: Price,
    pub lambda_arm_gb_second: Price,
    pub kinesis_shard_hour: Price,
    pub kinesis_put_payload_unit: Price,
    pub kinesis_efo_consumer_shard_hour: Price,
    pub kinesis_efo_gb: Price,
    pub dynamodb_write_unit: Price,
    pub dynamodb_read_unit: Price,
    pub dynamodb_gb_month: Price,
    pub s3_put: Price,
    pub s3_gb_month: Price,
    pub kms_key_month: Price,
    pub eventbridge_custom_event: Price,
    pub cloudwatch_alarm_month: Price,
    pub durations: Durations,
}

#[derive(Debug, thiserror::Error)]
#[error("the price table is not valid: {0} (see infra/cost/prices.json for the shape)")]
pub struct PricesError(#[from] serde_json::Error);

impl Prices {
    pub fn bundled() -> Result<Self, PricesError> {
        Self::parse(BUNDLED)
    }

    pub fn parse(text: &str) -> Result<Self, PricesError> {
        Ok(serde_json::from_str(text)?)
    }
}
