//! Logging set-up and the per-batch report.

use serde::Serialize;
use tracing_subscriber::EnvFilter;

/// What one batch did: logged as one structured line, and published as CloudWatch metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BatchReport {
    pub shard_id: String,
    pub records: usize,
    pub distinct_ids: usize,
    pub applied: usize,
    pub stale: usize,
    pub dead_lettered: usize,
    pub failed: usize,
    pub reported_failure: Option<String>,
    /// The checkpoint this batch wrote to OPLOG (None when it earned none, or see below).
    pub checkpoint: Option<String>,
    /// OPLOG was already at or past the checkpoint this batch earned, so nothing was written.
    pub checkpoint_already_past: bool,
    pub checkpoint_error: Option<String>,
    pub last_error: Option<String>,
    pub duration_ms: f64,
    pub oldest_record_age_ms: Option<u64>,
}

impl Eq for BatchReport {}

/// CloudWatch namespace of the processor's metrics.
pub const METRICS_NAMESPACE: &str = "Tidemark";

impl BatchReport {
    /// The report of a batch of `records` of `shard_id` processed at `now`, before any outcome.
    pub fn for_batch(
        shard_id: &str,
        records: &[crate::ports::StreamRecord],
        now: crate::domain::EventTime,
    ) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            records: records.len(),
            oldest_record_age_ms: records
                .iter()
                .filter_map(|r| r.approximate_arrival)
                .min()
                .map(|arrival| now.millis_since(arrival)),
            ..Self::default()
        }
    }

    /// One line of CloudWatch Embedded Metric Format: a structured log line whose counts
    /// CloudWatch also turns into metrics, with no API call from the function. `function_name`
    /// (the Lambda's own) adds a per-function `failed` metric: the namespace is shared by every
    /// stack in the account, so an alarm on that metric watches this stack's processor only.
    pub fn to_emf_line(&self, timestamp_ms: i64, function_name: Option<&str>) -> String {
        let metric = |name: &str, unit: &str| serde_json::json!({"Name": name, "Unit": unit});
        let mut line = serde_json::to_value(self).unwrap_or_default();
        line["message"] = "batch processed".into();
        line["_aws"] = serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [
                    metric("records", "Count"),
                    metric("applied", "Count"),
                    metric("stale", "Count"),
                    metric("dead_lettered", "Count"),
                    metric("failed", "Count"),
                    metric("duration_ms", "Milliseconds"),
                    metric("oldest_record_age_ms", "Milliseconds"),
                ],
            }, {
                // Per shard too, for the two an alarm acts on: which shard fails, which lags.
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["shard_id"]],
                "Metrics": [
                    metric("failed", "Count"),
                    metric("oldest_record_age_ms", "Milliseconds"),
                ],
            }],
        });
        if let Some(function_name) = function_name {
            line["function_name"] = function_name.into();
            if let Some(sets) = line["_aws"]["CloudWatchMetrics"].as_array_mut() {
                sets.push(serde_json::json!({
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["function_name"]],
                    "Metrics": [metric("failed", "Count")],
                }));
            }
        }
        line.to_string()
    }

    /// One EMF line whose metrics carry the function's name only (the archiver's): its counts
    /// mean something else than the processor's, so they stay out of the stack-wide set.
    pub fn to_function_emf_line(&self, timestamp_ms: i64, function_name: &str) -> String {
        let metric = |name: &str, unit: &str| serde_json::json!({"Name": name, "Unit": unit});
        let mut line = serde_json::to_value(self).unwrap_or_default();
        line["message"] = "batch processed".into();
        line["function_name"] = function_name.into();
        line["_aws"] = serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["function_name"]],
                "Metrics": [
                    metric("records", "Count"),
                    metric("failed", "Count"),
                    metric("oldest_record_age_ms", "Milliseconds"),
                ],
            }],
        });
        line.to_string()
    }

    /// The same facts as a tracing event, for `tidemark serve`.
    pub fn log(&self) {
        if self.failed > 0 || self.checkpoint_error.is_some() {
            tracing::warn!(
                shard_id = %self.shard_id, records = self.records, distinct_ids = self.distinct_ids,
                applied = self.applied, stale = self.stale, dead_lettered = self.dead_lettered,
                failed = self.failed, reported_failure = ?self.reported_failure,
                checkpoint = ?self.checkpoint, checkpoint_already_past = self.checkpoint_already_past,
                checkpoint_error = ?self.checkpoint_error,
                last_error = ?self.last_error, duration_ms = self.duration_ms,
                oldest_record_age_ms = ?self.oldest_record_age_ms, "batch processed with failures"
            );
        } else {
            tracing::debug!(
                shard_id = %self.shard_id, records = self.records, distinct_ids = self.distinct_ids,
                applied = self.applied, stale = self.stale, dead_lettered = self.dead_lettered,
                checkpoint = ?self.checkpoint, checkpoint_already_past = self.checkpoint_already_past,
                duration_ms = self.duration_ms,
                oldest_record_age_ms = ?self.oldest_record_age_ms, "batch processed"
            );
        }
    }
}

/// One EMF line from the ingest Lambda: events of one request accepted with a timestamp ahead of
/// the receive time, and the largest lead. Printed only when there were some.
pub fn clock_ahead_emf_line(events_ahead: u64, max_ahead_ms: u64, timestamp_ms: i64) -> String {
    serde_json::json!({
        "message": "events timestamped ahead of the receive time",
        "events_ahead_of_receive_time": events_ahead,
        "max_ahead_ms": max_ahead_ms,
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [
                    {"Name": "events_ahead_of_receive_time", "Unit": "Count"},
                    {"Name": "max_ahead_ms", "Unit": "Milliseconds"},
                ],
            }],
        },
    })
    .to_string()
}

/// Installs the tracing subscriber: JSON lines for Lambda (CloudWatch), text for a terminal.
/// The level comes from `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The batch line carries the shard as a dimension for the metrics an alarm acts on.
    #[test]
    fn the_batch_line_has_a_per_shard_metric_set() {
        let report = BatchReport {
            shard_id: "shardId-000000000007".into(),
            failed: 3,
            ..BatchReport::default()
        };
        let line: serde_json::Value =
            serde_json::from_str(&report.to_emf_line(1, Some("stack-processor"))).unwrap();
        assert_eq!(line["shard_id"], "shardId-000000000007");
        assert_eq!(line["failed"], 3);
        let sets = line["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(sets[0]["Dimensions"], serde_json::json!([[]]));
        assert_eq!(sets[1]["Dimensions"], serde_json::json!([["shard_id"]]));
        let per_shard: Vec<&str> = sets[1]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(per_shard, ["failed", "oldest_record_age_ms"]);
        assert_eq!(line["function_name"], "stack-processor");
        assert_eq!(
            sets[2]["Dimensions"],
            serde_json::json!([["function_name"]])
        );
        assert_eq!(sets[2]["Metrics"][0]["Name"], "failed");
        let plain: serde_json::Value = serde_json::from_str(&report.to_emf_line(1, None)).unwrap();
        assert_eq!(
            plain["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(),
            2
        );
    }
}
