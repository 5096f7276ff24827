//! `tidemark serve --data-dir` killed with SIGKILL at random moments while clients post events,
//! started again on the same directory each time: every event answered `202` is in STATUS (each
//! id is posted once, so as exactly that status), in HISTORY, and its read-your-writes token is
//! honoured; no sequence number is given twice across the restarts, and numbers given after a
//! restart are above every earlier one; the status view counts each once. A restart replays
//! nothing (the tables are on disk) yet no id read before a kill is missing right after the
//! restart, HISTORY keeps each entry's `archived_at`, and a keyed post's retry after the kill
//! is answered as it was. The real
//! binary, so the kill is a real one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{get_json, Serve};
use serde_json::{json, Value};
use tidemark::domain::SequenceNumber;

mod common;

const ROUNDS: usize = 4;
const CLIENTS: usize = 4;

/// `serve` on `dir` with two shards and a batching window of `window_ms`.
fn start(dir: &Path, window_ms: u64) -> Serve {
    let window_ms = window_ms.to_string();
    Serve::start(dir, &["--shards", "2", "--batch-window-ms", &window_ms])
}

/// An event the server answered 202 to.
#[derive(Clone, Debug)]
struct Acked {
    id: String,
    status: String,
    sequence_number: SequenceNumber,
    token: String,
}

/// Reads acknowledged ids (no waiting) until `stop`, keeping those already in STATUS.
async fn read_until_stopped(
    base: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let id = {
            let acked = acked.lock().unwrap();
            if acked.is_empty() {
                None
            } else {
                Some(acked[fastrand::usize(..acked.len())].id.clone())
            }
        };
        let Some(id) = id else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let Ok(answer) = http.get(format!("{base}/messages/{id}")).send().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if answer.status().as_u16() == 200 {
            seen.lock().unwrap().push(id);
        }
    }
}

/// Right after a restart, before anything else is posted: every id a reader saw before the kill
/// is read again, without waiting (no read after a restart shows less than one before it).
async fn still_there(base: &str, seen: &[String]) {
    let http = reqwest::Client::new();
    for id in seen {
        let answer = http
            .get(format!("{base}/messages/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status().as_u16(),
            200,
            "{id} was read before the kill and is gone right after the restart"
        );
    }
}

/// Posts events (single or batches of up to 5, each id once) until `stop`, keeping every 202.
async fn post_until_stopped(
    base: String,
    client: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) {
    let http = reqwest::Client::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let size = fastrand::usize(1..=5);
        let events: Vec<Value> = (0..size)
            .map(|i| {
                json!({"id": format!("r{round}-c{client}-{n}-{i}"), "status": format!("s-{round}-{client}-{n}-{i}")})
            })
            .collect();
        n += 1;
        let answer = if size == 1 {
            http.post(format!("{base}/events"))
                .json(&events[0])
                .send()
                .await
        } else {
            http.post(format!("{base}/events/batch"))
                .json(&json!({ "events": events }))
                .send()
                .await
        };
        let Ok(answer) = answer else {
            // The server is gone (killed): nothing more is acknowledged.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if answer.status().as_u16() != 202 {
            continue;
        }
        let Ok(body) = answer.json::<Value>().await else {
            continue; // the 202's body was cut by the kill: not known to be acknowledged
        };
        let results: Vec<Value> = if size == 1 {
            vec![body]
        } else {
            body["results"].as_array().cloned().unwrap_or_default()
        };
        let mut acked = acked.lock().unwrap();
        for (event, result) in events.iter().zip(results) {
            let (Some(sequence), Some(token)) =
                (result["sequence_number"].as_str(), result["token"].as_str())
            else {
                continue;
            };
            acked.push(Acked {
                id: event["id"].as_str().unwrap().to_owned(),
                status: event["status"].as_str().unwrap().to_owned(),
                sequence_number: SequenceNumber::parse(sequence).unwrap(),
                token: token.to_owned(),
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_answered_202_is_lost_to_kill_9_and_no_number_is_given_twice() {
    let dir = std::env::temp_dir().join(format!("tidemark-serve-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut highest_before: Option<SequenceNumber> = None;
    for round in 0..ROUNDS {
        // Windows from shorter than the run to longer than it: killed with nothing, some or all
        // of the round's events archived.
        let serve = start(&dir, fastrand::u64(50..2_000));
        let seen_before = seen.lock().unwrap().clone();
        still_there(&serve.base, &seen_before).await;
        let stop = Arc::new(AtomicBool::new(false));
        let first_of_round = acked.lock().unwrap().len();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                tokio::spawn(post_until_stopped(
                    serve.base.clone(),
                    client,
                    round,
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        let reader = tokio::spawn(read_until_stopped(
            serve.base.clone(),
            stop.clone(),
            acked.clone(),
            seen.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1_500))).await;
        serve.kill_9();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        reader.await.unwrap();
        let acked = acked.lock().unwrap();
        let this_round = &acked[first_of_round..];
        assert!(
            !this_round.is_empty(),
            "round {round}: nothing was acknowledged"
        );
        // Numbers given after a restart are above every number given before it.
        if let Some(before) = &highest_before {
            let lowest = this_round.iter().map(|a| &a.sequence_number).min().unwrap();
            assert!(
                lowest > before,
                "round {round}: {lowest} given after {before}"
            );
        }
        highest_before = this_round.iter().map(|a| a.sequence_number.clone()).max();
    }

    let acked = acked.lock().unwrap().clone();
    let numbers: HashSet<&SequenceNumber> = acked.iter().map(|a| &a.sequence_number).collect();
    assert_eq!(
        numbers.len(),
        acked.len(),
        "a sequence number was given twice"
    );

    let serve = start(&dir, 100);
    let seen_before = seen.lock().unwrap().clone();
    still_there(&serve.base, &seen_before).await;
    let http = reqwest::Client::new();
    for event in &acked {
        let answer = http
            .get(format!("{}/messages/{}", serve.base, event.id))
            .query(&[("after", event.token.as_str()), ("wait_ms", "5000")])
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let row: Value = answer.json().await.unwrap();
        assert_eq!(
            status, 200,
            "{} (acknowledged as {}): {row}",
            event.id, event.sequence_number
        );
        assert_eq!(row["status"], event.status.as_str(), "{row}");
        let history = history_of(&http, &serve.base, &event.id).await;
        let statuses: Vec<&str> = history
            .iter()
            .filter_map(|e| e["status"].as_str())
            .collect();
        assert_eq!(
            statuses,
            [event.status.as_str()],
            "{}: {history:?}",
            event.id
        );
    }
    // The status view: every acknowledged status counted once (each id has its own status),
    // and no status counted twice. Events stored whose 202 the kill cut off may be counted too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let wrong = loop {
        let counts = status_counts(&http, &serve.base).await;
        let wrong: Vec<_> = acked
            .iter()
            .map(|a| &a.status)
            .chain(counts.keys())
            .filter(|status| counts.get(*status) != Some(&1))
            .take(10)
            .map(|status| (status.clone(), counts.get(status).copied()))
            .collect();
        if wrong.is_empty() || std::time::Instant::now() > deadline {
            break wrong;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        wrong.is_empty(),
        "the status view's counts, (status, count) not 1: {wrong:?}"
    );

    // One more kill and restart: nothing is read from the archive again, and HISTORY's entries
    // keep the time they were archived at.
    let sample = &acked[..acked.len().min(50)];
    let mut archived_at = Vec::new();
    for event in sample {
        archived_at.push(history_of(&http, &serve.base, &event.id).await[0]["archived_at"].clone());
    }
    // A keyed post, answered, then the kill: its retry is answered the same, not put again.
    let keyed = |base: &str| {
        http.post(format!("{base}/events"))
            .header("idempotency-key", "crash-test-key-1")
            .json(&json!({"id": "keyed-1", "status": "once"}))
            .send()
    };
    let first = keyed(&serve.base).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    serve.kill_9();
    let serve = start(&dir, 100);
    assert!(
        !serve.started.iter().any(|l| l.contains("restored")),
        "a restart over tables on disk replays nothing: {:?}",
        serve.started
    );
    let retry = keyed(&serve.base).await.unwrap();
    assert_eq!(retry.status(), 202);
    assert!(retry.headers().contains_key("idempotent-replayed"));
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    for (event, archived_at) in sample.iter().zip(archived_at) {
        let history = history_of(&http, &serve.base, &event.id).await;
        assert_eq!(history[0]["archived_at"], archived_at, "{}", event.id);
        assert_eq!(history[0]["status"], event.status.as_str());
    }
    println!(
        "{} acknowledged events over {ROUNDS} kills: all there",
        acked.len()
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data directory that cannot be made is a clear error at start-up naming it, not a panic and
/// not a server that answers 202 for events it cannot keep.
#[test]
fn a_data_dir_that_cannot_be_written_stops_serve_at_start_naming_it() {
    let file = std::env::temp_dir().join(format!("tidemark-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"a file, not a directory").unwrap();
    let dir = file.join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&*file.to_string_lossy()),
        "the error names the directory: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
    let _ = std::fs::remove_file(&file);
}

/// The entries of `id`'s history, newest first.
async fn history_of(http: &reqwest::Client, base: &str, id: &str) -> Vec<Value> {
    let history: Value = get_json(http, format!("{base}/messages/{id}/history")).await;
    history["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no history for {id}: {history}"))
        .clone()
}

/// Every status of the status view, with its count.
async fn status_counts(http: &reqwest::Client, base: &str) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = http
            .get(format!("{base}/statuses"))
            .query(&[("limit", "1000")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        for entry in page["statuses"].as_array().unwrap() {
            counts.insert(
                entry["status"].as_str().unwrap().to_owned(),
                entry["count"].as_i64().unwrap(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return counts,
        }
    }
}
