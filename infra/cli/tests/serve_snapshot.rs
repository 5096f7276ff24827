//! Snapshots of `serve`'s data directory (issue 24, item 4), with the real binary: a snapshot
//! taken by `tidemark snapshot --data-dir` of a stopped serve, and the rolling ones a running
//! serve takes with `--snapshot-interval-secs`; `tidemark rebuild --data-dir --from-snapshot`
//! makes a view again from one, and the next serve applies only the log after its positions
//! (exactly the records posted after it) before it listens, so its first reads equal what was
//! read before. A corrupt snapshot is refused with the reason, and the view is then made again
//! from the whole log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{get_json, tidemark, Serve};
use serde_json::{json, Value};

mod common;

/// Each id's newest status, by the events' timestamps (all distinct).
type Model = BTreeMap<String, (String, String)>;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Posts `count` events over `ids` ids in shuffled batches, with distinct timestamps in random
/// order, into `model`; every one must be accepted.
async fn post_round(base: &str, round: u32, count: usize, ids: usize, model: &mut Model) {
    let http = reqwest::Client::new();
    let statuses = ["created", "packed", "shipped", "delivered", "returned"];
    let mut events: Vec<Value> = (0..count)
        .map(|i| {
            let id = format!("order-{}", fastrand::usize(..ids));
            let status = statuses[fastrand::usize(..statuses.len())];
            // Distinct across rounds: round, then a shuffled position.
            let nanos = round as usize * 1_000_000 + fastrand::usize(..999) * 1000 + i;
            let timestamp = format!("2026-01-01T00:00:00.{nanos:09}Z");
            json!({"id": id, "status": status, "timestamp": timestamp})
        })
        .collect();
    fastrand::shuffle(&mut events);
    for event in &events {
        let (id, status, timestamp) = (
            event["id"].as_str().unwrap().to_owned(),
            event["status"].as_str().unwrap().to_owned(),
            event["timestamp"].as_str().unwrap().to_owned(),
        );
        let newer = model.get(&id).is_none_or(|(_, t)| *t < timestamp);
        if newer {
            model.insert(id, (status, timestamp));
        }
    }
    for batch in events.chunks(100) {
        let response = http
            .post(format!("{base}/events/batch"))
            .json(&json!({ "events": batch }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            202,
            "{:?}",
            response.text().await
        );
    }
}

/// Every id's status and every status's count as served now, and whether both match `model`.
async fn read_all(base: &str, model: &Model) -> (BTreeMap<String, String>, bool) {
    let http = reqwest::Client::new();
    let mut read = BTreeMap::new();
    for id in model.keys() {
        let row: Value = get_json(&http, format!("{base}/messages/{id}")).await;
        read.insert(
            id.clone(),
            row["status"].as_str().unwrap_or("(none)").to_owned(),
        );
    }
    let counts: Value = get_json(&http, format!("{base}/statuses")).await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (status, _) in model.values() {
        *expected.entry(status.clone()).or_default() += 1;
    }
    let served: BTreeMap<String, u64> = counts["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["status"].as_str().unwrap().to_owned(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let rows_match = model.iter().all(|(id, (status, _))| &read[id] == status);
    for (status, count) in &served {
        read.insert(format!("count of {status}"), count.to_string());
    }
    (read, rows_match && served == expected)
}

/// Waits until every consumer has applied what was posted.
async fn settled(base: &str, model: &Model) -> BTreeMap<String, String> {
    for _ in 0..300 {
        let (read, matches) = read_all(base, model).await;
        if matches {
            return read;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("serve did not apply every event within 30 s");
}

/// The count of records the processor applied again before listening, from its start-up lines.
fn caught_up(serve: &Serve, consumer: &str) -> u64 {
    let Some(line) = serve.started.iter().find(|l| l.starts_with("caught up")) else {
        return 0;
    };
    let after = line.split(&format!("{consumer} ")).nth(1).unwrap();
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn rebuild(dir: &Path, view: &str, snapshot: Option<&str>) -> (bool, String, String) {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["rebuild", "--data-dir", dir, "--view", view];
    if let Some(id) = snapshot {
        args.extend(["--from-snapshot", id]);
    }
    tidemark(&args)
}

const WINDOW: [&str; 4] = ["--shards", "2", "--batch-window-ms", "50"];

#[tokio::test]
async fn a_rebuild_from_a_snapshot_applies_only_the_log_after_it() {
    let dir = scratch("offline");
    let mut model = Model::new();
    let serve = Serve::start(&dir, &WINDOW);
    post_round(&serve.base, 1, 400, 60, &mut model).await;
    settled(&serve.base, &model).await;
    assert!(serve.stop().success());

    // Of the stopped serve, both views.
    let path = dir.to_str().unwrap();
    for view in ["status", "status-view"] {
        let (ok, out, err) = tidemark(&["snapshot", "--data-dir", path, "--view", view]);
        assert!(ok, "snapshot of {view}: {out}{err}");
    }

    let serve = Serve::start(&dir, &WINDOW);
    post_round(&serve.base, 2, 300, 90, &mut model).await;
    let before = settled(&serve.base, &model).await;
    // A running serve holds the files: an offline command is refused, naming the file.
    let (ok, _, err) = rebuild(&dir, "status", Some("latest"));
    assert!(!ok && err.contains("in use"), "{err}");
    assert!(serve.stop().success());

    for view in ["status", "status-view"] {
        let (ok, out, err) = rebuild(&dir, view, Some("latest"));
        assert!(ok && out.contains("loaded snapshot"), "{view}: {out}{err}");
    }
    let serve = Serve::start(&dir, &WINDOW);
    // Exactly the second round, by both consumers: the snapshot held the first.
    assert_eq!(caught_up(&serve, "processor"), 300, "{:?}", serve.started);
    assert_eq!(caught_up(&serve, "status-view"), 300, "{:?}", serve.started);
    // Read at once, no waiting: the catch-up came before listening.
    let (after, matches) = read_all(&serve.base, &model).await;
    assert!(matches, "after the rebuild: {after:?}");
    assert_eq!(after, before);
    assert!(serve.stop().success());

    // A corrupt snapshot: refused with the reason; the view is then made from the whole log.
    let snapshots = dir.join("archive/snapshots/status");
    let body = walk(&snapshots)
        .into_iter()
        .find(|p| !p.ends_with("manifest.json"))
        .expect("the snapshot's rows");
    let mut bytes = std::fs::read(&body).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&body, bytes).unwrap();
    let (ok, out, err) = rebuild(&dir, "status", Some("latest"));
    assert!(!ok, "a corrupt snapshot was loaded: {out}");
    assert!(err.contains("whole log"), "{err}");
    let serve = Serve::start(&dir, &WINDOW);
    assert_eq!(caught_up(&serve, "processor"), 700, "{:?}", serve.started);
    let (after, matches) = read_all(&serve.base, &model).await;
    assert!(matches && after == before, "{after:?}");
    assert!(serve.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_running_serve_keeps_rolling_snapshots() {
    let dir = scratch("rolling");
    let mut model = Model::new();
    let mut args = WINDOW.to_vec();
    args.extend(["--snapshot-interval-secs", "1", "--keep-snapshots", "2"]);
    let serve = Serve::start(&dir, &args);
    post_round(&serve.base, 1, 300, 50, &mut model).await;
    let before = settled(&serve.base, &model).await;
    // Long enough for a snapshot after everything was applied, and for pruning.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(serve.stop().success());

    let path = dir.to_str().unwrap();
    for view in ["status", "status-view"] {
        let (ok, out, err) = tidemark(&["snapshot", "--data-dir", path, "--view", view, "--list"]);
        assert!(ok, "{err}");
        let listed: Vec<&str> = out.lines().filter(|l| l.contains(" taken ")).collect();
        assert_eq!(listed.len(), 2, "the newest two of {view} kept: {out}");
        let (ok, out, err) = rebuild(&dir, view, Some("latest"));
        assert!(ok, "{view}: {out}{err}");
    }
    let serve = Serve::start(&dir, &WINDOW);
    // The latest snapshot was taken after everything was applied: nothing to apply again.
    assert_eq!(caught_up(&serve, "processor"), 0, "{:?}", serve.started);
    let (after, matches) = read_all(&serve.base, &model).await;
    assert!(matches && after == before, "{after:?}");
    assert!(serve.stop().success());

    // A snapshot of another directory, whose log is longer: its positions are no records of
    // this log, and it is refused before anything changes.
    let other = scratch("other");
    let serve = Serve::start(&other, &WINDOW);
    post_round(&serve.base, 1, 1000, 50, &mut Model::new()).await;
    assert!(serve.stop().success());
    let other_path = other.to_str().unwrap();
    let (ok, out, err) = tidemark(&["snapshot", "--data-dir", other_path]);
    assert!(ok, "{out}{err}");
    let id = out.split_whitespace().nth(1).unwrap();
    let from = other.join("archive/snapshots/status").join(id);
    let into = dir.join("archive/snapshots/status").join(id);
    std::fs::create_dir_all(&into).unwrap();
    for file in walk(&from) {
        std::fs::copy(&file, into.join(file.file_name().unwrap())).unwrap();
    }
    let (ok, out, err) = rebuild(&dir, "status", Some(id));
    assert!(!ok && err.contains("not a record of the log"), "{out}{err}");
    let serve = Serve::start(&dir, &WINDOW);
    let (after, matches) = read_all(&serve.base, &model).await;
    assert!(matches && after == before, "nothing changed: {after:?}");
    assert!(serve.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
