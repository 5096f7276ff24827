//! Read-your-writes through `tidemark serve`, in memory and against LocalStack: concurrent
//! writers read each of their writes back with its token straight after the 202, and never see
//! an older state; with the processor held back, a read with `wait_ms=0` answers 409
//! not_yet_visible with the current row.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use tidemark::adapters::Adapters;
use tidemark::domain::{Clock, SystemClock};
use tidemark_cli::serve::ServeSettings;
use tidemark_tests::kafka::{kafka_log, over_kafka};
use tidemark_tests::{env_usize, quick_settings, Resources, Running};

/// Posts one event and returns the answer's body.
async fn post_event(http: &reqwest::Client, base: &str, event: &Value) -> Value {
    let response = http
        .post(format!("{base}/events"))
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    response.json().await.unwrap()
}

/// What the writers saw: reads that returned a state older than their own write (must be 0),
/// and 409s that a client would retry (allowed; each is retried until the write shows).
#[derive(Default, Debug)]
struct Seen {
    reads: usize,
    older_than_own_write: usize,
    not_yet_visible: usize,
}

/// Writer `w` owns ids `w-0..w-3` and writes them one after another, each write timestamped
/// (with this clock, taken after the previous write's 202) or stamped with the receive time: so
/// the newest write of each id is always the writer's own last one, and any other status read
/// back is older.
async fn writer(base: String, w: usize, writes: usize) -> Seen {
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    for i in 0..writes {
        let id = format!("w{w}-{}", i % 4);
        let status = format!("s{i}");
        // Every third write has no timestamp and gets the receive time.
        let event = if i % 3 == 2 {
            json!({"id": id, "status": status})
        } else {
            json!({"id": id, "status": status, "timestamp": SystemClock.now().to_rfc3339()})
        };
        let accepted = post_event(&http, &base, &event).await;
        let token = accepted["token"]
            .as_str()
            .expect("a 202 carries a token")
            .to_owned();
        // Each read waits up to 2 s on the server: 60 of them is two minutes of waiting.
        for attempt in 1.. {
            let response = http
                .get(format!("{base}/messages/{id}?after={token}&wait_ms=2000"))
                .send()
                .await
                .unwrap();
            let code = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            seen.reads += 1;
            match code {
                200 => {
                    if body["status"] != status.as_str() {
                        seen.older_than_own_write += 1;
                    }
                    break;
                }
                409 => {
                    assert_eq!(body["error"]["code"], "not_yet_visible", "{body}");
                    seen.not_yet_visible += 1;
                    assert!(
                        attempt < 60,
                        "write {id}/{status} not visible after {attempt} waiting reads"
                    );
                }
                other => panic!("read with a token answered {other}: {body}"),
            }
        }
    }
    seen
}

async fn concurrent_writers_read_their_own_writes(adapters: Adapters, writes: usize) {
    let running = Running::start(adapters, quick_settings()).await;
    let writers = env_usize("TIDEMARK_RYW_WRITERS", 8);
    let results = join_all((0..writers).map(|w| writer(running.base.clone(), w, writes))).await;
    let reads: usize = results.iter().map(|s| s.reads).sum();
    let older: usize = results.iter().map(|s| s.older_than_own_write).sum();
    assert_eq!(
        older, 0,
        "reads older than the client's own write: {results:?}"
    );
    assert!(reads >= writers * writes);
    running.stop().await;
}

/// The processor held back (a batching window far longer than the test): the write is on the
/// stream, not in STATUS.
fn paused_processor() -> ServeSettings {
    let mut settings = quick_settings();
    settings.esm.batch_size = 10_000;
    settings.esm.batching_window = Duration::from_secs(3600);
    settings
}

async fn not_yet_visible_while_the_processor_is_paused(adapters: Adapters) {
    let running = Running::start(adapters, paused_processor()).await;
    let http = reqwest::Client::new();
    let accepted = post_event(
        &http,
        &running.base,
        &json!({"id": "paused", "status": "s"}),
    )
    .await;
    let token = accepted["token"].as_str().unwrap();
    let response = http
        .get(format!(
            "{}/messages/paused?after={token}&wait_ms=0",
            running.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_yet_visible");
    assert_eq!(body["current"], Value::Null);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_writers_never_read_older_than_their_own_write() {
    concurrent_writers_read_their_own_writes(
        Adapters::memory(4),
        env_usize("TIDEMARK_RYW_WRITES", 60),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_not_yet_visible_while_paused() {
    not_yet_visible_while_the_processor_is_paused(Adapters::memory(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_writers_never_read_older_than_their_own_write() {
    let adapters = over_kafka(Adapters::memory(2), kafka_log("ryw", 2).await);
    concurrent_writers_read_their_own_writes(adapters, env_usize("TIDEMARK_RYW_WRITES", 15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_not_yet_visible_while_paused() {
    let adapters = over_kafka(Adapters::memory(1), kafka_log("rywpause", 1).await);
    not_yet_visible_while_the_processor_is_paused(adapters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstack_writers_never_read_older_than_their_own_write() {
    let r = Resources::create("ryw", 2).await;
    concurrent_writers_read_their_own_writes(r.adapters(), env_usize("TIDEMARK_RYW_WRITES", 15))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstack_not_yet_visible_while_paused() {
    let r = Resources::create("rywpause", 1).await;
    not_yet_visible_while_the_processor_is_paused(r.adapters()).await;
}
