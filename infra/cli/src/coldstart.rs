//! `tidemark coldstart`: starts each function binary against a minimal local Lambda Runtime API
//! and measures the time from exec to its first `GET …/invocation/next` (start-up: config,
//! SDK clients, runtime), then hands it one invocation and reads its peak memory (VmHWM) once it
//! has answered. The same server answers the functions' Kinesis and DynamoDB calls with canned
//! successes, so what is measured is the function itself, not a network.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::sync::{mpsc, Mutex as AsyncMutex};

#[derive(Debug, thiserror::Error)]
pub enum ColdStartError {
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("{0} did not ask for an invocation within 10 s")]
    NoNext(PathBuf),
    #[error("{0} did not answer the invocation within 60 s")]
    NoResponse(PathBuf),
    #[error("{0} reported an error: {1}")]
    Reported(PathBuf, String),
    #[error("the local runtime API failed: {0}")]
    Server(std::io::Error),
}

/// What the runtime API saw of one function process.
enum Seen {
    Next(Instant),
    Response(String),
    Error(String),
}

struct Runtime {
    event: Mutex<Vec<u8>>,
    seen: AsyncMutex<Option<mpsc::UnboundedSender<Seen>>>,
    handed_out: Mutex<bool>,
}

async fn next(State(rt): State<Arc<Runtime>>) -> Response {
    let at = Instant::now();
    if let Some(tx) = rt.seen.lock().await.as_ref() {
        let _ = tx.send(Seen::Next(at));
    }
    let first = {
        let mut handed = rt.handed_out.lock().unwrap_or_else(|p| p.into_inner());
        !std::mem::replace(&mut *handed, true)
    };
    if !first {
        // One invocation per process: park the second `next` until the process is stopped.
        std::future::pending::<()>().await;
    }
    let event = rt.event.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 60_000;
    (
        [
            (
                "lambda-runtime-aws-request-id",
                "00000000-0000-0000-0000-000000000001".to_owned(),
            ),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:tidemark".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000001".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        event,
    )
        .into_response()
}

async fn respond(
    State(rt): State<Arc<Runtime>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    if let Some(tx) = rt.seen.lock().await.as_ref() {
        let _ = tx.send(Seen::Response(String::from_utf8_lossy(&body).into_owned()));
    }
    StatusCode::ACCEPTED
}

async fn error(State(rt): State<Arc<Runtime>>, body: Bytes) -> StatusCode {
    if let Some(tx) = rt.seen.lock().await.as_ref() {
        let _ = tx.send(Seen::Error(String::from_utf8_lossy(&body).into_owned()));
    }
    StatusCode::ACCEPTED
}

async fn invocation_error(
    state: State<Arc<Runtime>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    error(state, body).await
}

/// Canned successes for the AWS JSON protocols: PutRecord(s) acknowledged, writes accepted,
/// reads finding nothing.
async fn aws(headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let answer = match target {
        "Kinesis_20131202.PutRecord" => {
            json!({"ShardId": "shardId-000000000000", "SequenceNumber": "49590000000000000000000000000000000000000000000000000001"})
        }
        "Kinesis_20131202.PutRecords" => {
            let entries = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Records"].as_array().map(Vec::len))
                .unwrap_or(0);
            let records: Vec<_> = (0..entries)
                .map(|i| json!({"ShardId": "shardId-000000000000", "SequenceNumber": format!("4959{:052}", i + 1)}))
                .collect();
            json!({"FailedRecordCount": 0, "Records": records})
        }
        "DynamoDB_20120810.Scan" => json!({"Items": [], "Count": 0}),
        _ => json!({}),
    };
    (
        [("content-type", "application/x-amz-json-1.1")],
        answer.to_string(),
    )
        .into_response()
}

/// One measured start of one binary.
#[derive(Clone, Debug)]
pub struct Run {
    pub startup: Duration,
    pub invocation: Duration,
    pub peak_memory_kib: u64,
}

pub struct ColdStart {
    address: String,
    runtime: Arc<Runtime>,
}

impl ColdStart {
    pub async fn start() -> Result<Self, ColdStartError> {
        let runtime = Arc::new(Runtime {
            event: Mutex::new(Vec::new()),
            seen: AsyncMutex::new(None),
            handed_out: Mutex::new(false),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(error))
            .fallback(aws)
            .with_state(runtime.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ColdStartError::Server)?;
        let address = listener
            .local_addr()
            .map_err(ColdStartError::Server)?
            .to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { address, runtime })
    }

    /// Starts `binary` once with `event` as its invocation and measures it.
    pub async fn measure(&self, binary: &PathBuf, event: &[u8]) -> Result<Run, ColdStartError> {
        *self.runtime.event.lock().unwrap_or_else(|p| p.into_inner()) = event.to_vec();
        *self
            .runtime
            .handed_out
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = false;
        let (tx, mut rx) = mpsc::unbounded_channel();
        *self.runtime.seen.lock().await = Some(tx);

        let endpoint = format!("http://{}", self.address);
        let started = Instant::now();
        let mut child = tokio::process::Command::new(binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &self.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "tidemark")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("TIDEMARK_STREAM_NAME", "events")
            .env("TIDEMARK_STATUS_TABLE", "status")
            .env("TIDEMARK_OPLOG_TABLE", "oplog")
            .env("TIDEMARK_DEADLETTER_TABLE", "deadletter")
            .env("TIDEMARK_IDEMPOTENCY_TABLE", "idempotency")
            .env("TIDEMARK_ARCHIVE_BUCKET", "archive")
            .env("TIDEMARK_HISTORY_TABLE", "history")
            // The processor's allocator settings from template.yaml, so its peak is Lambda's.
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .env("MIMALLOC_PURGE_DELAY", "0")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ColdStartError::Spawn(binary.clone(), e))?;
        let pid = child.id().unwrap_or_default();

        let first_next = match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Seen::Next(at))) => at,
            Ok(Some(Seen::Error(e))) => return Err(ColdStartError::Reported(binary.clone(), e)),
            _ => return Err(ColdStartError::NoNext(binary.clone())),
        };
        let response = loop {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(Seen::Response(body))) => break body,
                Ok(Some(Seen::Error(e))) => {
                    return Err(ColdStartError::Reported(binary.clone(), e))
                }
                Ok(Some(Seen::Next(_))) => continue,
                _ => return Err(ColdStartError::NoResponse(binary.clone())),
            }
        };
        let answered = Instant::now();
        // The response is posted before the next `next`; give the process that moment.
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let peak = crate::bench::peak_memory_kib(pid).unwrap_or(0);
        let _ = child.kill().await;
        *self.runtime.seen.lock().await = None;
        if response.contains(r#""statusCode":5"#) || response.contains(r#""batchItemFailures":[{"#)
        {
            return Err(ColdStartError::Reported(binary.clone(), response));
        }
        Ok(Run {
            startup: first_next - started,
            invocation: answered - first_next,
            peak_memory_kib: peak,
        })
    }
}

/// The invocation each function gets: the `events/` fixtures `cargo lambda invoke` sends (an HTTP
/// API v2 request for ingest and query), and for the processor a synthetic Kinesis batch of
/// `records` records with distinct ids.
pub fn event_for(binary: &std::path::Path, records: usize) -> Result<Vec<u8>, serde_json::Error> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    Ok(match name {
        "processor" => {
            serde_json::to_vec(&tidemark_processor::synthetic::kinesis_event(records, 1))?
        }
        "query" => include_bytes!("../../../events/query/apigw-v2-get-message.json").to_vec(),
        _ => include_bytes!("../../../events/ingest/function-url-post-event.json").to_vec(),
    })
}
