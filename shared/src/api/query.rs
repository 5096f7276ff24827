//! `GET /messages/{id}` and `GET /shards`.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::{ApiError, ApiResponse, ErrorCode};
use crate::domain::rules::validate_id;
use crate::ports::{CheckpointReader, StatusReader, StatusRow, StoreError};

pub struct QueryApi {
    status: Arc<dyn StatusReader>,
    checkpoints: Arc<dyn CheckpointReader>,
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

impl QueryApi {
    pub fn new(status: Arc<dyn StatusReader>, checkpoints: Arc<dyn CheckpointReader>) -> Self {
        Self {
            status,
            checkpoints,
        }
    }

    pub(crate) async fn get_message(&self, id: &str) -> Result<ApiResponse, ApiError> {
        validate_id(id, "id")?;
        match self.status.get(id).await? {
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

    pub(crate) async fn get_shards(&self) -> Result<ApiResponse, ApiError> {
        let shards: Vec<serde_json::Value> = self
            .checkpoints
            .list()
            .await?
            .iter()
            .map(|c| {
                json!({
                    "shard_id": c.shard_id,
                    "sequence_number": c.sequence_number.as_str(),
                    "updated_at": c.updated_at,
                    "records_applied": c.records_applied,
                    "lag_ms": c.lag_ms,
                })
            })
            .collect();
        Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"shards": shards}),
        ))
    }
}
