//! `tidemark serve`.

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
use tidemark::archiver::Archiver;
use tidemark::config::ResourceNames;
use tidemark::consumer::{BatchOutcome, Consumer};
use tidemark::domain::limits::{DEFAULT_STUCK_AFTER, MAX_BODY_BYTES};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::{Limits, SequenceNumber, SystemClock};
use tidemark::esm::{EsmSettings, EventSourceMapping};
use tidemark::ports::CheckpointReader;
use tidemark::ports::StreamRecord;
use tidemark::processor::ProcessorSettings;
use tidemark::publish::{Publisher, RetryPolicy};
use tidemark::rebuild::{
    rebuild_from_archive, ArchiveRebuild, RebuildError, RebuildProgress, RebuildReport,
};
use tidemark::registry::{ConsumerSettings, Registry};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

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
    /// Connections served at once; past it, new ones wait in the kernel's accept queue.
    pub max_connections: usize,
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
/// Long enough for a batch request in flight; short enough for a container's stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
    let trim_task = adapters.memory_backend().map(|memory| {
        tokio::spawn(trim_consumed(
            memory.stream.clone(),
            registry
                .names()
                .map(|name| adapters.checkpoints_of(name).reader)
                .collect(),
            shutdown.clone(),
        ))
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
    // In memory the stream ends with the process: what was accepted is consumed first, so a
    // graceful stop of `serve --data-dir` archives everything it answered 202 to. Against an
    // endpoint the stream outlives the process, and each consumer resumes from OPLOG instead.
    if adapters.memory_backend().is_some() {
        for mapping in &mappings {
            mapping.drain().await;
        }
    }
    if let Some(trim_task) = trim_task {
        let _ = trim_task.await;
    }
    Ok(())
}

/// How often `serve` in memory drops the records every consumer has checkpointed past.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

fn consumer_settings(processor: ProcessorSettings) -> ConsumerSettings {
    ConsumerSettings {
        processor,
        clock: Arc::new(SystemClock),
    }
}

/// What `serve --data-dir` does at start-up, before it serves: STATUS and HISTORY again from
/// the archive an earlier run left in the directory, and the in-memory stream numbered past it.
/// The archive is the only thing kept; a graceful stop archives everything first, so only a
/// crash loses what was accepted but not yet archived (README).
pub async fn restore_from_archive(
    adapters: &Adapters,
    settings: ProcessorSettings,
) -> Result<RebuildReport, RebuildError> {
    let registry = Registry::standard();
    let consumer_settings = consumer_settings(settings);
    // Every consumer again over the archive, except that the archiver only rewrites HISTORY:
    // the archive is what is being read.
    let consumers = registry
        .iter()
        .map(|r| -> Arc<dyn Consumer> {
            if r.name == ConsumerName::ARCHIVER {
                Arc::new(Archiver::history_only(
                    adapters.history_writer(),
                    settings.limits,
                    Arc::new(SystemClock),
                ))
            } else {
                r.consumer(adapters, &consumer_settings)
            }
        })
        .collect();
    let restore = Restore {
        consumers,
        newest: std::sync::Mutex::new(None),
    };
    let report = rebuild_from_archive(
        ArchiveRebuild::new(adapters.archive_reader().as_ref(), &restore),
        &mut RebuildProgress::default(),
    )
    .await?;
    let newest = restore
        .newest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let (Some(memory), Some(newest)) = (adapters.memory_backend(), newest) {
        memory.stream.continue_after(&newest);
    }
    Ok(report)
}

/// Every consumer over the same records, noting the newest sequence number.
struct Restore {
    consumers: Vec<Arc<dyn Consumer>>,
    newest: std::sync::Mutex<Option<SequenceNumber>>,
}

#[async_trait::async_trait]
impl Consumer for Restore {
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        if let Some(last) = records.iter().map(|r| &r.sequence_number).max() {
            let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            if newest.as_ref().is_none_or(|n| last > n) {
                *newest = Some(last.clone());
            }
        }
        // The last consumer's outcome stands for the batch; any failure stops it first.
        let mut outcome = None;
        for consumer in &self.consumers {
            let this = consumer.consume(shard_id, records).await;
            if this.failure.is_some() {
                return this;
            }
            outcome = Some(this);
        }
        outcome.unwrap_or_else(|| BatchOutcome {
            failure: None,
            checkpoint: None,
            processed_at: String::new(),
            report: Default::default(),
        })
    }
}

/// Keeps the in-memory stream to what is not yet consumed, so memory stays flat under a steady
/// load: every `TRIM_INTERVAL`, each shard's records up to the lowest of its consumers'
/// checkpoints (the processor's and the archiver's) are dropped; a shard a consumer has no
/// checkpoint for yet is kept whole. Kinesis keeps records for its retention period instead.
async fn trim_consumed(
    stream: Arc<MemoryStream>,
    consumers: Vec<Arc<dyn CheckpointReader>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TRIM_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        // An in-memory read cannot fail; if it ever did, the next round tries again.
        let mut lowest: Option<HashMap<String, SequenceNumber>> = None;
        for consumer in &consumers {
            let Ok(checkpoints) = consumer.list().await else {
                lowest = None;
                break;
            };
            let theirs: HashMap<String, SequenceNumber> = checkpoints
                .into_iter()
                .map(|c| (c.shard_id, c.sequence_number))
                .collect();
            lowest = Some(match lowest {
                None => theirs,
                Some(mut so_far) => {
                    so_far.retain(|shard, sequence| match theirs.get(shard) {
                        Some(other) => {
                            if other < sequence {
                                sequence.clone_from(other);
                            }
                            true
                        }
                        None => false,
                    });
                    so_far
                }
            });
        }
        for (shard_id, sequence_number) in lowest.unwrap_or_default() {
            stream.trim_through(&shard_id, &sequence_number);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    network: NetworkSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(network.max_connections.max(1)));
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
        let permit = tokio::select! {
            () = &mut stopping => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
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
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
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
