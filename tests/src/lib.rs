//! Helpers for the end-to-end and integration tests.
//!
//! Integration tests find Kinesis and DynamoDB through the standard `AWS_ENDPOINT_URL` (LocalStack
//! started by `./scripts/test`, one someone already runs, or any compatible endpoint). They never
//! skip: a missing or silent endpoint is a loud failure naming it and the fix. Each test creates
//! its own stream and tables under unique names and deletes them when it ends, pass or fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use tidemark::adapters::bootstrap::ensure_resources;
use tidemark::adapters::sdk::load_sdk_config;
use tidemark::adapters::Adapters;
use tidemark::config::ResourceNames;

pub mod kafka;
mod wait;
pub use wait::{
    all_records, json_answer, message, stream_tails, wait_for, wait_for_rows, wait_for_statuses,
    wait_until_applied,
};

/// Reads a positive number from the environment, or the default.
pub fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// The endpoint under test, checked to answer. Panics with the fix when it does not.
pub async fn endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
            "AWS_ENDPOINT_URL is not set. The integration tests need Kinesis and DynamoDB: run \
             ./scripts/test (it starts LocalStack), or start one with infra/localstack/up and set \
             AWS_ENDPOINT_URL=http://127.0.0.1:4566"
        )
        });
    let address = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&address),
    )
    .await;
    if !matches!(connect, Ok(Ok(_))) {
        panic!(
            "the endpoint {endpoint} (AWS_ENDPOINT_URL) did not answer. Start LocalStack with \
             infra/localstack/up, or point AWS_ENDPOINT_URL at a running one"
        );
    }
    endpoint
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A stream and three tables of one test, deleted when dropped.
pub struct Resources {
    pub names: ResourceNames,
    pub sdk: SdkConfig,
    pub endpoint: String,
}

/// An S3 bucket name from a unique name: 3–63 lowercase letters, digits and hyphens, starting
/// with a letter or digit. The end of the name is kept: it holds what makes it unique.
fn bucket_name(unique: &str) -> String {
    let name = format!("{unique}-archive")
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    name[name.len().saturating_sub(63)..]
        .trim_start_matches('-')
        .to_owned()
}

impl Resources {
    /// Creates a stream of `shards` shards and the tables under names unique to this run.
    pub async fn create(test: &str, shards: u32) -> Self {
        let endpoint = endpoint().await;
        let unique = format!(
            "tm-{test}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            fastrand::u32(..)
        );
        let names = ResourceNames {
            stream: format!("{unique}-events"),
            status_table: format!("{unique}-status"),
            oplog_table: format!("{unique}-oplog"),
            deadletter_table: format!("{unique}-deadletter"),
            idempotency_table: format!("{unique}-idempotency"),
            archive_bucket: bucket_name(&unique),
            status_view_table: format!("{unique}-status-view"),
            history_table: Some(format!("{unique}-history")),
        };
        let sdk = load_sdk_config(Some(&endpoint)).await;
        ensure_resources(&sdk, &names, shards)
            .await
            .unwrap_or_else(|e| panic!("creating test resources at {endpoint} failed: {e}"));
        Self {
            names,
            sdk,
            endpoint,
        }
    }

    pub fn adapters(&self) -> Adapters {
        Adapters::aws(&self.sdk, &self.names)
    }

    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&self.sdk)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        let (sdk, names) = (self.sdk.clone(), self.names.clone());
        // Drop cannot await: delete on a runtime of its own, on its own thread.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let kinesis = aws_sdk_kinesis::Client::new(&sdk);
                let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
                let _ = kinesis
                    .delete_stream()
                    .stream_name(&names.stream)
                    .enforce_consumer_deletion(true)
                    .send()
                    .await;
                for table in [
                    &names.status_table,
                    &names.oplog_table,
                    &names.deadletter_table,
                    &names.idempotency_table,
                    &names.status_view_table,
                ]
                .into_iter()
                .chain(&names.history_table)
                {
                    let _ = dynamodb.delete_table().table_name(table).send().await;
                }
                // A bucket is deleted only once empty.
                let s3 = tidemark::adapters::s3::S3Archive::client(&sdk);
                let bucket = &names.archive_bucket;
                if let Ok(listed) = s3.list_objects_v2().bucket(bucket).send().await {
                    for object in listed.contents() {
                        if let Some(key) = object.key() {
                            let _ = s3.delete_object().bucket(bucket).key(key).send().await;
                        }
                    }
                }
                let _ = s3.delete_bucket().bucket(bucket).send().await;
            })
        })
        .join();
        if deleted.is_err() {
            eprintln!("could not delete the test resources {:?}", self.names);
        }
    }
}

/// A TCP proxy in front of an endpoint that can be taken down (refusing and cutting every
/// connection) and brought back: a real network outage for one client, the others unaffected.
pub struct Outage {
    pub url: String,
    down: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    pub refused: Arc<AtomicU32>,
}

impl Outage {
    pub async fn in_front_of(endpoint: &str) -> Self {
        let target = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(AtomicU32::new(0));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let (d, r) = (down.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                // Only cuts from now on concern this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self {
            url,
            down,
            cut,
            refused,
        }
    }

    /// Cuts open connections and refuses new ones until `restore`.
    pub fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// `tidemark serve` running in this process.
pub struct Running {
    pub base: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), tidemark_cli::serve::ServeError>>,
}

impl Running {
    pub async fn start(adapters: Adapters, settings: tidemark_cli::serve::ServeSettings) -> Self {
        Self::start_registry(
            tidemark::run::registry::Registry::standard(),
            adapters,
            settings,
        )
        .await
    }

    /// As [`Self::start`], running the consumers of `registry`.
    pub async fn start_registry(
        registry: tidemark::run::registry::Registry,
        adapters: Adapters,
        settings: tidemark_cli::serve::ServeSettings,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            tidemark_cli::serve::run_registry(&registry, adapters, listener, settings, shutdown)
                .await
        });
        Self { base, stop, task }
    }

    /// Stops it the way SIGTERM does and waits until it has.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }

    /// Ends it abruptly, mid-whatever, like a crashed process.
    pub fn crash(self) {
        self.task.abort();
    }
}

/// Settings that make a local run quick: small batching window, frequent polls.
pub fn quick_settings() -> tidemark_cli::serve::ServeSettings {
    tidemark_cli::serve::ServeSettings {
        esm: tidemark::run::esm::EsmSettings {
            batch_size: 100,
            batching_window: Duration::from_millis(50),
            idle_poll_interval: Duration::from_millis(50),
            shard_refresh_interval: Duration::from_millis(250),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            max_retry_attempts: Some(tidemark::run::esm::DEFAULT_MAX_RETRY_ATTEMPTS),
        },
        ..Default::default()
    }
}
