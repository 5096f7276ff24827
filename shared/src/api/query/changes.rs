//! `GET /changes`: every change of a STATUS row, in the order STATUS took them, from a cursor
//! (`serve`; on AWS the same changes are EventBridge events).

use super::*;
use crate::domain::limits::{DEFAULT_CHANGES_PAGE, MAX_CHANGES_PAGE};
use crate::domain::opaque;
use crate::ports::{ChangeFeedReader, FeedRead};

const CURSOR_PREFIX: &str = "c1.";
/// `c1.` and the base64 of a 16-digit feed id, a dot and up to 20 digits.
const MAX_CURSOR_CHARS: usize = 3 + (16_usize + 1 + 20).div_ceil(3) * 4;

/// A position in one feed: the feed's id is inside, so a cursor of another feed (another server,
/// or `serve` before a restart) is refused rather than read at a meaningless position.
fn encode_cursor(feed_id: u64, position: u64) -> String {
    opaque::encode(CURSOR_PREFIX, &format!("{feed_id:016x}.{position}"))
}

/// 400 naming `after`: not a cursor this feed gave out, and why.
fn invalid_cursor(why: &str) -> FieldError {
    FieldError::new(
        "after",
        Rule::InvalidToken,
        format!("after must be a cursor from an earlier GET /changes answer: {why}"),
    )
}

/// 410 naming `after`: the feed has dropped the changes after it.
fn cursor_expired(oldest: u64) -> ApiError {
    ApiError {
        field: Some("after".into()),
        ..ApiError::new(
            StatusCode::GONE,
            ErrorCode::CursorExpired,
            format!(
                "the feed no longer keeps the changes after this cursor (it keeps the newest; \
                 the oldest kept is change {oldest}): read the rows you follow again, and start \
                 again without after"
            ),
        )
    }
}

/// Why a well-formed cursor of another feed is refused.
const ANOTHER_FEED: &str = "it is from another change feed (another server, or before this one \
                            restarted); start again without after";

fn decode_cursor(text: &str, feed_id: u64) -> Result<u64, FieldError> {
    let content = opaque::decode(text, CURSOR_PREFIX, MAX_CURSOR_CHARS).map_err(invalid_cursor)?;
    let (id, position) = content
        .split_once('.')
        .ok_or_else(|| invalid_cursor("not a cursor"))?;
    match (id.len(), u64::from_str_radix(id, 16), position.parse()) {
        (16, Ok(id), Ok(position)) if id == feed_id => Ok(position),
        (16, Ok(_), Ok(_)) => Err(invalid_cursor(ANOTHER_FEED)),
        _ => Err(invalid_cursor("not a cursor")),
    }
}

impl QueryApi {
    /// Follows STATUS's change feed with `feed`.
    pub fn with_change_feed(mut self, feed: Arc<dyn ChangeFeedReader>) -> Self {
        self.change_feed = Some(feed);
        self
    }

    /// `GET /changes?after=CURSOR&limit=N&wait_ms=N`: up to `limit` changes after the cursor
    /// (from the oldest kept without one), waiting up to `wait_ms` for the first when there is
    /// none yet; the answer's `cursor` continues from there.
    pub(crate) async fn get_changes(&self, query: Option<&str>) -> Result<ApiResponse, ApiError> {
        let Some(feed) = &self.change_feed else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "this deployment keeps no change feed: on AWS, each change of STATUS is an event \
                 on the stack's EventBridge bus (docs/http-api.md, Changes)",
            ));
        };
        let [after, limit, wait_ms] = query_params(query, ["after", "limit", "wait_ms"])?;
        let limit = parse_limit(limit.as_deref(), DEFAULT_CHANGES_PAGE, MAX_CHANGES_PAGE)?;
        let wait = parse_wait(wait_ms.as_deref(), true)?;
        let mut from = after
            .map(|text| decode_cursor(&text, feed.feed_id()))
            .transpose()?;
        let deadline = Instant::now() + wait;
        loop {
            let (entries, next) = match feed.read_from(from, limit).await? {
                FeedRead::Changes { entries, next } => (entries, next),
                FeedRead::Expired { oldest } => return Err(cursor_expired(oldest)),
                FeedRead::Ahead => {
                    return Err(invalid_cursor("it is past the end of the feed").into())
                }
            };
            if !entries.is_empty() || Instant::now() >= deadline {
                let changes: Vec<serde_json::Value> =
                    entries.iter().map(|e| e.change.to_json()).collect();
                let body = json!({
                    "changes": changes,
                    "cursor": encode_cursor(feed.feed_id(), next),
                });
                return Ok(ApiResponse::json_bytes(
                    StatusCode::OK,
                    body.to_string().into_bytes(),
                ));
            }
            feed.wait_for(next, deadline).await;
            from = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_in_its_own_feed() {
        let cursor = encode_cursor(7, 42);
        assert!(cursor.len() <= MAX_CURSOR_CHARS, "{cursor}");
        assert_eq!(decode_cursor(&cursor, 7), Ok(42));
        let max = encode_cursor(u64::MAX, u64::MAX);
        assert!(max.len() <= MAX_CURSOR_CHARS, "{max}");
        assert_eq!(decode_cursor(&max, u64::MAX), Ok(u64::MAX));
        let other = decode_cursor(&cursor, 8).unwrap_err();
        assert!(other.message.contains("another change feed"), "{other:?}");
        for bad in ["", "c1.", "c2.MDAwMDAwMDAwMDAwMDAwNy40Mg", "c1.!!", "c1.eA"] {
            let error = decode_cursor(bad, 7).unwrap_err();
            assert_eq!(
                (error.field.as_deref(), error.rule),
                (Some("after"), Rule::InvalidToken)
            );
        }
    }
}
