//! `tidemark serve` in memory drops the records its processor has checkpointed past, so memory
//! stays flat under a steady load, and goes on consuming after each trim.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use serde_json::{json, Value};
use tidemark::adapters::Adapters;
use tidemark_tests::{quick_settings, wait_for, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_records_are_dropped_and_consuming_goes_on() {
    let adapters = Adapters::memory(2);
    let memory = adapters.memory_backend().unwrap().clone();
    let running = Running::start(adapters, quick_settings()).await;
    let http = reqwest::Client::new();
    for round in 0..3 {
        for batch in 0..4 {
            let events: Vec<Value> = (0..100)
                .map(|i| json!({"id": format!("id-{}", i % 50), "status": format!("r{round}-b{batch}-{i}")}))
                .collect();
            let response = http
                .post(format!("{}/events/batch", running.base))
                .json(&json!({"events": events}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 202);
        }
        // The last event of the round for id-49 is the newest: wait until STATUS has it, then
        // until everything consumed has been dropped.
        let newest = format!("r{round}-b3-99");
        wait_for("the round to be applied", 30, || {
            let (http, url, newest) = (
                http.clone(),
                format!("{}/messages/id-49", running.base),
                newest.clone(),
            );
            async move {
                let row: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                (row["status"] == newest.as_str()).then_some(())
            }
        })
        .await;
        wait_for("consumed records to be dropped", 30, || {
            let memory = memory.clone();
            async move { (memory.stream.retained_records() == 0).then_some(()) }
        })
        .await;
    }
    running.stop().await;
}
