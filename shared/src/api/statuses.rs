//! `GET /statuses` and `GET /statuses/{status}/messages`: the status view's routes.
//!
//! Both accept `?after=TOKEN&wait_ms=N` as `GET /messages/{id}` does: the answer waits until the
//! view's checkpoints *and* the processor's have passed the token's positions, so the counts
//! and the list reflect the client's own write, and the rows the list returns (read from STATUS)
//! do too. A wait that runs out answers 409 `not_yet_visible`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use super::query::{
    checkpoints_reached, parse_limit, parse_token, parse_wait, query_params, status_row_body,
    QueryApi, FIRST_POLL_PAUSE, MAX_POLL_PAUSE,
};
use super::{ApiError, ApiResponse, ErrorCode, RETRY_AFTER_SECONDS};
use crate::domain::consistency::ConsistencyToken;
use crate::domain::limits::{
    DEFAULT_STATUS_MESSAGES_PAGE, DEFAULT_STATUS_PAGE, MAX_HISTORY_ANSWER_BYTES, MAX_STATUS_CHARS,
    MAX_STATUS_MESSAGES_PAGE, MAX_STATUS_PAGE,
};
use crate::domain::rules::validate_status;
use crate::domain::status_view::ListPosition;
use crate::domain::{FieldError, Rule, VersionKey};
use crate::ports::{CheckpointReader, StatusViewReader};

/// The view the routes read, and its checkpoints (for `after`).
pub struct StatusViewRoutes {
    pub reader: Arc<dyn StatusViewReader>,
    pub checkpoints: Arc<dyn CheckpointReader>,
}

/// The query parameters both routes take.
struct PageOptions {
    limit: usize,
    cursor: Option<String>,
    after: Option<ConsistencyToken>,
    wait: Duration,
}

impl PageOptions {
    fn parse(query: Option<&str>, default: usize, max: usize) -> Result<Self, FieldError> {
        let [limit, cursor, after, wait_ms] =
            query_params(query, ["limit", "cursor", "after", "wait_ms"])?;
        Ok(Self {
            limit: parse_limit(limit.as_deref(), default, max)?,
            wait: parse_wait(wait_ms.as_deref(), after.is_some())?,
            after: parse_token(after.as_deref())?,
            cursor,
        })
    }
}

fn invalid_cursor() -> FieldError {
    FieldError::new(
        "cursor",
        Rule::InvalidToken,
        "cursor must be a next_cursor from an earlier page of this route",
    )
}

fn base64_decode(text: &str, max_bytes: usize) -> Result<Vec<u8>, FieldError> {
    use base64::Engine;
    if text.len() > max_bytes * 4 / 3 + 4 {
        return Err(invalid_cursor());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid_cursor())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A page of statuses continues after the last status it returned: the cursor is that status.
fn decode_status_cursor(text: &str) -> Result<String, FieldError> {
    let bytes = base64_decode(text, MAX_STATUS_CHARS * 4)?;
    let status = String::from_utf8(bytes).map_err(|_| invalid_cursor())?;
    validate_status(&status, "cursor").map_err(|_| invalid_cursor())?;
    Ok(status)
}

/// A page of messages continues below the last one's list position: `<version key>#<shard>`.
fn decode_position(text: &str) -> Result<ListPosition, FieldError> {
    let bytes = base64_decode(text, 512)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_cursor())?;
    let (version, shard_id) = text
        .rsplit_once('#')
        .filter(|(version, shard)| {
            is_version_key(version)
                && !shard.is_empty()
                && shard
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        })
        .ok_or_else(invalid_cursor)?;
    Ok(ListPosition {
        version: VersionKey(version.to_owned()),
        shard_id: shard_id.to_owned(),
    })
}

/// 22 digits of event time, `#`, 128 digits of sequence number ([`crate::domain::Version::key`]).
fn is_version_key(text: &str) -> bool {
    text.len() == 151
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 22 {
                b == b'#'
            } else {
                b.is_ascii_digit()
            }
        })
}

fn encode_position(position: &ListPosition) -> String {
    base64_encode(format!("{}#{}", position.version, position.shard_id).as_bytes())
}

fn view_missing() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "this deployment runs no status view",
    )
}

impl QueryApi {
    /// Serves `GET /statuses` and `GET /statuses/{status}/messages` from `reader`; `after`
    /// waits for `checkpoints` (the view's) as well as the processor's.
    pub fn with_status_view(
        mut self,
        reader: Arc<dyn StatusViewReader>,
        checkpoints: Arc<dyn CheckpointReader>,
    ) -> Self {
        self.status_view = Some(StatusViewRoutes {
            reader,
            checkpoints,
        });
        self
    }

    /// Waits (up to `wait`) until both the view and STATUS reflect `token`; answers the 409 to
    /// return when they do not in time.
    async fn wait_for(
        &self,
        view: &StatusViewRoutes,
        token: Option<&ConsistencyToken>,
        wait: Duration,
    ) -> Result<Option<ApiResponse>, ApiError> {
        let Some(token) = token else {
            return Ok(None);
        };
        let deadline = Instant::now() + wait;
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            if checkpoints_reached(view.checkpoints.as_ref(), token).await?
                && checkpoints_reached(self.checkpoints.as_ref(), token).await?
            {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                let error = ApiError {
                    field: Some("after".into()),
                    ..ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::NotYetVisible,
                        format!(
                            "the status view does not reflect the write named by after yet \
                             (waited {} ms); retry, or pass a larger wait_ms",
                            wait.as_millis()
                        ),
                    )
                };
                return Ok(Some(error.into_response().with_header(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from(RETRY_AFTER_SECONDS),
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    /// The view, once it reflects the write `options.after` names (or at once without it), and
    /// the shards to read it by; or the 409 to answer when the wait ran out.
    async fn ready_view(
        &self,
        options: &PageOptions,
    ) -> Result<Result<(&StatusViewRoutes, Vec<String>), ApiResponse>, ApiError> {
        let view = self.status_view.as_ref().ok_or_else(view_missing)?;
        if let Some(conflict) = self
            .wait_for(view, options.after.as_ref(), options.wait)
            .await?
        {
            return Ok(Err(conflict));
        }
        Ok(Ok((view, self.view_shards(view).await?)))
    }

    /// The shards whose items make up the view: every shard the stream lists and every shard
    /// the view has checkpointed (a shard past retention keeps its items).
    async fn view_shards(&self, view: &StatusViewRoutes) -> Result<Vec<String>, ApiError> {
        let (listed, progress) =
            futures::join!(self.shards.list_shards(), view.checkpoints.progress());
        let mut shards: Vec<String> = listed?.into_iter().map(|s| s.shard_id).collect();
        shards.extend(progress?.into_iter().map(|p| p.shard_id));
        shards.sort_unstable();
        shards.dedup();
        Ok(shards)
    }

    /// `GET /statuses?limit=N&cursor=C`: every status some id has now and how many ids have it,
    /// sorted by status.
    pub(crate) async fn get_statuses(&self, query: Option<&str>) -> Result<ApiResponse, ApiError> {
        let options = PageOptions::parse(query, DEFAULT_STATUS_PAGE, MAX_STATUS_PAGE)?;
        let after = options
            .cursor
            .as_deref()
            .map(decode_status_cursor)
            .transpose()?;
        let (view, shards) = match self.ready_view(&options).await? {
            Ok(ready) => ready,
            Err(conflict) => return Ok(conflict),
        };
        let counts = view.reader.counts(&shards).await?;
        let mut page: Vec<_> = counts
            .into_iter()
            .filter(|c| after.as_ref().is_none_or(|after| c.status > *after))
            .take(options.limit + 1)
            .collect();
        let more = page.len() > options.limit;
        page.truncate(options.limit);
        let next = more
            .then(|| page.last().map(|c| base64_encode(c.status.as_bytes())))
            .flatten();
        let statuses: Vec<_> = page
            .iter()
            .map(|c| json!({"status": c.status, "count": c.count}))
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"statuses": statuses, "next_cursor": next}),
        ))
    }

    /// `GET /statuses/{status}/messages?limit=N&cursor=C`: the STATUS rows of the ids in
    /// `status`, newest event time first. A row that STATUS already holds with another status
    /// (the view trails STATUS by up to a batch) is left out of the page.
    pub(crate) async fn get_status_messages(
        &self,
        status: &str,
        query: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        validate_status(status, "status")?;
        let options = PageOptions::parse(
            query,
            DEFAULT_STATUS_MESSAGES_PAGE,
            MAX_STATUS_MESSAGES_PAGE,
        )?;
        let below = options.cursor.as_deref().map(decode_position).transpose()?;
        let (view, shards) = match self.ready_view(&options).await? {
            Ok(ready) => ready,
            Err(conflict) => return Ok(conflict),
        };
        let page = view
            .reader
            .members(&shards, status, below.as_ref(), options.limit)
            .await?;
        let rows = futures::future::try_join_all(
            page.entries.iter().map(|entry| self.status.get(&entry.id)),
        )
        .await?;
        let mut body = br#"{"status":"#.to_vec();
        body.extend_from_slice(json!(status).to_string().as_bytes());
        body.extend_from_slice(br#","messages":["#);
        let mut next = page.next.clone();
        let mut last_written: Option<&crate::domain::status_view::ViewEntry> = None;
        for (entry, row) in page.entries.iter().zip(rows) {
            let Some(row) = row.filter(|row| row.status == status) else {
                continue;
            };
            let json = status_row_body(&row);
            // A page stops short of the answer-size bound; the next one starts where it stopped.
            if let Some(last) = last_written {
                if body.len() + json.len() > MAX_HISTORY_ANSWER_BYTES {
                    next = Some(last.position());
                    break;
                }
                body.push(b',');
            }
            body.extend_from_slice(&json);
            last_written = Some(entry);
        }
        body.extend_from_slice(br#"],"next_cursor":"#);
        let cursor = next.as_ref().map(encode_position);
        body.extend_from_slice(json!(cursor).to_string().as_bytes());
        body.push(b'}');
        Ok(ApiResponse::json_bytes(StatusCode::OK, body))
    }
}
