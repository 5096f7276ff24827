//! `GET /messages/{id}` and `GET /shards`.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, value::RawValue};

use super::{ApiError, ApiResponse};
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
                "throttled",
                format!("the table is throttling, retry later: {m}"),
            ),
            other => ApiError::unavailable(
                "unavailable",
                format!("the table is unavailable, retry later: {other}"),
            ),
        }
    }
}

/// The JSON of a STATUS row; `data` is embedded as the object it is.
pub fn status_row_json(row: &StatusRow) -> serde_json::Value {
    let data = row
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<&RawValue>(d).ok());
    json!({
        "id": row.id,
        "status": row.status,
        "timestamp": row.timestamp,
        "data": data,
        "received_at": row.received_at,
        "shard_id": row.shard_id,
        "sequence_number": row.sequence_number,
        "updated_at": row.updated_at,
    })
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
            Some(row) => Ok(ApiResponse::json(StatusCode::OK, &status_row_json(&row))),
            None => Err(ApiError {
                field: Some("id".into()),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
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
