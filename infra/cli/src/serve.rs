//! `tidemark serve`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::StatusCode;
use tidemark::adapters::bootstrap::{ensure_resources, BootstrapError};
use tidemark::adapters::memory::{
    MemoryCheckpointStore, MemoryDeadLetterStore, MemoryStatusStore, MemoryStream,
};
use tidemark::adapters::sdk::{load_sdk_config, AwsAdapters};
use tidemark::api::{Api, ApiError, ApiRequest, ApiResponse, IngestApi, QueryApi};
use tidemark::config::ResourceNames;
use tidemark::domain::limits::MAX_BODY_BYTES;
use tidemark::domain::{Limits, SystemClock};
use tidemark::esm::{EsmSettings, EventSourceMapping};
use tidemark::ports::{CheckpointStore, DeadLetterStore, EventStream, StatusStore};
use tidemark::processor::{Processor, ProcessorSettings};
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

/// The adapters the pipeline runs on.
#[derive(Clone)]
pub struct Pipeline {
    pub stream: Arc<dyn EventStream>,
    pub status: Arc<dyn StatusStore>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
}

/// In-memory adapters, kept typed so tests can inspect them.
#[derive(Clone)]
pub struct MemoryPipeline {
    pub stream: Arc<MemoryStream>,
    pub status: Arc<MemoryStatusStore>,
    pub checkpoints: Arc<MemoryCheckpointStore>,
    pub dead_letters: Arc<MemoryDeadLetterStore>,
}

impl MemoryPipeline {
    pub fn new(shards: usize) -> Self {
        Self {
            stream: Arc::new(MemoryStream::new(shards)),
            status: Arc::default(),
            checkpoints: Arc::default(),
            dead_letters: Arc::default(),
        }
    }

    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            stream: self.stream.clone(),
            status: self.status.clone(),
            checkpoints: self.checkpoints.clone(),
            dead_letters: self.dead_letters.clone(),
        }
    }
}

impl Pipeline {
    /// The real Kinesis and DynamoDB adapters against `endpoint_url` (or the standard AWS
    /// environment when `None`), creating the stream (with `shards` shards) and the tables
    /// when they are missing.
    pub async fn aws(
        endpoint_url: Option<&str>,
        names: &ResourceNames,
        shards: u32,
    ) -> Result<Self, ServeError> {
        let sdk = load_sdk_config(endpoint_url).await;
        let created = ensure_resources(&sdk, names, shards).await?;
        if !created.is_empty() {
            tracing::info!(?created, "created missing resources");
        }
        let aws = AwsAdapters::new(&sdk, names);
        Ok(Self {
            stream: aws.stream,
            status: aws.status,
            checkpoints: aws.checkpoints,
            dead_letters: aws.dead_letters,
        })
    }
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
    pipeline: Pipeline,
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let processor = Arc::new(Processor::new(
        pipeline.status.clone(),
        pipeline.checkpoints.clone(),
        pipeline.dead_letters.clone(),
        settings.processor,
        Arc::new(SystemClock),
    ));
    let esm = Arc::new(EventSourceMapping::new(
        pipeline.stream.clone(),
        processor,
        pipeline.checkpoints.clone(),
        settings.esm,
    ));
    let esm_task = tokio::spawn(esm.run(shutdown.clone()));

    let api = Arc::new(Api {
        ingest: Some(IngestApi::new(
            Publisher::new(pipeline.stream.clone(), settings.retry),
            settings.limits,
            Arc::new(SystemClock),
        )),
        query: Some(QueryApi::new(
            pipeline.status.clone(),
            pipeline.checkpoints.clone(),
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
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
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
