//! Read-your-writes against a model: random interleavings of writes (out of order, duplicates,
//! several ids on one shard, writes that lose to newer ones, poison records, puts that are
//! throttled and puts that time out after taking effect, so the stream holds copies nobody was
//! told about) and of processor progress (batches with and without a checkpoint), with reads
//! carrying a write's token. A read is satisfied exactly when the model says the write, or
//! something newer for its id, is in STATUS or its shard's checkpoint has passed it; a
//! satisfied read answers the model's row; and no read ever answers a state older than its
//! write. The model learns every record a request put from the stream itself, so a timed-out
//! copy is applied by the model as by the processor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use tidemark::adapters::faults::{Faults, Faulty};
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, IngestApi, QueryApi};
use tidemark::consumers::CheckpointedConsumer;
use tidemark::domain::consistency::ConsistencyToken;
use tidemark::domain::{EventTime, FixedClock, Limits, SequenceNumber, Version};
use tidemark::ports::{ShardReader, StartPosition, StreamRecord};
use tidemark::publish::{Publisher, RetryPolicy};

#[derive(Clone, Debug)]
enum Op {
    /// A write of id `id` at `second` past the base time; poison is put straight on the stream.
    Write { id: u8, second: u8, poison: bool },
    /// The processor takes the next `count` records of shard `shard`; OPLOG moves only when
    /// `checkpoint`.
    Process {
        shard: u8,
        count: u8,
        checkpoint: bool,
    },
    /// A read of write number `write` (modulo the writes so far) with its token.
    Read { write: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..6, prop::bool::weighted(0.15))
            .prop_map(|(id, second, poison)| Op::Write { id, second, poison }),
        2 => (0u8..2, 1u8..4, any::<bool>())
            .prop_map(|(shard, count, checkpoint)| Op::Process { shard, count, checkpoint }),
        4 => any::<u8>().prop_map(|write| Op::Read { write }),
    ]
}

/// A write answered 202, or a poison record: what a read can carry a token of.
struct Write {
    id: String,
    shard: String,
    version: Version,
    poison: bool,
    token: String,
}

/// A record on the stream, whoever was told about it.
struct Put {
    id: String,
    version: Version,
    poison: bool,
}

fn base() -> EventTime {
    EventTime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap()
}

fn get(api: &Api, path: &str, query: String) -> (StatusCode, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime.block_on(api.handle(ApiRequest {
        method: Method::GET,
        path: path.into(),
        query: Some(query),
        content_type: None,
        idempotency_key: None,
        body: Bytes::new(),
    }));
    (
        response.status,
        serde_json::from_slice(&response.body).unwrap(),
    )
}

fn records_on(
    runtime: &tokio::runtime::Runtime,
    memory: &MemoryBackend,
    shard: &str,
) -> Vec<StreamRecord> {
    let reader = &memory.stream;
    let iterator = runtime
        .block_on(reader.shard_iterator(shard, &StartPosition::TrimHorizon))
        .unwrap();
    runtime
        .block_on(reader.get_records(&iterator, 10_000))
        .unwrap()
        .records
}

fn row_version(row: &Value) -> Version {
    Version::new(
        EventTime::parse_rfc3339(row["timestamp"].as_str().unwrap()).unwrap(),
        SequenceNumber::parse(row["sequence_number"].as_str().unwrap()).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn a_read_with_a_token_is_satisfied_exactly_when_the_model_says(
        ops in prop::collection::vec(op(), 1..60),
        throttled in 0.0f64..0.3,
        timed_out in 0.0f64..0.4,
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let memory = MemoryBackend::new(2);
        let faults = Faults::new(seed);
        faults.set_failure_rate(throttled);
        faults.set_fail_after_rate(timed_out);
        let adapters = Adapters::in_memory(memory.clone())
            .with_stream_writer(Arc::new(Faulty::new(memory.stream.clone(), &faults)));
        let retry = RetryPolicy {
            max_attempts: 3,
            base_delay: std::time::Duration::from_micros(10),
            max_delay: std::time::Duration::from_micros(50),
        };
        let clock = Arc::new(FixedClock(base().saturating_add(std::time::Duration::from_secs(60))));
        let api = Api {
            ingest: Some(IngestApi::new(
                Publisher::new(adapters.stream_writer(), retry),
                adapters.idempotency_store(),
                Limits::default(),
                clock.clone(),
            )),
            query: Some(QueryApi::new(
                adapters.status_reader(),
                adapters.checkpoint_reader(),
                adapters.shard_reader(),
            )),
        };
        let processor = Arc::new(adapters.processor(Default::default(), clock));
        let consumer = CheckpointedConsumer::new(processor.clone(), adapters.checkpoint_writer());
        let shards: Vec<String> = runtime
            .block_on(memory.stream.list_shards())
            .unwrap()
            .into_iter()
            .map(|s| s.shard_id)
            .collect();

        let mut writes: Vec<Write> = Vec::new();
        let mut puts: HashMap<(String, SequenceNumber), Put> = HashMap::new();
        // The model: records taken per shard, each id's newest applied version, each shard's
        // checkpoint.
        let mut taken: HashMap<String, usize> = HashMap::new();
        let mut newest: HashMap<String, Version> = HashMap::new();
        let mut checkpoint: HashMap<String, SequenceNumber> = HashMap::new();

        for op in ops {
            match op {
                Op::Write { id, second, poison } => {
                    let id = format!("id-{id}");
                    let at = base().saturating_add(std::time::Duration::from_secs(second.into()));
                    if poison {
                        let ack = memory.stream.put_raw(&id, Bytes::from_static(b"{not json")).unwrap();
                        let version = Version::new(at, ack.sequence_number.clone());
                        puts.insert((ack.shard_id.clone(), ack.sequence_number), Put { id: id.clone(), version: version.clone(), poison: true });
                        let token = ConsistencyToken::Event { shard_id: ack.shard_id.clone(), version: version.clone() }.encode();
                        writes.push(Write { id, shard: ack.shard_id, version, poison: true, token });
                        continue;
                    }
                    let before: HashMap<String, usize> = shards
                        .iter()
                        .map(|shard| (shard.clone(), records_on(&runtime, &memory, shard).len()))
                        .collect();
                    let body = format!(r#"{{"id":"{id}","status":"s{}","timestamp":"{}"}}"#, writes.len(), at.to_rfc3339());
                    let response = runtime.block_on(api.handle(ApiRequest {
                        method: Method::POST,
                        path: "/events".into(),
                        query: None,
                        content_type: None,
                        idempotency_key: None,
                        body: Bytes::from(body),
                    }));
                    // Every record this request put, acknowledged or not, is the model's too.
                    let mut put_now = Vec::new();
                    for shard in &shards {
                        for record in &records_on(&runtime, &memory, shard)[before[shard]..] {
                            prop_assert_eq!(&record.partition_key, &id);
                            let version = Version::new(at, record.sequence_number.clone());
                            puts.insert((shard.clone(), record.sequence_number.clone()), Put { id: id.clone(), version, poison: false });
                            put_now.push((shard.clone(), record.sequence_number.clone()));
                        }
                    }
                    if response.status == StatusCode::SERVICE_UNAVAILABLE {
                        continue;
                    }
                    prop_assert_eq!(response.status, StatusCode::ACCEPTED);
                    let answer: Value = serde_json::from_slice(&response.body).unwrap();
                    let token = answer["token"].as_str().unwrap().to_owned();
                    let decoded = ConsistencyToken::decode(&token).unwrap();
                    let ConsistencyToken::Event { shard_id, version } = decoded else {
                        panic!("an event token");
                    };
                    prop_assert_eq!(&version.event_time, &at);
                    // The acknowledged put is the request's last: any copy a timeout left
                    // behind has a lower sequence number, so it never outranks the token.
                    prop_assert_eq!(put_now.last(), Some(&(shard_id.clone(), version.sequence.clone())));
                    writes.push(Write { id, shard: shard_id, version, poison: false, token });
                }
                Op::Process { shard, count, checkpoint: write_checkpoint } => {
                    let shard = &shards[usize::from(shard) % shards.len()];
                    let all = records_on(&runtime, &memory, shard);
                    let from = taken.get(shard).copied().unwrap_or(0);
                    let to = (from + usize::from(count)).min(all.len());
                    if from == to {
                        continue;
                    }
                    let batch = &all[from..to];
                    let outcome = if write_checkpoint {
                        runtime.block_on(consumer.run_batch(shard, batch))
                    } else {
                        runtime.block_on(processor.process_batch(shard, batch))
                    };
                    prop_assert_eq!(outcome.failure, None);
                    taken.insert(shard.clone(), to);
                    for record in batch {
                        let put = &puts[&(shard.clone(), record.sequence_number.clone())];
                        if !put.poison && newest.get(&put.id).is_none_or(|v| put.version > *v) {
                            newest.insert(put.id.clone(), put.version.clone());
                        }
                    }
                    if write_checkpoint {
                        checkpoint.insert(shard.clone(), batch[batch.len() - 1].sequence_number.clone());
                    }
                }
                Op::Read { write } => {
                    if writes.is_empty() {
                        continue;
                    }
                    let w = &writes[usize::from(write) % writes.len()];
                    let model_row = newest.get(&w.id);
                    let satisfied = model_row.is_some_and(|v| *v >= w.version)
                        || checkpoint.get(&w.shard).is_some_and(|c| *c >= w.version.sequence);
                    let (status, body) = get(&api, &format!("/messages/{}", w.id), format!("after={}", w.token));
                    if satisfied {
                        match model_row {
                            Some(expected) => {
                                prop_assert_eq!(status, StatusCode::OK, "{}", body);
                                let seen = row_version(&body);
                                prop_assert_eq!(&seen, expected);
                                if !w.poison {
                                    prop_assert!(seen >= w.version, "older than the write: {}", body);
                                }
                            }
                            None => prop_assert_eq!(status, StatusCode::NOT_FOUND, "{}", body),
                        }
                    } else {
                        prop_assert_eq!(status, StatusCode::CONFLICT, "{}", body);
                        prop_assert_eq!(body["error"]["code"].as_str(), Some("not_yet_visible"));
                        match model_row {
                            Some(expected) => prop_assert_eq!(&row_version(&body["current"]), expected),
                            None => prop_assert!(body["current"].is_null()),
                        }
                    }
                }
            }
        }
    }
}
