//! `GET /messages/{id}/history`: an id's events, newest first, paginated.

use super::*;

/// One history entry's JSON; `data` spliced in verbatim as in [`status_row_body`].
fn history_entry_body(entry: &HistoryEntry, current: bool) -> Vec<u8> {
    let fields = json!({
        "status": entry.status,
        "timestamp": entry.timestamp,
        "received_at": entry.received_at,
        "shard_id": entry.shard_id,
        "sequence_number": entry.sequence_number,
        "archived_at": entry.updated_at,
        "current": current,
    });
    let mut body = fields.to_string().into_bytes();
    body.pop();
    body.extend_from_slice(br#","data":"#);
    body.extend_from_slice(entry.data.as_deref().unwrap_or("null").as_bytes());
    body.push(b'}');
    body
}

/// A version key: 22 digits of event time, `#`, 128 digits of sequence number.
const VERSION_KEY_CHARS: usize = 22 + 1 + 128;

/// The cursor is the last entry's version key, URL-safe base64: opaque to the client, and
/// checked on the way back in so that nothing but a version key reaches the store.
fn encode_cursor(version: &VersionKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(version.as_str())
}

fn decode_cursor(text: &str) -> Result<VersionKey, FieldError> {
    use base64::Engine;
    let invalid = || {
        FieldError::new(
            "cursor",
            Rule::InvalidToken,
            "cursor must be a next_cursor from an earlier page of this route",
        )
    };
    // The encoded version key is 202 characters; anything longer is not one.
    if text.len() > VERSION_KEY_CHARS * 4 / 3 + 4 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid())?;
    let well_formed = bytes.len() == VERSION_KEY_CHARS
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 22 {
                *b == b'#'
            } else {
                b.is_ascii_digit()
            }
        });
    match String::from_utf8(bytes) {
        Ok(key) if well_formed => Ok(VersionKey(key)),
        _ => Err(invalid()),
    }
}

/// The query parameters of `GET /messages/{id}/history`.
struct HistoryOptions {
    limit: usize,
    cursor: Option<VersionKey>,
}

impl HistoryOptions {
    fn parse(query: Option<&str>) -> Result<Self, FieldError> {
        let [limit, cursor] = query_params(query, ["limit", "cursor"])?;
        let limit = parse_limit(limit.as_deref(), DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE)?;
        let cursor = cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Self { limit, cursor })
    }
}

impl QueryApi {
    /// `GET /messages/{id}/history?limit=N&cursor=C`: the events accepted for the id, newest
    /// first, each marked `current` when it is the one STATUS holds.
    pub(crate) async fn get_history(
        &self,
        id: &str,
        query: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        validate_id(id, "id")?;
        let options = HistoryOptions::parse(query)?;
        let Some(history) = &self.history else {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                ErrorCode::HistoryDisabled,
                "this deployment keeps no per-id history (HistoryEnabled=false); the archive \
                 still holds every event",
            ));
        };
        let (page, row) = futures::join!(
            history.page(id, options.cursor.as_ref(), options.limit),
            self.status.get(id)
        );
        let (page, row) = (page?, row?);
        if page.entries.is_empty() && row.is_none() && options.cursor.is_none() {
            return Err(ApiError {
                field: Some("id".into()),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("no events for id {id:?}"),
                )
            });
        }
        let current = row.as_ref().map(|r| &r.version);
        let mut body = br#"{"id":"#.to_vec();
        body.extend_from_slice(json!(id).to_string().as_bytes());
        body.extend_from_slice(br#","events":["#);
        let mut next = page.next.as_ref();
        for (i, entry) in page.entries.iter().enumerate() {
            let json = history_entry_body(entry, current == Some(&entry.version));
            // A page stops short of the answer-size bound; the next one starts where it stopped.
            if i > 0 && body.len() + json.len() > MAX_HISTORY_ANSWER_BYTES {
                next = Some(&page.entries[i - 1].version);
                break;
            }
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&json);
        }
        body.extend_from_slice(br#"],"next_cursor":"#);
        let cursor = next.map(encode_cursor);
        body.extend_from_slice(json!(cursor).to_string().as_bytes());
        body.push(b'}');
        Ok(ApiResponse::json_bytes(StatusCode::OK, body))
    }
}
