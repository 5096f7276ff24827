//! The README's run command, end to end: the real `tidemark serve` binary with its defaults (its
//! data in ./tidemark-data), driven over HTTP. Out-of-order, duplicate and batched events for
//! one id read back as the newest, and again after a restart; every kind of bad request gets its
//! documented 4xx JSON error; SIGTERM stops it cleanly; a second serve on the same directory is
//! refused naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tidemark::domain::SequenceNumber;

use serde_json::{json, Value};

struct Serve {
    child: Child,
    base: String,
}

/// An empty directory to start serve in (its default data directory goes there).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Serve {
    fn start(cwd: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .current_dir(cwd)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--batch-window-ms",
                "100",
            ])
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tidemark binary starts");
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let base = first_line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first_line:?}"))
            .to_owned();
        Self { child, base }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.child.kill().unwrap();
        panic!("tidemark serve did not stop within 5 s of SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The JSON answer to a GET of `url`.
async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn newest_event_wins_whatever_the_order() {
    let cwd = scratch("order");
    let serve = Serve::start(&cwd);
    let client = reqwest::Client::new();
    let events = format!("{}/events", serve.base);
    // The newest event first, through the batch route, so that it must beat later arrivals.
    let (code, body) = post(&client, format!("{}/events/batch", serve.base), &json!({"events": [
        {"id": "order-9", "status": "packed", "timestamp": "2024-05-01T12:30:00Z"},
        {"id": "order-9", "status": "returned", "timestamp": "2024-05-01T13:30:00.000000001Z", "data": {"reason": "damaged"}},
        {"id": "order-10", "status": "created"},
        {"id": "", "status": "broken"},
    ]})).await;
    assert_eq!(code, 207, "{body}");
    // The last acknowledged position on each shard, to wait for the processor to pass.
    let mut acknowledged: HashMap<String, SequenceNumber> = HashMap::new();
    let mut note = |answer: &Value| {
        if let (Some(shard), Some(sequence)) = (
            answer["shard_id"].as_str(),
            answer["sequence_number"].as_str(),
        ) {
            let sequence = SequenceNumber::parse(sequence).unwrap();
            let last = acknowledged
                .entry(shard.to_owned())
                .or_insert(sequence.clone());
            *last = last.clone().max(sequence);
        }
    };
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(&mut note);

    // Then older events, arriving later: timestamps reversed, offsets mixed, duplicates. A
    // view that kept the last arrival would end at "created".
    for (status, timestamp) in [
        ("delivered", "2024-05-01T15:00:00+02:00"),
        ("shipped", "2024-05-01T12:00:00Z"),
        ("delivered", "2024-05-01T15:00:00+02:00"),
        ("created", "2024-05-01T06:00:00-05:00"),
    ] {
        let (code, body) = post(
            &client,
            events.clone(),
            &json!({"id": "order-9", "status": status, "timestamp": timestamp}),
        )
        .await;
        assert_eq!(code, 202, "{body}");
        note(&body);
    }
    // Read once, after the processor's checkpoint has passed every event put: a read that
    // stopped at the first "returned" would pass a view that later fell back to "created".
    let mut caught_up = false;
    for _ in 0..200 {
        let shards: Value = get_json(&client, format!("{}/shards", serve.base)).await;
        let shards = shards["shards"].as_array().unwrap();
        caught_up = acknowledged.iter().all(|(shard, sequence)| {
            shards.iter().any(|s| {
                s["shard_id"] == shard.as_str()
                    && s["sequence_number"]
                        .as_str()
                        .and_then(|n| SequenceNumber::parse(n).ok())
                        .is_some_and(|n| n >= *sequence)
            })
        });
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        caught_up,
        "the processor never checkpointed past {acknowledged:?}"
    );
    // Newest: 13:30:00.000000001Z ("returned"), later than 15:00+02:00 = 13:00Z ("delivered").
    let last: Value = get_json(&client, format!("{}/messages/order-9", serve.base)).await;
    assert_eq!(last["status"], "returned", "{last}");
    assert_eq!(last["data"], json!({"reason": "damaged"}));
    assert_eq!(last["timestamp"], "2024-05-01T13:30:00.000000001Z");

    let shards: Value = get_json(&client, format!("{}/shards", serve.base)).await;
    let applied: u64 = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["records_applied"].as_u64().unwrap())
        .sum();
    // Six events for order-9 and one for order-10, each applied once: the invalid one never
    // reached the stream.
    assert_eq!(applied, 7, "{shards}");

    // A second serve on the same directory is refused at once, naming what is in use.
    let second = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .current_dir(&cwd)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tidemark-data") && stderr.contains("in use"),
        "{stderr}"
    );

    assert!(serve.stop().success());
    assert!(cwd.join("tidemark-data/tables.redb").is_file());
    // Started again where it was: the same row, and the processor's checkpoints where they were.
    let serve = Serve::start(&cwd);
    let again: Value = get_json(&client, format!("{}/messages/order-9", serve.base)).await;
    assert_eq!(again, last, "after a restart");
    let positions = |shards: &Value| -> Vec<(Value, Value, Value)> {
        shards["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["shard_id"].clone(),
                    s["sequence_number"].clone(),
                    s["records_applied"].clone(),
                )
            })
            .collect()
    };
    let shards_again: Value = get_json(&client, format!("{}/shards", serve.base)).await;
    assert_eq!(positions(&shards_again), positions(&shards));
    assert!(serve.stop().success());
    let _ = std::fs::remove_dir_all(&cwd);
}

#[tokio::test]
async fn bad_requests_get_documented_4xx_errors() {
    let cwd = scratch("bad-requests");
    let serve = Serve::start(&cwd);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", serve.base);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client
                .post(url("/events"))
                .header("content-type", "application/json")
                .body("{"),
            400,
            "malformed_json",
        ),
        (
            client.post(url("/events")).json(&json!({"id": "a"})),
            400,
            "required",
        ),
        (
            client
                .post(url("/events"))
                .json(&json!({"id": "a", "status": "s", "timestamp": "2999-01-01T00:00:00Z"})),
            400,
            "future_timestamp",
        ),
        (
            client
                .post(url("/events"))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            client
                .post(url("/events/batch"))
                .json(&json!({"events": []})),
            400,
            "batch_size",
        ),
        (
            client
                .post(url("/events"))
                .header("content-type", "application/json")
                .body(vec![b' '; 5 * 1024 * 1024 + 1]),
            413,
            "body_too_large",
        ),
        (client.get(url("/events")), 405, "method_not_allowed"),
        (client.get(url("/messages/nobody")), 404, "not_found"),
        (client.get(url("/nowhere")), 404, "not_found"),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{code}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert!(serve.stop().success());
}

/// `tidemark smoke` (what scripts/smoke runs): it passes against `serve`, and against a wrong URL
/// it exits 1 naming the step and the URL it could not reach.
#[tokio::test]
async fn the_smoke_test_passes_against_serve_and_fails_clearly_on_a_wrong_url() {
    let cwd = scratch("smoke");
    let serve = Serve::start(&cwd);
    let smoke = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["smoke", url, "--attempts", "40"])
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    };
    let passed = smoke(&serve.base);
    let stdout = String::from_utf8_lossy(&passed.stdout);
    assert!(
        passed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    for step in [
        "POST /events -> 202",
        "with the token -> 200 smoke-delivered",
        "-> 304 unchanged",
        "both events, newest first",
        "GET /shards ->",
        "GET /statuses ->",
        "passed",
    ] {
        assert!(stdout.contains(step), "{step} missing from:\n{stdout}");
    }

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let failed = smoke(&url);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("POST /events: cannot reach") && stderr.contains(&url),
        "{stderr}"
    );
    // A URL that answers, but is not Tidemark.
    let failed = smoke(&format!("{}/not-tidemark", serve.base));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("POST /events: expected 202, got 404"),
        "{stderr}"
    );
    assert!(serve.stop().success());
}
