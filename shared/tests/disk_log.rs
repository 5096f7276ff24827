//! The stream on disk (`serve --data-dir`), against a simple model: random puts (single and
//! many, concurrent), the log closed and opened again between rounds (as a process that stops or
//! is killed and starts again: nothing is written at close). Every acknowledged record reads back
//! from its shard, in order, with its bytes; sequence numbers only grow and none is given twice,
//! across reopenings; the same key always lands on the same shard, the one the in-memory
//! stream picks. Plus the refusals: another shard count, bad records, iterators of another log.

#![cfg(feature = "disk")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use tidemark::adapters::disk::DiskLog;
use tidemark::adapters::memory::MemoryStream;
use tidemark::domain::SequenceNumber;
use tidemark::ports::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tidemark-disk-log-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn record(key: &str, data: &str) -> OutgoingRecord {
    OutgoingRecord {
        partition_key: key.to_owned(),
        data: Bytes::from(data.to_owned()),
    }
}

async fn read_shard(log: &DiskLog, shard: &str) -> Vec<StreamRecord> {
    let mut iterator = log
        .shard_iterator(shard, &StartPosition::TrimHorizon)
        .await
        .unwrap();
    let mut all = Vec::new();
    loop {
        let page = log.get_records(&iterator, 7).await.unwrap();
        if page.records.is_empty() {
            return all;
        }
        all.extend(page.records);
        iterator = page.next_iterator.unwrap();
    }
}

#[derive(Clone, Debug)]
enum Step {
    Put { key: u8, many: u8 },
    Reopen,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => (0u8..20, 0u8..4).prop_map(|(key, many)| Step::Put { key, many }),
            1 => Just(Step::Reopen),
        ],
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn every_acknowledged_record_reads_back_in_order_and_no_number_is_given_twice(
        steps in steps(),
        shards in 1usize..4,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = scratch();
            let mut log = DiskLog::open(&dir, shards).unwrap();
            let routing = MemoryStream::new(shards);
            // The model: per shard, the acknowledged records in the order they were given numbers.
            let mut model: BTreeMap<String, Vec<(SequenceNumber, String, String)>> = BTreeMap::new();
            let mut given = HashSet::new();
            let mut newest: Option<SequenceNumber> = None;
            for (n, step) in steps.iter().enumerate() {
                match step {
                    Step::Reopen => {
                        drop(log);
                        log = DiskLog::open(&dir, shards).unwrap();
                    }
                    Step::Put { key, many } => {
                        let records: Vec<OutgoingRecord> = (0..=*many)
                            .map(|i| record(&format!("id-{key}"), &format!("step {n} record {i}")))
                            .collect();
                        let acks: Vec<PutAck> = if *many == 0 {
                            vec![log.put(&records[0]).await.unwrap()]
                        } else {
                            log.put_many(&records)
                                .await
                                .unwrap()
                                .into_iter()
                                .map(|r| match r {
                                    PutEntryResult::Accepted(ack) => ack,
                                    other => panic!("refused: {other:?}"),
                                })
                                .collect()
                        };
                        for (ack, record) in acks.into_iter().zip(&records) {
                            assert!(given.insert(ack.sequence_number.clone()), "{} given twice", ack.sequence_number);
                            assert!(newest.as_ref().is_none_or(|n| ack.sequence_number > *n), "numbers went back");
                            newest = Some(ack.sequence_number.clone());
                            // The same shard the in-memory stream routes the key to.
                            let expected = routing.put_raw(&record.partition_key, record.data.clone()).unwrap().shard_id;
                            assert_eq!(ack.shard_id, expected);
                            model.entry(ack.shard_id).or_default().push((
                                ack.sequence_number,
                                record.partition_key.clone(),
                                String::from_utf8(record.data.to_vec()).unwrap(),
                            ));
                        }
                    }
                }
            }
            drop(log);
            let log = DiskLog::open(&dir, shards).unwrap();
            for shard in log.list_shards().await.unwrap() {
                let read: Vec<_> = read_shard(&log, &shard.shard_id)
                    .await
                    .into_iter()
                    .map(|r| (r.sequence_number, r.partition_key, String::from_utf8(r.data.to_vec()).unwrap()))
                    .collect();
                assert_eq!(&read, model.get(&shard.shard_id).unwrap_or(&Vec::new()), "shard {}", shard.shard_id);
            }
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_commits_and_each_gets_its_own_number() {
    let dir = scratch();
    let log = std::sync::Arc::new(DiskLog::open(&dir, 2).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.put(&record(&format!("id-{i}"), "x"))
                    .await
                    .unwrap()
                    .sequence_number
            })
        })
        .collect();
    let mut numbers = HashSet::new();
    for task in tasks {
        assert!(numbers.insert(task.await.unwrap()));
    }
    let mut read = 0;
    for shard in log.list_shards().await.unwrap() {
        read += read_shard(&log, &shard.shard_id).await.len();
    }
    assert_eq!(read, 64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn iterators_start_at_or_after_a_number_and_refuse_what_is_not_theirs() {
    let dir = scratch();
    let log = DiskLog::open(&dir, 1).unwrap();
    let mut numbers = Vec::new();
    for (key, data) in [("a", "1"), ("b", "2"), ("c", "3")] {
        numbers.push(log.put(&record(key, data)).await.unwrap().sequence_number);
    }
    let shard = "shardId-000000000000";
    let at = log
        .shard_iterator(shard, &StartPosition::AtSequence(numbers[1].clone()))
        .await
        .unwrap();
    let page = log.get_records(&at, 10).await.unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.records[0].sequence_number, numbers[1]);
    let after = log
        .shard_iterator(shard, &StartPosition::AfterSequence(numbers[1].clone()))
        .await
        .unwrap();
    let page = log.get_records(&after, 10).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].sequence_number, numbers[2]);
    // Reading on from the end waits at the end: the next put is the next read.
    let end = page.next_iterator.unwrap();
    assert!(log.get_records(&end, 10).await.unwrap().records.is_empty());
    let fourth = log.put(&record("d", "4")).await.unwrap().sequence_number;
    assert_eq!(
        log.get_records(&end, 10).await.unwrap().records[0].sequence_number,
        fourth
    );
    assert!(matches!(
        log.shard_iterator("shardId-000000000009", &StartPosition::TrimHorizon)
            .await,
        Err(StreamError::NotFound(_))
    ));
    assert!(matches!(
        log.get_records("nonsense", 10).await,
        Err(StreamError::Invalid(_))
    ));
    assert!(matches!(
        log.put(&record("", "no key")).await,
        Err(StreamError::Invalid(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_log_opened_with_another_shard_count_is_refused_naming_its_own() {
    let dir = scratch();
    drop(DiskLog::open(&dir, 2).unwrap());
    let refused = DiskLog::open(&dir, 3).err().expect("another shard count");
    assert!(refused.contains("--shards 2"), "{refused}");
    assert!(DiskLog::open(&dir, 2).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
