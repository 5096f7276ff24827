//! Waiting for the pipeline and reading what it holds, over HTTP and from the stream: the
//! helpers end-to-end tests share.

use std::collections::HashMap;
use std::time::Duration;

use tidemark::domain::SequenceNumber;
use tidemark::ports::{ShardReader, StartPosition, StreamRecord};

/// Polls `check` until it returns `Some`, for at most `seconds`; panics with `what` otherwise.
pub async fn wait_for<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {seconds} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON answer to `request`; the test fails when it cannot be sent or is not JSON.
pub async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// GET /messages/{id}: the row, or `None` when unknown.
pub async fn message(http: &reqwest::Client, base: &str, id: &str) -> Option<serde_json::Value> {
    let response = http
        .get(format!("{base}/messages/{id}"))
        .send()
        .await
        .ok()?;
    if response.status() == 200 {
        response.json().await.ok()
    } else {
        None
    }
}

/// Waits until every (id, status) pair reads back, polling each row. Only for where the
/// processor's checkpoint cannot move (a test that fails every OPLOG write): elsewhere use
/// [`wait_for_statuses`], which cannot be passed by a state the row only goes through.
pub async fn wait_for_rows(
    http: &reqwest::Client,
    base: &str,
    expected: &[(String, String)],
    seconds: u64,
) {
    for (id, status) in expected {
        wait_for(&format!("{id} to read {status}"), seconds, || async {
            message(http, base, id)
                .await
                .filter(|row| row["status"] == status.as_str())
        })
        .await;
    }
}

/// Waits until everything on the stream is applied ([`wait_until_applied`]), then reads each id
/// once: each must hold its expected status. One read after the checkpoints, not a poll until a
/// match, so a row that passes through the expected state and then moves on fails the test.
pub async fn wait_for_statuses(
    http: &reqwest::Client,
    base: &str,
    stream: &dyn ShardReader,
    expected: &[(String, String)],
    seconds: u64,
) {
    wait_until_applied(http, base, stream, seconds).await;
    for (id, status) in expected {
        let row = message(http, base, id).await;
        assert_eq!(
            row.as_ref().map(|row| &row["status"]),
            Some(&serde_json::json!(status)),
            "{id} once every record on the stream was applied: {row:?}"
        );
    }
}

/// Every record on every shard of the stream, by shard.
pub async fn all_records(
    stream: &dyn ShardReader,
) -> std::collections::BTreeMap<String, Vec<StreamRecord>> {
    let mut out = std::collections::BTreeMap::new();
    for shard in stream.list_shards().await.unwrap() {
        let mut iterator = Some(
            stream
                .shard_iterator(&shard.shard_id, &StartPosition::TrimHorizon)
                .await
                .unwrap(),
        );
        let mut records = Vec::new();
        while let Some(it) = iterator {
            let page = stream.get_records(&it, 10_000).await.unwrap();
            let empty = page.records.is_empty();
            records.extend(page.records);
            // An open shard always hands out a next iterator: an empty page is its end for now.
            iterator = if empty { None } else { page.next_iterator };
        }
        out.insert(shard.shard_id, records);
    }
    out
}

/// The last sequence number of each shard that holds a record.
pub async fn stream_tails(stream: &dyn ShardReader) -> HashMap<String, SequenceNumber> {
    all_records(stream)
        .await
        .into_iter()
        .filter_map(|(shard, records)| Some((shard, records.last()?.sequence_number.clone())))
        .collect()
}

/// Waits until the processor's checkpoint (`GET /shards`) on every shard has reached the last
/// record the stream held when this was called: everything put before is applied or set aside.
pub async fn wait_until_applied(
    http: &reqwest::Client,
    base: &str,
    stream: &dyn ShardReader,
    seconds: u64,
) {
    let tails = stream_tails(stream).await;
    wait_for(
        "the processor to checkpoint every shard's last record",
        seconds,
        || async {
            let answer: serde_json::Value = http
                .get(format!("{base}/shards"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let shards = answer["shards"].as_array()?;
            tails
                .iter()
                .all(|(shard_id, tail)| {
                    shards.iter().any(|shard| {
                        shard["shard_id"] == shard_id.as_str()
                            && shard["sequence_number"]
                                .as_str()
                                .and_then(|s| SequenceNumber::parse(s).ok())
                                .is_some_and(|checkpoint| checkpoint >= *tail)
                    })
                })
                .then_some(())
        },
    )
    .await;
}
