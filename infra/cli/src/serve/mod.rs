//! `tidemark serve`.

mod admission;
mod memory;
mod snapshots;

use admission::Admission;
pub use memory::{catch_up, restore_from_archive, TRIM_INTERVAL};
use memory::{consumer_settings, trim_consumed};
use snapshots::take_snapshots;
pub use snapshots::{
    keep_newest, snapshot_view, snapshots_of, SnapshotArchive, SnapshotSchedule, StoppedDataDir,
    LOCAL_VIEWS,
};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::StatusCode;
use http_body_util::LengthLimitError;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use tidemark::adapters::bootstrap::{ensure_resources, BootstrapError};
use tidemark::adapters::memory::MemoryStream;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::api::{
    content_type, idempotency_key, Api, ApiError, ApiRequest, ApiResponse, ErrorCode, IngestApi,
};
use tidemark::config::ResourceNames;
use tidemark::consumers::archiver::Archiver;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::consumers::{BatchOutcome, Consumer};
use tidemark::domain::limits::{DEFAULT_STUCK_AFTER, MAX_BODY_BYTES};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{Limits, SequenceNumber, SystemClock};
use tidemark::ports::CheckpointReader;
use tidemark::ports::StreamRecord;
use tidemark::publish::{Publisher, RetryPolicy};
use tidemark::run::esm::{EsmSettings, EventSourceMapping};
use tidemark::run::rebuild::{
    rebuild_from_archive, ArchiveRebuild, RebuildError, RebuildProgress, RebuildReport,
};
use tidemark::run::registry::{ConsumerSettings, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
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

/// How `serve` treats connections: it is a network service, so a slow or idle client must not
/// hold a connection, a socket or shutdown forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Time a client has to send a request's headers. hyper starts this clock whenever it waits
    /// for a request head, so it is also the idle timeout of a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body once its headers arrived: 5 MiB at a slow
    /// 1 Mbit/s takes about 40 s.
    pub body_read_timeout: Duration,
    /// Connections served at once; past it, a new one is answered `503` with `Retry-After` and
    /// closed (see `admission.rs`).
    pub max_connections: usize,
    /// Of those, the most one client (IP address) may hold, so that no one client can take them
    /// all.
    pub max_connections_per_client: usize,
    /// After shutdown is asked for, time for requests in flight to finish before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

/// 10 s for headers: a real client sends them in one packet.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`NetworkSettings::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Far above what the bench's concurrent clients open, far below the default 1,024 open files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// A quarter of the connections: room for a handful of busy clients, and three quarters left
/// when one client misbehaves.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 128;
/// Long enough for a batch request in flight; short enough for a container's stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Everything `serve` can be tuned with besides the adapters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeSettings {
    pub esm: EsmSettings,
    pub processor: ProcessorSettings,
    pub limits: Limits,
    /// How long a completed idempotency key answers retries; `None`: a day.
    pub idempotency_ttl: Option<Duration>,
    /// How long a shard may be behind before `GET /shards` calls it stuck; `None`: 5 minutes.
    pub stuck_after: Option<Duration>,
    pub retry: RetryPolicy,
    pub network: NetworkSettings,
    /// With the tables on disk: rolling snapshots of the views into the data directory.
    pub snapshots: Option<SnapshotSchedule>,
}

#[derive(Clone)]
struct AppState {
    api: Arc<Api>,
    body_read_timeout: Duration,
}

/// Serves HTTP on `listener` and drives Tidemark's consumers ([`Registry::standard`]) until
/// `shutdown` turns true; then stops accepting connections, lets requests in flight finish (for
/// at most the shutdown grace), and lets each shard finish its current batch.
pub async fn run(
    adapters: Adapters,
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    run_registry(
        &Registry::standard(),
        adapters,
        listener,
        settings,
        shutdown,
    )
    .await
}

/// [`run`] with the consumers of `registry`: one mapping each, with its own checkpoints, its
/// entry in `GET /shards`, and a say in what the in-memory stream may drop.
pub async fn run_registry(
    registry: &Registry,
    adapters: Adapters,
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let consumer_settings = consumer_settings(settings.processor);
    let mappings: Vec<Arc<EventSourceMapping>> = registry
        .iter()
        .map(|r| Arc::new(r.mapping(&adapters, &consumer_settings, settings.esm)))
        .collect();
    let tasks: Vec<_> = mappings
        .iter()
        .map(|m| tokio::spawn(m.clone().run(shutdown.clone())))
        .collect();
    let trim_task = adapters.memory_stream().map(|stream| {
        tokio::spawn(trim_consumed(
            stream,
            registry
                .names()
                .map(|name| adapters.checkpoints_of(name).reader)
                .collect(),
            shutdown.clone(),
        ))
    });

    let snapshot_task = settings.snapshots.and_then(|schedule| {
        let archive = adapters.memory_backend()?.archive.clone();
        Some(tokio::spawn(take_snapshots(
            adapters.clone(),
            archive,
            schedule,
            shutdown.clone(),
        )))
    });

    let mut ingest = IngestApi::new(
        Publisher::new(adapters.stream_writer(), settings.retry),
        adapters.idempotency_store(),
        settings.limits,
        Arc::new(SystemClock),
    );
    if let Some(ttl) = settings.idempotency_ttl {
        ingest = ingest.with_idempotency_ttl(ttl);
    }
    let query = registry
        .query_api(&adapters)
        .with_stuck_after(settings.stuck_after.unwrap_or(DEFAULT_STUCK_AFTER));
    let api = Arc::new(Api {
        ingest: Some(ingest),
        query: Some(query),
    });
    let app = Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(AppState {
            api,
            body_read_timeout: settings.network.body_read_timeout,
        });
    accept_loop(listener, app, settings.network, shutdown).await;
    for task in tasks {
        let _ = task.await;
    }
    // Locally what was accepted is consumed before the process ends: in memory the stream ends
    // with it, and on disk a restart after a graceful stop then has nothing to catch up on.
    // Against an endpoint the stream outlives the process, and each consumer resumes from OPLOG.
    if adapters.memory_backend().is_some() {
        for mapping in &mappings {
            mapping.drain().await;
        }
    }
    for task in [trim_task, snapshot_task].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    network: NetworkSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let admission = Admission::new(network.max_connections, network.max_connections_per_client);
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(network.header_read_timeout);
    let stopping = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a reset before accept: wait and go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection shed: at the connection bound");
            admission.shed(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(network.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = network.shutdown_grace.as_millis() as u64,
            "requests still in flight at the end of the shutdown grace were dropped"
        );
    }
}

fn to_response(response: ApiResponse) -> Response {
    let mut out = (response.status, response.body).into_response();
    for (name, value) in response.headers {
        out.headers_mut().insert(name, value);
    }
    out
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        state.body_read_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES + 1),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return to_response(body_error(&e).into_response()),
        Err(_) => {
            return to_response(
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::RequestTimeout,
                    format!(
                        "the request body did not arrive within {} s",
                        state.body_read_timeout.as_secs()
                    ),
                )
                .into_response(),
            )
        }
    };
    let request = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        content_type: content_type(&parts.headers),
        idempotency_key: idempotency_key(&parts.headers),
        body,
    };
    to_response(state.api.handle(request).await)
}

/// A body that could not be read: too long, or not valid HTTP framing (a malformed chunk).
fn body_error(error: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!("the request body is more than the {MAX_BODY_BYTES} bytes allowed"),
            );
        }
        source = e.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::MalformedBody,
        format!("the request body could not be read as HTTP/1.1: {error}"),
    )
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
