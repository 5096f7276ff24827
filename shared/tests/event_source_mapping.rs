//! The event source mapping emulator over an in-memory stream: batches handed to the processor,
//! a failed batch resumed from the reported record, a split shard read parent first, and a
//! restart resuming from OPLOG. Waits are bounded polls for an outcome, never timing assertions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidemark::adapters::faults::{Faults, Faulty, RefusesRows};
use tidemark::adapters::memory::{MemoryBackend, MemoryStatusStore};
use tidemark::adapters::Adapters;
use tidemark::consumers::processor::ProcessorSettings;
use tidemark::domain::{parse_event, Clock, Limits, SystemClock};
use tidemark::ports::*;
use tidemark::run::esm::{EsmSettings, EventSourceMapping};
use tokio::sync::watch;

/// The processor's mapping over `adapters`: its checkpoints, the stream's shards.
fn processor_mapping(
    adapters: &Adapters,
    processor: Arc<dyn tidemark::consumers::Consumer>,
    settings: EsmSettings,
) -> EventSourceMapping {
    EventSourceMapping::new(
        tidemark::domain::progress::ConsumerName::PROCESSOR,
        processor,
        adapters.checkpoints_of(tidemark::domain::progress::ConsumerName::PROCESSOR),
        adapters.shard_reader(),
        settings,
    )
}

struct Harness {
    memory: MemoryBackend,
    /// STATUS writes go through here (recording their order) into `memory.status`.
    status: Arc<ApplyOrder>,
    faults: Arc<Faults>,
}

impl Harness {
    fn new(shards: usize) -> Self {
        let memory = MemoryBackend::new(shards);
        Self {
            status: Arc::new(ApplyOrder {
                inner: memory.status.clone(),
                shards: std::sync::Mutex::default(),
            }),
            memory,
            faults: Faults::new(9),
        }
    }

    /// Starts the mapping; dropping or sending on the returned sender stops it.
    fn start(&self) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, _, task) = self.start_with(None);
        (stop, task)
    }

    /// Starts the mapping with a retry limit, and hands out the mapping to inspect.
    fn start_with(
        &self,
        max_retry_attempts: Option<u32>,
    ) -> (
        watch::Sender<bool>,
        Arc<EventSourceMapping>,
        tokio::task::JoinHandle<()>,
    ) {
        let adapters = Adapters::in_memory(self.memory.clone())
            .with_status_writer(Arc::new(Faulty::new(self.status.clone(), &self.faults)));
        let processor =
            Arc::new(adapters.processor(ProcessorSettings::default(), Arc::new(SystemClock)));
        let settings = EsmSettings {
            batch_size: 7,
            batching_window: Duration::from_millis(5),
            idle_poll_interval: Duration::from_millis(2),
            shard_refresh_interval: Duration::from_millis(20),
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
            max_retry_attempts,
        };
        let esm = Arc::new(processor_mapping(&adapters, processor, settings));
        let (stop, shutdown) = watch::channel(false);
        (stop, esm.clone(), tokio::spawn(esm.run(shutdown)))
    }

    /// Puts an event with a fixed timestamp, so the sequence number alone decides: the last put wins.
    async fn put(&self, id: &str, status: &str) -> PutAck {
        let json =
            format!(r#"{{"id":"{id}","status":"{status}","timestamp":"2024-01-01T00:00:00Z"}}"#);
        let raw: &serde_json::value::RawValue = serde_json::from_str(&json).unwrap();
        let event = parse_event(raw, None, SystemClock.now(), &Limits::default()).unwrap();
        self.memory
            .stream
            .put(&OutgoingRecord {
                partition_key: id.into(),
                data: Bytes::from(event.encode().unwrap()),
            })
            .await
            .unwrap()
    }

    async fn status_of(&self, id: &str) -> Option<String> {
        self.memory
            .status
            .get(id)
            .await
            .unwrap()
            .map(|row| row.status)
    }

    /// Waits (bounded) until every shard's checkpoint reached its last record.
    async fn wait_until_caught_up(&self, last: &[PutAck]) {
        for _ in 0..2_000 {
            let mut done = true;
            for ack in last {
                let checkpoint = self.memory.checkpoints.get(&ack.shard_id).await.unwrap();
                done &= checkpoint.is_some_and(|c| c.sequence_number >= ack.sequence_number);
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the mapping did not catch up within 10 s");
    }
}

/// Remembers which shard each applied row came from, in order.
struct ApplyOrder {
    inner: Arc<MemoryStatusStore>,
    shards: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl StatusWriter for ApplyOrder {
    async fn apply(&self, row: StatusRow) -> Result<ApplyOutcome, StoreError> {
        self.shards.lock().unwrap().push(row.shard_id.clone());
        // Slow enough that a child shard read concurrently with its parent would interleave.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.inner.apply(row).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_everything_and_resumes_after_failures() {
    let h = Harness::new(3);
    let (stop, task) = h.start();
    h.faults.set_failure_rate(0.3);
    let mut last = Vec::new();
    for round in 0..20 {
        for id in 0..15 {
            last.push(h.put(&format!("id-{id}"), &format!("round-{round}")).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.faults.set_failure_rate(0.0);
    h.wait_until_caught_up(&last).await;
    for id in 0..15 {
        assert_eq!(
            h.status_of(&format!("id-{id}")).await.as_deref(),
            Some("round-19")
        );
    }
    assert!(
        h.faults.injected() > 0,
        "failures were injected and retried"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// With STATUS down for good, the mapping gives up on the failing records after the retry
/// limit, as Lambda does: it names the range, moves on (later records are applied once STATUS is
/// back), and replaying the range applies what was given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_retry_limit_the_range_is_given_up_named_and_replayable() {
    let h = Harness::new(1);
    let (stop, esm, task) = h.start_with(Some(3));
    h.faults.set_down(true);
    let lost = h.put("a", "never-applied-in-time").await;
    let given_up = {
        let mut found = Vec::new();
        for _ in 0..2_000 {
            found = esm.given_up();
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        found
    };
    assert_eq!(given_up.len(), 1, "the range is given up on once");
    assert_eq!(given_up[0].shard_id, lost.shard_id);
    assert_eq!(given_up[0].from, lost.sequence_number);
    assert_eq!(given_up[0].to, lost.sequence_number);
    assert_eq!(given_up[0].attempts, 4, "the first try and 3 retries");

    h.faults.set_down(false);
    let later = h.put("b", "applied").await;
    h.wait_until_caught_up(std::slice::from_ref(&later)).await;
    assert_eq!(h.status_of("b").await.as_deref(), Some("applied"));
    assert_eq!(
        h.status_of("a").await,
        None,
        "given up: not applied until replayed"
    );

    let adapters = Adapters::in_memory(h.memory.clone());
    let processor = adapters.processor(ProcessorSettings::default(), Arc::new(SystemClock));
    tidemark::run::replay::replay_range(
        h.memory.stream.as_ref(),
        &processor,
        &given_up[0].shard_id,
        &given_up[0].from,
        &given_up[0].to,
    )
    .await
    .unwrap();
    assert_eq!(
        h.status_of("a").await.as_deref(),
        Some("never-applied-in-time")
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shard_is_read_parent_first() {
    let h = Harness::new(1);
    // Records in the parent before the split; the mapping is not running yet, so the children
    // (which receive the later events) would be read first if parents were not waited for.
    for round in 0..30 {
        for id in 0..5 {
            h.put(&format!("order-{id}"), &format!("before-{round}"))
                .await;
        }
    }
    h.memory.stream.split_shard("shardId-000000000000").unwrap();
    let mut last = Vec::new();
    for round in 0..30 {
        for id in 0..5 {
            last.push(
                h.put(&format!("order-{id}"), &format!("after-{round}"))
                    .await,
            );
        }
    }
    let (stop, task) = h.start();
    h.wait_until_caught_up(&last).await;
    for id in 0..5 {
        assert_eq!(
            h.status_of(&format!("order-{id}")).await.as_deref(),
            Some("after-29")
        );
    }
    // Every write from the parent came before any write from a child.
    let order = h.status.shards.lock().unwrap().clone();
    let first_child = order
        .iter()
        .position(|s| s != "shardId-000000000000")
        .unwrap();
    assert!(first_child > 0, "the parent was applied at all");
    assert!(
        order[first_child..]
            .iter()
            .all(|s| s != "shardId-000000000000"),
        "parent and children interleaved: {order:?}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_oplog_and_poison_is_dead_lettered() {
    let h = Harness::new(2);
    let (stop, task) = h.start();
    let mut last = vec![h.put("a", "1").await];
    let poison = h
        .memory
        .stream
        .put_raw("a", Bytes::from_static(b"\x00garbage"))
        .unwrap();
    last.push(h.put("b", "1").await);
    h.wait_until_caught_up(std::slice::from_ref(&poison)).await;
    h.wait_until_caught_up(&last).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let applied_before = h.status.inner.apply_calls();

    // Restart: the pollers start after the checkpoints, so nothing is re-applied.
    let after = vec![h.put("a", "2").await];
    let (stop, task) = h.start();
    h.wait_until_caught_up(&after).await;
    assert_eq!(h.status_of("a").await.as_deref(), Some("2"));
    assert_eq!(
        h.status.inner.apply_calls(),
        applied_before + 1,
        "only the new record was applied"
    );
    let letters = h.memory.dead_letters.list().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].sequence_number, poison.sequence_number);
    assert_eq!(&letters[0].raw[..], b"\x00garbage");
    assert!(
        letters[0].reason.starts_with("undecodable"),
        "{}",
        letters[0].reason
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// In `serve`, a record STATUS refuses for good is dead-lettered and the shard moves on, with no
/// retry limit needed: the id keeps its newest record that can be applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_status_refuses_are_set_aside_and_the_shard_moves_on() {
    let h = Harness::new(1);
    h.put("a", "packed").await;
    let refused_a = h.put("a", "huge-shipped").await;
    let refused_b = h.put("b", "huge-created").await;
    let last = h.put("c", "created").await;
    let adapters =
        Adapters::in_memory(h.memory.clone()).with_status_writer(Arc::new(RefusesRows {
            inner: h.memory.status.clone(),
            refuse: |row| row.status.starts_with("huge"),
        }));
    let processor =
        Arc::new(adapters.processor(ProcessorSettings::default(), Arc::new(SystemClock)));
    let settings = EsmSettings {
        batching_window: Duration::from_millis(5),
        idle_poll_interval: Duration::from_millis(2),
        max_retry_attempts: None,
        ..EsmSettings::default()
    };
    let esm = Arc::new(processor_mapping(&adapters, processor, settings));
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(esm.run(shutdown));
    h.wait_until_caught_up(&[last]).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert_eq!(h.status_of("a").await.as_deref(), Some("packed"));
    assert_eq!(h.status_of("b").await, None);
    assert_eq!(h.status_of("c").await.as_deref(), Some("created"));
    assert_eq!(
        h.memory.dead_letters.sequence_numbers(),
        [refused_a, refused_b]
            .map(|ack| ack.sequence_number.as_str().to_owned())
            .into()
    );
}
