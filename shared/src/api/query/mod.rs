//! `GET /messages/{id}`, `GET /messages/{id}/history` and `GET /shards`.

mod changes;
mod history;
mod params;
mod shards;

use params::ReadOptions;
pub(super) use params::{parse_limit, parse_token, parse_wait, query_params};

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use super::statuses::StatusViewRoutes;
use super::{ApiError, ApiResponse, ErrorCode, RETRY_AFTER_SECONDS};
use crate::domain::consistency::ConsistencyToken;
use crate::domain::limits::{
    DEFAULT_HISTORY_PAGE, DEFAULT_STUCK_AFTER, MAX_CONSISTENCY_WAIT, MAX_HISTORY_ANSWER_BYTES,
    MAX_HISTORY_PAGE,
};
use crate::domain::progress::{assess, ConsumerName};
use crate::domain::rules::{set_once, validate_id};
use crate::domain::{Clock, EventTime, FieldError, Rule, SystemClock, VersionKey};
use crate::ports::{
    Behind, Checkpoint, CheckpointReader, HistoryEntry, HistoryReader, ShardProgress, ShardReader,
    StatusReader, StatusRow, StoreError, StreamError,
};

pub struct QueryApi {
    pub(super) status: Arc<dyn StatusReader>,
    pub(super) checkpoints: Arc<dyn CheckpointReader>,
    pub(super) shards: Arc<dyn ShardReader>,
    /// The status view and its checkpoints; `None`: its routes answer 404.
    pub(super) status_view: Option<StatusViewRoutes>,
    /// `None`: the stack keeps no history, and the route says so (501).
    history: Option<Arc<dyn HistoryReader>>,
    /// STATUS's change feed (`serve`); `None`: `GET /changes` answers 404 and says where the
    /// changes are instead.
    change_feed: Option<Arc<dyn crate::ports::ChangeFeedReader>>,
    /// Every other consumer's checkpoints (the archiver, each view), shown beside the
    /// processor's by `GET /shards`, each under its name.
    consumer_checkpoints: Vec<(ConsumerName, Arc<dyn CheckpointReader>)>,
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
        "version": row.version.to_opaque(),
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
pub(super) const FIRST_POLL_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between reads: a wait of seconds costs at most a few reads per second.
pub(super) const MAX_POLL_PAUSE: Duration = Duration::from_millis(200);

/// Whether `checkpoints` have reached every position of `token`.
pub(super) async fn checkpoints_reached(
    checkpoints: &dyn CheckpointReader,
    token: &ConsistencyToken,
) -> Result<bool, ApiError> {
    let mut reached = Vec::new();
    for (shard, _) in token.positions() {
        reached.push((shard.to_owned(), checkpoints.get(shard).await?));
    }
    Ok(token.reflected_by_checkpoints(|shard| {
        reached
            .iter()
            .find(|(s, _)| s == shard)
            .and_then(|(_, c)| c.as_ref().map(|c| &c.sequence_number))
    }))
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
            history: None,
            change_feed: None,
            consumer_checkpoints: Vec::new(),
            status_view: None,
            stuck_after: DEFAULT_STUCK_AFTER,
            clock: Arc::new(SystemClock),
        }
    }

    /// How long a shard may be behind before `GET /shards` calls it stuck.
    pub fn with_stuck_after(mut self, stuck_after: Duration) -> Self {
        self.stuck_after = stuck_after;
        self
    }

    /// Serves `GET /messages/{id}/history` from `history`.
    pub fn with_history(mut self, history: Arc<dyn HistoryReader>) -> Self {
        self.history = Some(history);
        self
    }

    /// Shows consumer `name`'s checkpoint of each shard in `GET /shards`, under `name`.
    pub fn with_consumer_checkpoints(
        mut self,
        name: ConsumerName,
        checkpoints: Arc<dyn CheckpointReader>,
    ) -> Self {
        self.consumer_checkpoints.push((name, checkpoints));
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
        let ReadOptions {
            after,
            newer_than,
            wait,
        } = ReadOptions::parse(query)?;
        if let Some(held) = newer_than {
            return self.watch(id, &held, wait).await;
        }
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

    /// Watching one id: the row as soon as its version is newer than `held`, or `304 Not
    /// Modified` (no body) when `wait` runs out first (`404` if the id still has no row). STATUS
    /// only ever moves to a newer version, so an event that loses never wakes a watcher, and a
    /// row read once newer stays newer. With a change feed (`serve`) the row is read again when
    /// STATUS changes; otherwise after a pause that grows to [`MAX_POLL_PAUSE`].
    async fn watch(
        &self,
        id: &str,
        held: &VersionKey,
        wait: Duration,
    ) -> Result<ApiResponse, ApiError> {
        let deadline = Instant::now() + wait;
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            // Taken before the read: a change after it ends the wait below at once.
            let feed_end = self.change_feed.as_ref().map(|feed| feed.end());
            let row = self.status.get(id).await?;
            if row.as_ref().is_some_and(|r| r.version > *held) {
                return row_response(id, row);
            }
            let now = Instant::now();
            if now >= deadline {
                return match row {
                    Some(_) => Ok(ApiResponse::not_modified()),
                    None => row_response(id, None),
                };
            }
            match (&self.change_feed, feed_end) {
                (Some(feed), Some(end)) => feed.wait_for(end, deadline).await,
                _ => {
                    tokio::time::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(MAX_POLL_PAUSE);
                }
            }
        }
    }

    async fn checkpoints_reached(&self, token: &ConsistencyToken) -> Result<bool, ApiError> {
        checkpoints_reached(self.checkpoints.as_ref(), token).await
    }
}
