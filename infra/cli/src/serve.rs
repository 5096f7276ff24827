//! `tidemark serve`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::StatusCode;
use tidemark::adapters::bootstrap::{ensure_resources, BootstrapError};
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::api::{content_type, Api, ApiError, ApiRequest, ApiResponse, IngestApi, QueryApi};
use tidemark::config::ResourceNames;
use tidemark::domain::limits::MAX_BODY_BYTES;
use tidemark::domain::{Limits, SystemClock};
use tidemark::esm::{EsmSettings, EventSourceMapping};
use tidemark::processor::ProcessorSettings;
use tidemark::publish::{Publisher, RetryPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("the HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// The real Kinesis and DynamoDB adapters against `endpoint_url` (or the standard AWS environment
/// when `None`), creating the stream (with `shards` shards) and the tables when they are missing.
pub async fn aws_adapters(
    endpoint_url: Option<&str>,
    names: &ResourceNames,
    shards: u32,
) -> Result<Adapters, ServeError> {
    let sdk = load_sdk_config(endpoint_url).await;
    let created = ensure_resources(&sdk, names, shards).await?;
    if !created.is_empty() {
        tracing::info!(?created, "created missing resources");
    }
    Ok(Adapters::aws(&sdk, names))
}

/// Everything `serve` can be tuned with besides the adapters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeSettings {
    pub esm: EsmSettings,
    pub processor: ProcessorSettings,
    pub limits: Limits,
    pub retry: RetryPolicy,
}

/// Serves HTTP on `listener` and drives the processor until `shutdown` turns true; then stops
/// accepting requests and lets each shard finish its current batch.
pub async fn run(
    adapters: Adapters,
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let processor = Arc::new(adapters.processor(settings.processor, Arc::new(SystemClock)));
    let esm = Arc::new(EventSourceMapping::new(&adapters, processor, settings.esm));
    let esm_task = tokio::spawn(esm.run(shutdown.clone()));

    let api = Arc::new(Api {
        ingest: Some(IngestApi::new(
            Publisher::new(adapters.stream_writer(), settings.retry),
            settings.limits,
            Arc::new(SystemClock),
        )),
        query: Some(QueryApi::new(
            adapters.status_reader(),
            adapters.checkpoint_reader(),
        )),
    });
    let app = Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(api);
    let mut stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    let _ = esm_task.await;
    served.map_err(ServeError::Http)
}

fn to_response(response: ApiResponse) -> Response {
    let mut out = (response.status, response.body).into_response();
    for (name, value) in response.headers {
        out.headers_mut().insert(name, value);
    }
    out
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await {
        Ok(body) => body,
        Err(_) => {
            return to_response(
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is more than the {MAX_BODY_BYTES} bytes allowed"),
                )
                .into_response(),
            )
        }
    };
    let request = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        content_type: content_type(&parts.headers),
        body,
    };
    to_response(api.handle(request).await)
}

/// Poll interval suited to a backend: in memory, reads are free; real Kinesis allows five
/// GetRecords per second per shard.
pub fn default_poll_interval(in_memory: bool) -> Duration {
    if in_memory {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(200)
    }
}
