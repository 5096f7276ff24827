//! `serve` over a real Kafka-protocol broker's topic (started by ./scripts/test), with LocalStack's
//! DynamoDB and S3 for the tables and the archive: events posted in random order with
//! duplicates end at their newest; a plain event another producer put on the topic is applied
//! and a record that is not an event is set aside with its reason; history comes from the
//! archive the archiver wrote from the topic; `serve` killed mid-stream and started again
//! resumes each partition from its OPLOG checkpoint, and nothing is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use bytes::Bytes;
use serde_json::{json, Value};
use tidemark::adapters::kafka::{KafkaLog, KafkaTopic};
use tidemark::ports::{
    CheckpointReader, DeadLetterReader, OutgoingRecord, StreamError, StreamWriter,
};
use tidemark_tests::kafka::{kafka_log, over_kafka};
use tidemark_tests::{
    json_answer, message, quick_settings, wait_for_statuses, wait_until_applied, Resources, Running,
};

const IDS: usize = 12;

/// Round `round`'s events for every id, shuffled, some sent twice; each id's newest is
/// `r{round}-newest`.
fn events(round: u32, rng: &mut fastrand::Rng) -> Vec<Value> {
    let mut events = Vec::new();
    for id in 0..IDS {
        for (n, second) in [(0, 10), (1, 30), (2, 20)] {
            let status = if n == 1 {
                format!("r{round}-newest")
            } else {
                format!("r{round}-older-{n}")
            };
            let event = json!({
                "id": format!("order-{id}"),
                "status": status,
                "timestamp": format!("2026-12-04T12:{round:02}:{second:02}Z"),
            });
            if rng.bool() {
                events.push(event.clone());
            }
            events.push(event);
        }
    }
    rng.shuffle(&mut events);
    events
}

async fn post_all(http: &reqwest::Client, base: &str, events: &[Value]) {
    for chunk in events.chunks(25) {
        let answer = json_answer(
            http.post(format!("{base}/events/batch"))
                .json(&json!({ "events": chunk })),
        )
        .await;
        assert_eq!(answer["accepted"], chunk.len(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_serve_over_a_topic_ends_every_id_at_its_newest_and_resumes_from_oplog() {
    let resources = Resources::create("kafka", 1).await;
    let log = kafka_log("serve", 3).await;
    let adapters = over_kafka(resources.adapters(), log.clone());
    let http = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(7);

    let running = Running::start(adapters.clone(), quick_settings()).await;
    post_all(&http, &running.base, &events(0, &mut rng)).await;
    // Another producer's records on the same topic: a plain event, and something else.
    let foreign = |key: &str, body: &'static [u8]| OutgoingRecord {
        partition_key: key.into(),
        data: Bytes::from_static(body),
    };
    log.put(&foreign(
        "order-x",
        br#"{"id":"order-x","status":"from-elsewhere"}"#,
    ))
    .await
    .unwrap();
    let poison = log.put(&foreign("order-y", b"not an event")).await.unwrap();
    wait_until_applied(&http, &running.base, log.as_ref(), 60).await;
    let expected: Vec<(String, String)> = (0..IDS)
        .map(|id| (format!("order-{id}"), "r0-newest".to_owned()))
        .chain([("order-x".to_owned(), "from-elsewhere".to_owned())])
        .collect();
    wait_for_statuses(&http, &running.base, log.as_ref(), &expected, 60).await;
    let letters = adapters.dead_letter_reader().list().await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].shard_id, poison.shard_id);
    assert_eq!(letters[0].sequence_number, poison.sequence_number);
    assert!(
        letters[0].reason.starts_with("undecodable"),
        "{}",
        letters[0].reason
    );

    // A read-your-writes token of a post over Kafka names a partition and an offset.
    let answer = json_answer(http.post(format!("{}/events", running.base)).json(&json!({
        "id": "order-0", "status": "r0-final", "timestamp": "2026-12-04T12:00:59Z",
    })))
    .await;
    let token = answer["token"].as_str().unwrap().to_owned();
    let read = json_answer(
        http.get(format!("{}/messages/order-0", running.base))
            .query(&[("after", token.as_str()), ("wait_ms", "5000")]),
    )
    .await;
    assert_eq!(read["status"], "r0-final", "{read}");
    assert!(read["shard_id"]
        .as_str()
        .unwrap()
        .starts_with(&log_topic(&poison.shard_id)));

    // Killed with a second round on the topic, part of it applied; started again from OPLOG.
    post_all(&http, &running.base, &events(1, &mut rng)).await;
    running.crash();
    let restarted = Running::start(adapters.clone(), quick_settings()).await;
    wait_until_applied(&http, &restarted.base, log.as_ref(), 60).await;
    let newest: Vec<(String, String)> = (0..IDS)
        .map(|id| (format!("order-{id}"), "r1-newest".to_owned()))
        .collect();
    wait_for_statuses(&http, &restarted.base, log.as_ref(), &newest, 60).await;
    for id in 0..IDS {
        let row = message(&http, &restarted.base, &format!("order-{id}"))
            .await
            .unwrap();
        assert_eq!(row["status"], "r1-newest", "{row}");
    }
    let checkpoints = adapters.checkpoint_reader().list().await.unwrap();
    assert_eq!(checkpoints.len(), 3, "one per partition: {checkpoints:?}");
    assert!(checkpoints
        .iter()
        .all(|c| c.shard_id.starts_with(&log_topic(&poison.shard_id))));

    // History from the archive the archiver wrote from the topic: both rounds' distinct events.
    let history =
        json_answer(http.get(format!("{}/messages/order-3/history", restarted.base))).await;
    let statuses: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    for status in ["r1-newest", "r0-newest", "r0-older-0", "r1-older-2"] {
        assert!(statuses.contains(&status), "{status} in {statuses:?}");
    }
    restarted.stop().await;
}

/// The topic of a shard id `TOPIC-N`.
fn log_topic(shard_id: &str) -> String {
    shard_id
        .rsplit_once('-')
        .map(|(topic, _)| topic.to_owned())
        .unwrap()
}

/// A broker that accepts connections and then never answers (a wedged or half-dead broker, a
/// firewall that swallows replies): connecting fails with the reason instead of holding `serve`'s
/// start-up for ever. The outer timeout only tells a hang from an answer; it asserts no speed.
#[tokio::test]
async fn kafka_a_broker_that_never_answers_is_an_error_not_a_hang() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket); // open, never read, never answered
        }
    });
    let topic = KafkaTopic::parse(&format!("kafka://{address}/silent")).unwrap();
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        KafkaLog::connect(&topic, 1),
    )
    .await
    .expect("KafkaLog::connect hung on a broker that never answers");
    match outcome {
        Err(StreamError::Unavailable(reason)) => assert!(
            reason.contains(&address.to_string()) && reason.contains("did not answer"),
            "the reason should name the broker and what went wrong: {reason}"
        ),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("connected to a broker that never answered"),
    }
    holder.abort();
}
