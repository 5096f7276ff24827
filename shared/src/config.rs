//! Configuration from the environment, with errors that name the variable and the fix.

use std::time::Duration;

use crate::consumers::processor::ProcessorSettings;
use crate::domain::limits::{
    DEFAULT_IDEMPOTENCY_TTL, DEFAULT_MAX_DATA_BYTES, DEFAULT_MAX_FUTURE_SKEW, DEFAULT_STUCK_AFTER,
    DEFAULT_WRITE_CONCURRENCY, MAX_DATA_BYTES_CEILING, MAX_DEAD_LETTER_TTL_DAYS,
    MAX_FUTURE_SKEW_CEILING, MAX_IDEMPOTENCY_TTL_HOURS, MAX_STUCK_AFTER, MAX_WRITE_CONCURRENCY,
};
use crate::domain::Limits;

pub const STREAM_NAME_VAR: &str = "TIDEMARK_STREAM_NAME";
pub const STATUS_TABLE_VAR: &str = "TIDEMARK_STATUS_TABLE";
pub const OPLOG_TABLE_VAR: &str = "TIDEMARK_OPLOG_TABLE";
pub const DEADLETTER_TABLE_VAR: &str = "TIDEMARK_DEADLETTER_TABLE";
pub const IDEMPOTENCY_TABLE_VAR: &str = "TIDEMARK_IDEMPOTENCY_TABLE";
pub const ARCHIVE_BUCKET_VAR: &str = "TIDEMARK_ARCHIVE_BUCKET";
/// The status view's table (ids and counts by status).
pub const STATUS_VIEW_TABLE_VAR: &str = "TIDEMARK_STATUS_VIEW_TABLE";
/// The HISTORY table, or `none` for a stack that keeps the archive only (`HistoryEnabled=false`).
pub const HISTORY_TABLE_VAR: &str = "TIDEMARK_HISTORY_TABLE";
/// What [`HISTORY_TABLE_VAR`] says when the stack keeps no history.
pub const HISTORY_OFF: &str = "none";
/// Seconds a shard may be behind before `GET /shards` calls it stuck (default 300).
pub const STUCK_AFTER_SECONDS_VAR: &str = "TIDEMARK_STUCK_AFTER_SECONDS";
/// Hours a completed idempotency key answers retries (default 24, at most 720).
pub const IDEMPOTENCY_TTL_HOURS_VAR: &str = "TIDEMARK_IDEMPOTENCY_TTL_HOURS";
pub const MAX_DATA_BYTES_VAR: &str = "TIDEMARK_MAX_DATA_BYTES";
pub const MAX_FUTURE_SKEW_VAR: &str = "TIDEMARK_MAX_FUTURE_SKEW_SECONDS";
pub const WRITE_CONCURRENCY_VAR: &str = "TIDEMARK_WRITE_CONCURRENCY";
/// Days a DEADLETTER item is kept before DynamoDB's TTL deletes it; 0 (the default) keeps it.
pub const DEAD_LETTER_TTL_DAYS_VAR: &str = "TIDEMARK_DEADLETTER_TTL_DAYS";
/// Days a HISTORY entry is kept before DynamoDB's TTL deletes it; 0 (the default) keeps it. The
/// archive keeps every event either way.
pub const HISTORY_TTL_DAYS_VAR: &str = "TIDEMARK_HISTORY_TTL_DAYS";
/// The EventBridge bus the notifier puts status-change events on.
pub const CHANGE_BUS_VAR: &str = "TIDEMARK_CHANGE_BUS";

/// A rebuilt STATUS table the processor also writes, first, during a switch to it
/// (docs/operations.md); unset or empty: none.
pub const MIRROR_STATUS_TABLE_VAR: &str = "TIDEMARK_MIRROR_STATUS_TABLE";

/// The table named by [`MIRROR_STATUS_TABLE_VAR`], if any.
pub fn mirror_status_table_from_env() -> Option<String> {
    std::env::var(MIRROR_STATUS_TABLE_VAR)
        .ok()
        .map(|table| table.trim().to_owned())
        .filter(|table| !table.is_empty())
}

/// The bus named by [`CHANGE_BUS_VAR`].
pub fn change_bus_from_env() -> Result<String, ConfigError> {
    match std::env::var(CHANGE_BUS_VAR) {
        Ok(bus) if !bus.trim().is_empty() => Ok(bus),
        _ => Err(ConfigError::Missing(
            CHANGE_BUS_VAR,
            "EventBridge bus for status changes",
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set: set it to the name of the {1} (the SAM template passes it in)")]
    Missing(&'static str, &'static str),
    #[error("{var}={value:?} is invalid: {rule}")]
    Invalid {
        var: &'static str,
        value: String,
        rule: String,
    },
}

/// Names of the stream and tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub stream: String,
    pub status_table: String,
    pub oplog_table: String,
    pub deadletter_table: String,
    pub idempotency_table: String,
    pub archive_bucket: String,
    pub status_view_table: String,
    /// `None`: the stack keeps no per-id history ([`HISTORY_OFF`]).
    pub history_table: Option<String>,
}

impl ResourceNames {
    /// Every name is required: a Lambda with a missing name fails at start-up, not per event.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |var: &'static str, what: &'static str| {
            get(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(var, what))
        };
        Ok(Self {
            stream: required(STREAM_NAME_VAR, "Kinesis stream")?,
            status_table: required(STATUS_TABLE_VAR, "STATUS table")?,
            oplog_table: required(OPLOG_TABLE_VAR, "OPLOG table")?,
            deadletter_table: required(DEADLETTER_TABLE_VAR, "DEADLETTER table")?,
            idempotency_table: required(IDEMPOTENCY_TABLE_VAR, "IDEMPOTENCY table")?,
            archive_bucket: required(ARCHIVE_BUCKET_VAR, "archive S3 bucket")?,
            status_view_table: required(STATUS_VIEW_TABLE_VAR, "status view table")?,
            history_table: Some(required(
                HISTORY_TABLE_VAR,
                "HISTORY table (or `none` when the stack keeps no history)",
            )?)
            .filter(|name| name.trim() != HISTORY_OFF),
        })
    }

    /// For `tidemark serve` against an endpoint: the environment's names, or local defaults.
    pub fn from_env_or_defaults() -> Self {
        let get = |var: &str, default: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Self {
            stream: get(STREAM_NAME_VAR, "tidemark-events"),
            status_table: get(STATUS_TABLE_VAR, "tidemark-status"),
            oplog_table: get(OPLOG_TABLE_VAR, "tidemark-oplog"),
            deadletter_table: get(DEADLETTER_TABLE_VAR, "tidemark-deadletter"),
            idempotency_table: get(IDEMPOTENCY_TABLE_VAR, "tidemark-idempotency"),
            archive_bucket: get(ARCHIVE_BUCKET_VAR, "tidemark-archive"),
            status_view_table: get(STATUS_VIEW_TABLE_VAR, "tidemark-status-view"),
            history_table: Some(get(HISTORY_TABLE_VAR, "tidemark-history"))
                .filter(|name| name.trim() != HISTORY_OFF),
        }
    }
}

fn parse_bounded(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(value) => match value.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                rule: format!("must be a whole number from {min} to {max}"),
            }),
        },
    }
}

/// Event limits: `TIDEMARK_MAX_DATA_BYTES` (default 65536, at most 393216) and
/// `TIDEMARK_MAX_FUTURE_SKEW_SECONDS` (default 300, at most 86400).
pub fn limits_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Limits, ConfigError> {
    Ok(Limits {
        max_data_bytes: parse_bounded(
            &get,
            MAX_DATA_BYTES_VAR,
            DEFAULT_MAX_DATA_BYTES as u64,
            2,
            MAX_DATA_BYTES_CEILING as u64,
        )? as usize,
        max_future_skew: Duration::from_secs(parse_bounded(
            &get,
            MAX_FUTURE_SKEW_VAR,
            DEFAULT_MAX_FUTURE_SKEW.as_secs(),
            0,
            MAX_FUTURE_SKEW_CEILING.as_secs(),
        )?),
    })
}

pub fn limits_from_env() -> Result<Limits, ConfigError> {
    limits_from_lookup(|var| std::env::var(var).ok())
}

/// How long a completed idempotency key answers retries: `TIDEMARK_IDEMPOTENCY_TTL_HOURS`
/// (default 24, 1 to 720).
pub fn idempotency_ttl_from_lookup(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Duration, ConfigError> {
    let hours = parse_bounded(
        &get,
        IDEMPOTENCY_TTL_HOURS_VAR,
        DEFAULT_IDEMPOTENCY_TTL.as_secs() / 3600,
        1,
        MAX_IDEMPOTENCY_TTL_HOURS,
    )?;
    Ok(Duration::from_secs(hours * 3600))
}

pub fn idempotency_ttl_from_env() -> Result<Duration, ConfigError> {
    idempotency_ttl_from_lookup(|var| std::env::var(var).ok())
}

/// How long a shard may be behind before `GET /shards` calls it stuck:
/// `TIDEMARK_STUCK_AFTER_SECONDS` (default 300, 1 to 86400).
pub fn stuck_after_from_lookup(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(parse_bounded(
        &get,
        STUCK_AFTER_SECONDS_VAR,
        DEFAULT_STUCK_AFTER.as_secs(),
        1,
        MAX_STUCK_AFTER.as_secs(),
    )?))
}

pub fn stuck_after_from_env() -> Result<Duration, ConfigError> {
    stuck_after_from_lookup(|var| std::env::var(var).ok())
}

/// Processor settings: the limits plus `TIDEMARK_WRITE_CONCURRENCY` (default 32, 1 to 512) and
/// `TIDEMARK_DEADLETTER_TTL_DAYS` (default 0: dead letters are kept; at most 3650).
pub fn processor_settings_from_env() -> Result<ProcessorSettings, ConfigError> {
    processor_settings_from_lookup(|var: &str| std::env::var(var).ok())
}

/// How long HISTORY keeps an entry ([`HISTORY_TTL_DAYS_VAR`]); `None` keeps it.
pub fn history_ttl_from_env() -> Result<Option<Duration>, ConfigError> {
    history_ttl_from_lookup(|var| std::env::var(var).ok())
}

fn history_ttl_from_lookup(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    Ok(
        match parse_bounded(&get, HISTORY_TTL_DAYS_VAR, 0, 0, MAX_DEAD_LETTER_TTL_DAYS)? {
            0 => None,
            days => Some(Duration::from_secs(days * 24 * 60 * 60)),
        },
    )
}

fn processor_settings_from_lookup(
    get: impl Fn(&str) -> Option<String>,
) -> Result<ProcessorSettings, ConfigError> {
    Ok(ProcessorSettings {
        limits: limits_from_lookup(&get)?,
        write_concurrency: parse_bounded(
            &get,
            WRITE_CONCURRENCY_VAR,
            DEFAULT_WRITE_CONCURRENCY as u64,
            1,
            MAX_WRITE_CONCURRENCY as u64,
        )? as usize,
        dead_letter_ttl: match parse_bounded(
            &get,
            DEAD_LETTER_TTL_DAYS_VAR,
            0,
            0,
            MAX_DEAD_LETTER_TTL_DAYS,
        )? {
            0 => None,
            days => Some(Duration::from_secs(days * 24 * 60 * 60)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn history_is_required_or_explicitly_off() {
        let names = [
            (STREAM_NAME_VAR, "s"),
            (STATUS_TABLE_VAR, "t"),
            (OPLOG_TABLE_VAR, "o"),
            (DEADLETTER_TABLE_VAR, "d"),
            (STATUS_VIEW_TABLE_VAR, "v"),
            (IDEMPOTENCY_TABLE_VAR, "i"),
            (ARCHIVE_BUCKET_VAR, "b"),
        ];
        let err = ResourceNames::from_lookup(env(&names)).unwrap_err();
        assert!(err.to_string().contains(HISTORY_TABLE_VAR), "{err}");
        let with = |history: &str| {
            let mut all = names.to_vec();
            all.push((HISTORY_TABLE_VAR, history));
            ResourceNames::from_lookup(env(&all)).unwrap().history_table
        };
        assert_eq!(with("h"), Some("h".to_owned()));
        assert_eq!(with(HISTORY_OFF), None);
        assert_eq!(history_ttl_from_lookup(env(&[])), Ok(None));
        assert_eq!(
            history_ttl_from_lookup(env(&[(HISTORY_TTL_DAYS_VAR, "2")])),
            Ok(Some(Duration::from_secs(2 * 86_400)))
        );
    }

    #[test]
    fn missing_names_are_named() {
        let err = ResourceNames::from_lookup(env(&[(STREAM_NAME_VAR, "s")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing(STATUS_TABLE_VAR, "STATUS table"));
        assert!(err.to_string().contains("TIDEMARK_STATUS_TABLE"));
    }

    #[test]
    fn limits_default_and_bounds() {
        assert_eq!(limits_from_lookup(env(&[])).unwrap(), Limits::default());
        let limits = limits_from_lookup(env(&[
            (MAX_DATA_BYTES_VAR, "1024"),
            (MAX_FUTURE_SKEW_VAR, "0"),
        ]))
        .unwrap();
        assert_eq!(limits.max_data_bytes, 1024);
        assert_eq!(limits.max_future_skew, Duration::ZERO);
        let too_big = (MAX_DATA_BYTES_CEILING + 1).to_string();
        let err = limits_from_lookup(env(&[(MAX_DATA_BYTES_VAR, &too_big)])).unwrap_err();
        assert!(err.to_string().contains(MAX_DATA_BYTES_VAR), "{err}");
        assert!(limits_from_lookup(env(&[(MAX_FUTURE_SKEW_VAR, "soon")])).is_err());
    }

    #[test]
    fn idempotency_keys_live_a_day_unless_configured() {
        let ttl =
            |hours: &str| idempotency_ttl_from_lookup(env(&[(IDEMPOTENCY_TTL_HOURS_VAR, hours)]));
        assert_eq!(
            idempotency_ttl_from_lookup(env(&[])),
            Ok(DEFAULT_IDEMPOTENCY_TTL)
        );
        assert_eq!(ttl("1"), Ok(Duration::from_secs(3600)));
        assert!(ttl("0").is_err());
        assert!(ttl("721")
            .unwrap_err()
            .to_string()
            .contains(IDEMPOTENCY_TTL_HOURS_VAR));
    }

    #[test]
    fn stuck_after_defaults_to_five_minutes() {
        let stuck = |secs: &str| stuck_after_from_lookup(env(&[(STUCK_AFTER_SECONDS_VAR, secs)]));
        assert_eq!(stuck_after_from_lookup(env(&[])), Ok(DEFAULT_STUCK_AFTER));
        assert_eq!(stuck("60"), Ok(Duration::from_secs(60)));
        assert!(stuck("0").is_err());
        assert!(stuck("86401").is_err());
    }

    #[test]
    fn dead_letters_are_kept_unless_a_ttl_is_set() {
        let ttl = |days: &str| {
            processor_settings_from_lookup(env(&[(DEAD_LETTER_TTL_DAYS_VAR, days)]))
                .map(|s| s.dead_letter_ttl)
        };
        assert_eq!(
            processor_settings_from_lookup(env(&[]))
                .unwrap()
                .dead_letter_ttl,
            None
        );
        assert_eq!(ttl("0"), Ok(None));
        assert_eq!(ttl("14"), Ok(Some(Duration::from_secs(14 * 86_400))));
        assert!(ttl("3651").is_err());
        assert!(ttl("a week").is_err());
    }
}
