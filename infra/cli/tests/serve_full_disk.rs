//! `serve` when its files cannot grow (issue 22: a full disk), with the real binary under a
//! file-size limit: posts are answered `503` with the reason once the log cannot take them,
//! never `202` for an event not stored and never a panic; the process keeps answering; and
//! once there is room again (a restart without the limit) every event answered `202` is read
//! back. Too little room to create the files at all stops `serve` at start, naming the file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{get_json, Serve};
use serde_json::{json, Value};

mod common;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-full-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Far more than an empty data directory's files take, far less than the posts below need.
const ROOM: u64 = 8 << 20;

#[tokio::test]
async fn a_full_disk_is_answered_503_and_loses_nothing_acknowledged() {
    let dir = scratch("posts");
    let serve = Serve::start_with_file_limit(&dir, &["--batch-window-ms", "50"], ROOM);
    let http = reqwest::Client::new();
    let padding = "x".repeat(4000);
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut refusal = None;
    // 40 MB of events at most: the log alone outgrows the room long before.
    for round in 0..200 {
        let events: Vec<Value> = (0..50)
            .map(|i| {
                json!({"id": format!("order-{round}-{i}"), "status": format!("s{}", i % 7),
                       "data": {"padding": padding}})
            })
            .collect();
        let response = http
            .post(format!("{}/events/batch", serve.base))
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap();
        match code {
            202 => {
                for event in &events {
                    acknowledged.insert(
                        event["id"].as_str().unwrap().to_owned(),
                        event["status"].as_str().unwrap().to_owned(),
                    );
                }
            }
            // Some of a batch may be stored before the log fills: each result says which.
            207 | 503 => {
                for (event, result) in events
                    .iter()
                    .zip(body["results"].as_array().into_iter().flatten())
                {
                    if result["status"] == 202 {
                        acknowledged.insert(
                            event["id"].as_str().unwrap().to_owned(),
                            event["status"].as_str().unwrap().to_owned(),
                        );
                    }
                }
                refusal = Some((code, retry_after, body));
                break;
            }
            other => panic!("answered {other} while the disk filled: {body}"),
        }
    }
    let (code, retry_after, body) = refusal.expect("the log never ran out of room");
    let text = body.to_string();
    assert!(
        text.contains("log.redb") && (text.contains("full disk") || text.contains("too large")),
        "the reason names the file and the cause ({code}): {text}"
    );
    assert!(
        code == 207 || retry_after,
        "a 503 says when to retry: {text}"
    );
    assert!(
        !acknowledged.is_empty(),
        "nothing was accepted before the disk filled"
    );
    // Still answering, and still refusing rather than accepting what it cannot store.
    let health = http
        .get(format!("{}/openapi.json", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let again = http
        .post(format!("{}/events", serve.base))
        .json(&json!({"id": "late", "status": "new", "data": {"padding": padding}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 503);
    serve.kill_9();

    // Room again: every acknowledged event is there, with its status.
    let serve = Serve::start(&dir, &["--batch-window-ms", "50"]);
    for (id, status) in &acknowledged {
        let row: Value = get_json(&http, format!("{}/messages/{id}", serve.base)).await;
        assert_eq!(row["status"].as_str(), Some(status.as_str()), "{id}: {row}");
    }
    assert!(serve.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_little_room_to_start_stops_serve_naming_the_file() {
    let dir = scratch("start");
    let output = Command::new("bash")
        .args([
            "-c",
            r#"trap "" XFSZ; exec prlimit --fsize=4096 "$0" "$@""#,
            env!("CARGO_BIN_EXE_tidemark"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "serve started with no room: {stderr}"
    );
    assert!(stderr.contains(".redb"), "the file is named: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::thread::sleep(Duration::from_millis(10));
    let _ = std::fs::remove_dir_all(&dir);
}
