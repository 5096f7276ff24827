//! Views as an open set, end to end through `tidemark serve`: a test-only view registered in one
//! place gets a mapping, checkpoints and an entry in `GET /shards`; the status view answers
//! `GET /statuses` and `GET /statuses/{status}/messages` as a scan of STATUS says, in memory and
//! against LocalStack's DynamoDB, also after the view was killed between a commit and its
//! checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use tidemark::adapters::Adapters;
use tidemark::consumers::views::check::compare_with_status;
use tidemark::consumers::{BatchOutcome, Consumer};
use tidemark::domain::progress::ConsumerName;
use tidemark::domain::status_view::{ViewChange, ViewEntry};
use tidemark::domain::{Clock, SequenceNumber, SystemClock};
use tidemark::ports::*;
use tidemark::run::registry::{Metrics, Registration, Registry};
use tidemark_tests::{json_answer, quick_settings, wait_for, Resources, Running};

/// A view that only notes which ids it saw: all a new view needs is this type and one
/// registration.
#[derive(Default)]
struct IdsSeen {
    ids: Mutex<HashSet<String>>,
}

#[async_trait]
impl Consumer for IdsSeen {
    async fn consume(&self, shard_id: &str, records: &[StreamRecord]) -> BatchOutcome {
        let mut ids = self.ids.lock().unwrap();
        ids.extend(records.iter().map(|r| r.partition_key.clone()));
        let now = SystemClock.now();
        BatchOutcome::settled(
            shard_id,
            records,
            &[],
            now,
            now.to_rfc3339(),
            Default::default(),
        )
    }
}

const IDS_SEEN: ConsumerName = ConsumerName::new("ids-seen");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_registered_in_one_place_runs_with_its_own_checkpoints() {
    let seen = Arc::new(IdsSeen::default());
    let registered = seen.clone();
    let registry = Registry::standard()
        .with(Registration::new(
            IDS_SEEN,
            Metrics::FunctionOnly,
            move |_, _| registered.clone(),
        ))
        .unwrap();
    assert!(
        registry
            .clone()
            .with(Registration::new(
                IDS_SEEN,
                Metrics::FunctionOnly,
                |_, _| { Arc::new(IdsSeen::default()) }
            ))
            .is_err(),
        "two consumers under one name would share checkpoints"
    );
    let adapters = Adapters::memory(2);
    let memory = adapters.memory_backend().unwrap().clone();
    let running = Running::start_registry(registry, adapters, quick_settings()).await;
    let http = reqwest::Client::new();
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("id-{i}"), "status": "s"}))
        .collect();
    let answer: Value = http
        .post(format!("{}/events/batch", running.base))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = last_positions(&answer);
    wait_for("ids-seen to checkpoint every shard", 30, || async {
        let mut reached = true;
        for (shard, sequence) in &last {
            let key = IDS_SEEN.oplog_key(shard);
            let checkpoint = memory.checkpoints.get(&key).await.unwrap();
            reached &= checkpoint.is_some_and(|c| c.sequence_number >= *sequence);
        }
        reached.then_some(())
    })
    .await;
    assert_eq!(seen.ids.lock().unwrap().len(), 40);
    let shards: Value = json_answer(http.get(format!("{}/shards", running.base))).await;
    for shard in shards["shards"].as_array().unwrap() {
        let id = shard["shard_id"].as_str().unwrap();
        assert_eq!(
            shard["ids-seen"]["sequence_number"].as_str(),
            last.get(id).map(SequenceNumber::as_str),
            "GET /shards shows the new view's checkpoint of {id}"
        );
    }
    running.stop().await;
}

/// The newest (shard, sequence number) of each shard in a batch answer.
fn last_positions(answer: &Value) -> HashMap<String, SequenceNumber> {
    let mut last: HashMap<String, SequenceNumber> = HashMap::new();
    for result in answer["results"].as_array().unwrap() {
        let shard = result["shard_id"].as_str().unwrap().to_owned();
        let sequence = SequenceNumber::parse(result["sequence_number"].as_str().unwrap()).unwrap();
        let entry = last.entry(shard).or_insert_with(|| sequence.clone());
        if sequence > *entry {
            *entry = sequence;
        }
    }
    last
}

/// Posts `events` in one batch; answers its token and merges its positions into `last`.
async fn post(
    http: &reqwest::Client,
    base: &str,
    events: Vec<Value>,
    last: &mut HashMap<String, SequenceNumber>,
) -> String {
    let response = http
        .post(format!("{base}/events/batch"))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let answer: Value = response.json().await.unwrap();
    for (shard, sequence) in last_positions(&answer) {
        let entry = last.entry(shard).or_insert_with(|| sequence.clone());
        if sequence > *entry {
            *entry = sequence;
        }
    }
    answer["token"].as_str().unwrap().to_owned()
}

/// Waits until both the processor's and the view's checkpoints reach every position in `last`.
async fn wait_until_consumed(adapters: &Adapters, last: &HashMap<String, SequenceNumber>) {
    for name in [ConsumerName::PROCESSOR, ConsumerName::STATUS_VIEW] {
        let reader = adapters.checkpoints_of(name).reader;
        wait_for(
            &format!("the {} to catch up", name.as_str()),
            90,
            || async {
                for (shard, sequence) in last {
                    let checkpoint = reader.get(shard).await.ok()??;
                    if checkpoint.sequence_number < *sequence {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }
}

/// The counts and every list, read over HTTP, against a scan of STATUS.
async fn assert_routes_match_status(http: &reqwest::Client, base: &str, adapters: &Adapters) {
    let mut want: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let scanner = adapters.status_scanner();
    let mut start = None;
    loop {
        let page = scanner.scan_page(start.as_deref()).await.unwrap();
        for row in page.rows {
            want.entry(row.status)
                .or_default()
                .push((row.version.0, row.id));
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    let counts: Value = json_answer(http.get(format!("{base}/statuses"))).await;
    let got: BTreeMap<String, i64> = counts["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["status"].as_str().unwrap().to_owned(),
                s["count"].as_i64().unwrap(),
            )
        })
        .collect();
    let want_counts: BTreeMap<String, i64> = want
        .iter()
        .map(|(s, rows)| (s.clone(), rows.len() as i64))
        .collect();
    assert_eq!(got, want_counts);
    for (status, rows) in &mut want {
        rows.sort_unstable_by(|a, b| b.cmp(a));
        let encoded =
            percent_encoding::utf8_percent_encode(status, percent_encoding::NON_ALPHANUMERIC);
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{base}/statuses/{encoded}/messages?limit=4");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page: Value = json_answer(http.get(url)).await;
            for row in page["messages"].as_array().unwrap() {
                listed.push(row["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let want_ids: Vec<String> = rows.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(listed, want_ids, "the list of {status:?}");
    }
}

/// Random events over a few statuses, ids moving between them, some out of order.
fn round(round: usize, ids: usize) -> Vec<Value> {
    const STATUSES: [&str; 4] = ["created", "in transit/ups", "delivered", "échec %"];
    (0..ids)
        .map(|i| {
            let status = STATUSES[fastrand::usize(..STATUSES.len())];
            let minute = fastrand::u32(0..50);
            json!({
                "id": format!("order-{}", fastrand::usize(..ids)),
                "status": status,
                "timestamp": format!("2024-05-0{}T12:{minute:02}:00Z", 1 + round),
                "data": {"i": i},
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_in_memory_lists_and_counts_by_status() {
    let adapters = Adapters::memory(2);
    let running = Running::start(adapters.clone(), quick_settings()).await;
    let http = reqwest::Client::new();
    let mut last = HashMap::new();
    for r in 0..3 {
        post(&http, &running.base, round(r, 60), &mut last).await;
    }
    // A client's own write, seen in the counts at once through its token.
    let token = post(
        &http,
        &running.base,
        vec![json!({"id": "mine", "status": "just-mine", "timestamp": "2024-06-01T00:00:00Z"})],
        &mut last,
    )
    .await;
    let counts: Value = json_answer(
        http.get(format!("{}/statuses", running.base))
            .query(&[("after", token.as_str()), ("wait_ms", "5000")]),
    )
    .await;
    assert!(
        counts["statuses"]
            .as_array()
            .unwrap()
            .contains(&json!({"status": "just-mine", "count": 1})),
        "{counts}"
    );
    let mine: Value = json_answer(
        http.get(format!("{}/statuses/just-mine/messages", running.base))
            .query(&[("after", token.as_str()), ("wait_ms", "5000")]),
    )
    .await;
    assert_eq!(mine["messages"][0]["id"], "mine");
    wait_until_consumed(&adapters, &last).await;
    assert_routes_match_status(&http, &running.base, &adapters).await;
    running.stop().await;
}

/// The view's store whose commits take effect and then never answer: the consumer dies between
/// its first commit and its checkpoint.
struct HangsAfterCommit {
    inner: Arc<dyn StatusViewWriter>,
    commits: AtomicUsize,
}

#[async_trait]
impl StatusViewWriter for HangsAfterCommit {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        self.inner.entries(ids).await
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        self.inner.commit(changes).await?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstack_counts_stay_exact_when_the_view_is_killed_mid_batch() {
    let resources = Resources::create("status-view", 2).await;
    let adapters = resources.adapters();
    let hanging = Arc::new(HangsAfterCommit {
        inner: adapters.status_view_writer(),
        commits: AtomicUsize::new(0),
    });
    let http = reqwest::Client::new();
    let mut last = HashMap::new();

    let first = Running::start(
        adapters.clone().with_status_view_writer(hanging.clone()),
        quick_settings(),
    )
    .await;
    for r in 0..2 {
        post(&http, &first.base, round(r, 40), &mut last).await;
    }
    wait_for("the view to hang after a commit", 60, || async {
        (hanging.commits.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    first.crash();

    let second = Running::start(adapters.clone(), quick_settings()).await;
    post(&http, &second.base, round(2, 40), &mut last).await;
    wait_until_consumed(&adapters, &last).await;
    let shards: Vec<String> = last.keys().cloned().collect();
    let differences = compare_with_status(
        adapters.status_scanner().as_ref(),
        adapters.status_view_reader().as_ref(),
        &shards,
    )
    .await
    .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
    assert_routes_match_status(&http, &second.base, &adapters).await;
    second.stop().await;
}

#[tokio::test]
async fn bad_and_unknown_statuses_get_clear_answers() {
    let adapters = Adapters::memory(1);
    let running = Running::start(adapters, quick_settings()).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let response = http.get(path).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let base = &running.base;
    let (status, body) = get(format!("{base}/statuses/never-seen/messages")).await;
    assert_eq!((status, &body["messages"]), (200, &json!([])));
    assert_eq!(body["next_cursor"], Value::Null);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=51", "limit"),
        ("limit=x", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=AAAA", "cursor"),
        ("wait_ms=10", "wait_ms"),
        ("after=nope", "after"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = get(format!("{base}/statuses/s/messages?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = get(format!("{base}/statuses?limit=1001")).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("limit"))
    );
    let long = "x".repeat(257);
    let (status, body) = get(format!("{base}/statuses/{long}/messages")).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("status"))
    );
    let (status, body) = get(format!("{base}/statuses/%FF/messages")).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("status"))
    );
    running.stop().await;
}
