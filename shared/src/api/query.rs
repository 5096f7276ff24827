//! `GET /messages/{id}` and `GET /shards`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, ApiResponse, ErrorCode, RETRY_AFTER_SECONDS};
use crate::domain::consistency::ConsistencyToken;
use crate::domain::limits::{DEFAULT_STUCK_AFTER, MAX_CONSISTENCY_WAIT};
use crate::domain::progress::assess;
use crate::domain::rules::{set_once, validate_id};
use crate::domain::{Clock, EventTime, FieldError, Rule, SystemClock};
use crate::ports::{
    Behind, Checkpoint, CheckpointReader, ShardReader, StatusReader, StatusRow, StoreError,
    StreamError,
};

pub struct QueryApi {
    status: Arc<dyn StatusReader>,
    checkpoints: Arc<dyn CheckpointReader>,
    shards: Arc<dyn ShardReader>,
    stuck_after: Duration,
    clock: Arc<dyn Clock>,
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Throttled(m) => ApiError::unavailable(
                ErrorCode::Throttled,
                format!("the stream is throttling, retry later: {m}"),
            ),
            other => ApiError::unavailable(
                ErrorCode::Unavailable,
                format!("the stream is unavailable, retry later: {other}"),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Throttled(m) => ApiError::unavailable(
                ErrorCode::Throttled,
                format!("the table is throttling, retry later: {m}"),
            ),
            other => ApiError::unavailable(
                ErrorCode::Unavailable,
                format!("the table is unavailable, retry later: {other}"),
            ),
        }
    }
}

/// The JSON of a STATUS row. `data` is spliced in as the exact compact text that was accepted
/// and stored, never parsed into a `Value` on the way out: a `Value` would round
/// 12345678901234567890123, rewrite 1.10 as 1.1, re-sort keys, and fail outright on a number
/// past f64's range or nesting past serde_json's recursion limit (ingest now refuses both, but
/// rows written before that may hold them). The processor only stores `data` that passed the
/// same rules as ingest, so the splice is always valid JSON.
pub fn status_row_body(row: &StatusRow) -> Vec<u8> {
    // Strings only: serialising this `Value` cannot fail.
    let fields = json!({
        "id": row.id,
        "status": row.status,
        "timestamp": row.timestamp,
        "received_at": row.received_at,
        "shard_id": row.shard_id,
        "sequence_number": row.sequence_number,
        "updated_at": row.updated_at,
    });
    let mut body = fields.to_string().into_bytes();
    body.pop(); // the closing brace, reopened for `data`
    body.extend_from_slice(br#","data":"#);
    body.extend_from_slice(row.data.as_deref().unwrap_or("null").as_bytes());
    body.push(b'}');
    body
}

/// First pause between reads while waiting for a token: about one in-memory or DynamoDB round
/// trip, so a write that is nearly applied is seen almost at once.
const FIRST_POLL_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between reads: a wait of seconds costs at most a few reads per second.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(200);

/// The query parameters of `GET /messages/{id}`.
struct ReadOptions {
    after: Option<ConsistencyToken>,
    wait: Duration,
}

impl ReadOptions {
    fn parse(query: Option<&str>) -> Result<Self, FieldError> {
        let mut after = None;
        let mut wait_ms = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match name.as_ref() {
                "after" => &mut after,
                "wait_ms" => &mut wait_ms,
                other => {
                    return Err(FieldError::new(
                        other,
                        Rule::UnknownField,
                        format!("{other} is not a parameter of this route (after, wait_ms)"),
                    ))
                }
            };
            set_once(slot, value, || name.to_string())?;
        }
        let max_ms = MAX_CONSISTENCY_WAIT.as_millis();
        let wait = match wait_ms {
            None => Duration::ZERO,
            Some(text) => {
                let ms: u64 = text.parse().map_err(|_| {
                    FieldError::new(
                        "wait_ms",
                        Rule::InvalidType,
                        format!("wait_ms must be a whole number of milliseconds, 0 to {max_ms}"),
                    )
                })?;
                if u128::from(ms) > max_ms {
                    return Err(FieldError::new(
                        "wait_ms",
                        Rule::OutOfRange,
                        format!("wait_ms must be 0 to {max_ms}"),
                    ));
                }
                if after.is_none() {
                    return Err(FieldError::new(
                        "wait_ms",
                        Rule::Required,
                        "wait_ms waits for the write named by after: give after too",
                    ));
                }
                Duration::from_millis(ms)
            }
        };
        let after = after
            .map(|text| {
                ConsistencyToken::decode(&text)
                    .map_err(|e| FieldError::new("after", Rule::InvalidToken, e.to_string()))
            })
            .transpose()?;
        Ok(Self { after, wait })
    }
}

fn row_response(id: &str, row: Option<StatusRow>) -> Result<ApiResponse, ApiError> {
    match row {
        Some(row) => Ok(ApiResponse::json_bytes(
            StatusCode::OK,
            status_row_body(&row),
        )),
        None => Err(ApiError {
            field: Some("id".into()),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no status for id {id:?}"),
            )
        }),
    }
}

/// 409 with the current row (or null): the client chooses between waiting longer and showing it.
fn not_yet_visible(row: Option<&StatusRow>, waited: Duration) -> ApiResponse {
    let error = ApiError {
        field: Some("after".into()),
        ..ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotYetVisible,
            format!(
                "STATUS does not reflect the write named by after yet (waited {} ms); retry, \
                 or pass a larger wait_ms",
                waited.as_millis()
            ),
        )
    };
    let mut body = br#"{"error":"#.to_vec();
    body.extend_from_slice(error.body().to_string().as_bytes());
    body.extend_from_slice(br#","current":"#);
    match row {
        Some(row) => body.extend_from_slice(&status_row_body(row)),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    ApiResponse::json_bytes(StatusCode::CONFLICT, body).with_header(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(RETRY_AFTER_SECONDS),
    )
}

impl QueryApi {
    /// `shards` lists the stream's shards for `GET /shards`; a shard is called stuck after
    /// `DEFAULT_STUCK_AFTER` ([`Self::with_stuck_after`]).
    pub fn new(
        status: Arc<dyn StatusReader>,
        checkpoints: Arc<dyn CheckpointReader>,
        shards: Arc<dyn ShardReader>,
    ) -> Self {
        Self {
            status,
            checkpoints,
            shards,
            stuck_after: DEFAULT_STUCK_AFTER,
            clock: Arc::new(SystemClock),
        }
    }

    /// How long a shard may be behind before `GET /shards` calls it stuck.
    pub fn with_stuck_after(mut self, stuck_after: Duration) -> Self {
        self.stuck_after = stuck_after;
        self
    }

    /// The clock ages are measured with (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// `GET /messages/{id}`, with `?after=TOKEN&wait_ms=N` for reading one's own write (the rule
    /// and why the reads happen in this order: `domain/consistency.rs`).
    pub(crate) async fn get_message(
        &self,
        id: &str,
        query: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        validate_id(id, "id")?;
        let ReadOptions { after, wait } = ReadOptions::parse(query)?;
        let Some(token) = after else {
            return row_response(id, self.status.get(id).await?);
        };
        let deadline = Instant::now() + wait;
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            let row = self.status.get(id).await?;
            if token.reflected_by_row(row.as_ref().map(|r| &r.version)) {
                return row_response(id, row);
            }
            if self.checkpoints_reached(&token).await? {
                // Read again: only a row read after the checkpoint surely reflects the write.
                return row_response(id, self.status.get(id).await?);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(not_yet_visible(row.as_ref(), wait));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    async fn checkpoints_reached(&self, token: &ConsistencyToken) -> Result<bool, ApiError> {
        let mut checkpoints = Vec::new();
        for (shard, _) in token.positions() {
            checkpoints.push((shard.to_owned(), self.checkpoints.get(shard).await?));
        }
        Ok(token.reflected_by_checkpoints(|shard| {
            checkpoints
                .iter()
                .find(|(s, _)| s == shard)
                .and_then(|(_, c)| c.as_ref().map(|c| &c.sequence_number))
        }))
    }

    /// Every shard of the stream (open or closed, as ListShards names them) and every shard OPLOG
    /// knows, with its checkpoint (or none yet), the checkpoint's age, and whether it is behind
    /// or stuck ([`crate::domain::progress`]).
    pub(crate) async fn get_shards(&self) -> Result<ApiResponse, ApiError> {
        let (listed, progress) =
            futures::join!(self.shards.list_shards(), self.checkpoints.progress());
        let (listed, progress) = (listed?, progress?);
        let now = self.clock.now();
        let mut ids: Vec<&str> = listed.iter().map(|s| s.shard_id.as_str()).collect();
        ids.extend(progress.iter().map(|p| p.shard_id.as_str()));
        ids.sort_unstable();
        ids.dedup();
        let shards: Vec<serde_json::Value> = ids
            .into_iter()
            .map(|id| {
                let open = listed.iter().find(|s| s.shard_id == id).map(|s| s.open);
                let row = progress.iter().find(|p| p.shard_id == id);
                let checkpoint = row.and_then(|r| r.checkpoint.as_ref());
                let behind = row.and_then(|r| r.behind.as_ref());
                self.shard_json(id, open, checkpoint, behind, now)
            })
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"shards": shards, "stuck_after_ms": self.stuck_after.as_millis() as u64}),
        ))
    }

    fn shard_json(
        &self,
        id: &str,
        open: Option<bool>,
        checkpoint: Option<&Checkpoint>,
        behind: Option<&Behind>,
        now: EventTime,
    ) -> serde_json::Value {
        let since = |text: &str| EventTime::parse_rfc3339(text);
        let health = assess(
            checkpoint.map(|c| &c.sequence_number),
            behind.and_then(|b| Some((&b.sequence_number, since(&b.since)?))),
            now,
            self.stuck_after,
        );
        let mut shard = json!({
            "shard_id": id,
            // `null`: OPLOG knows the shard but the stream no longer lists it (past retention).
            "open": open,
            "sequence_number": checkpoint.map(|c| c.sequence_number.as_str()),
            "updated_at": checkpoint.map(|c| c.updated_at.as_str()),
            "records_applied": checkpoint.map_or(0, |c| c.records_applied),
            "lag_ms": checkpoint.map(|c| c.lag_ms),
            "checkpoint_age_ms": checkpoint
                .and_then(|c| since(&c.updated_at))
                .map(|at| now.millis_since(at)),
            "stuck": health.stuck,
        });
        if let (Some(behind), Some(behind_for)) = (behind, health.behind_for) {
            shard["behind"] = json!({
                "sequence_number": behind.sequence_number.as_str(),
                "since": behind.since,
                "last_attempt_at": behind.at,
                "for_ms": behind_for.as_millis() as u64,
            });
        }
        shard
    }
}
