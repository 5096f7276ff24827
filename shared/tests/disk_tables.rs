//! The tables on disk (`serve --data-dir`) against the in-memory adapters as the model: random
//! STATUS writes (newer, older, the same event again), checkpoints and "behind" notes, HISTORY
//! and DEADLETTER writes (again and again), status view commits (and conflicting ones),
//! idempotency keys claimed, taken over, completed and released under live and stale leases,
//! with the file closed and opened again between steps. After every step each read the routes make
//! answers exactly what the in-memory adapter answers. A model check, not a copy: the memory
//! adapters are the ones every other property test holds to the domain's rules.

#![cfg(feature = "disk")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use tidemark::adapters::disk::DiskTables;
use tidemark::adapters::memory::{
    MemoryChangeFeed, MemoryCheckpointStore, MemoryDeadLetterStore, MemoryHistoryStore,
    MemoryIdempotencyStore, MemoryStatusStore, MemoryStatusView,
};
use tidemark::domain::idempotency::{IdempotencyRecord, KeyState};
use tidemark::domain::status_view::{ListPosition, ViewChange, ViewEntry};
use tidemark::domain::EventTime;
use tidemark::domain::{SequenceNumber, VersionKey};
use tidemark::ports::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tidemark-disk-tables-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const CACHE: usize = 1 << 20;
const IDS: [&str; 4] = ["a", "b", "a\u{e9}", "b-long-id"];
const STATUSES: [&str; 3] = ["new", "shipped", "failed"];
const SHARDS: [&str; 3] = ["shard-1", "shard-10", "shard-2"];
const KEYS: [&str; 3] = ["processor#shard-1", "archiver#shard-1", "processor#shard-2"];

#[derive(Clone, Debug)]
enum Step {
    Apply {
        id: usize,
        status: usize,
        time: u8,
        sequence: u16,
        data: bool,
    },
    Advance {
        key: usize,
        sequence: u16,
        records: u8,
    },
    Behind {
        key: usize,
        sequence: u16,
        at: u8,
    },
    History {
        entries: Vec<(usize, u8, u16)>,
    },
    Letter {
        shard: usize,
        sequence: u16,
        reason: u8,
    },
    View {
        id: usize,
        status: usize,
        shard: usize,
        time: u8,
        stale: bool,
    },
    /// Idempotency keys: `lease` and `other` are leases (ms), `now` and `expires` seconds.
    Claim {
        key: usize,
        lease: u8,
        expires: u8,
        now: u8,
    },
    TakeOver {
        key: usize,
        lease: u8,
        other: u8,
    },
    Complete {
        key: usize,
        lease: u8,
    },
    Release {
        key: usize,
        lease: u8,
    },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, 0..3usize, 0..4u8, 0..8u16, any::<bool>()).prop_map(|(id, status, time, sequence, data)| Step::Apply { id, status, time, sequence, data }),
        2 => (0..3usize, 0..60u16, 0..5u8).prop_map(|(key, sequence, records)| Step::Advance { key, sequence, records }),
        1 => (0..3usize, 0..60u16, 0..9u8).prop_map(|(key, sequence, at)| Step::Behind { key, sequence, at }),
        2 => prop::collection::vec((0..4usize, 0..5u8, 0..40u16), 0..5).prop_map(|entries| Step::History { entries }),
        1 => (0..3usize, 0..20u16, 0..3u8).prop_map(|(shard, sequence, reason)| Step::Letter { shard, sequence, reason }),
        4 => (0..4usize, 0..3usize, 0..3usize, 0..5u8, prop::bool::weighted(0.2)).prop_map(|(id, status, shard, time, stale)| Step::View { id, status, shard, time, stale }),
        2 => (0..3usize, 0..3u8, 0..5u8, 0..5u8).prop_map(|(key, lease, expires, now)| Step::Claim { key, lease, expires, now }),
        1 => (0..3usize, 0..3u8, 0..3u8).prop_map(|(key, lease, other)| Step::TakeOver { key, lease, other }),
        1 => (0..3usize, 0..3u8).prop_map(|(key, lease)| Step::Complete { key, lease }),
        1 => (0..3usize, 0..3u8).prop_map(|(key, lease)| Step::Release { key, lease }),
        1 => Just(Step::Reopen),
    ]
}

fn version(time: u8, sequence: u16) -> VersionKey {
    VersionKey(format!("2026-12-05T00:00:0{time}Z#{sequence:05}"))
}

fn row(id: usize, status: usize, time: u8, sequence: u16, data: bool) -> StatusRow {
    StatusRow {
        id: IDS[id].into(),
        status: STATUSES[status].into(),
        timestamp: format!("2026-12-05T00:00:0{time}Z"),
        data: data.then(|| format!(r#"{{"n":{sequence}}}"#)),
        received_at: "2026-12-05T00:00:09Z".into(),
        shard_id: SHARDS[usize::from(sequence) % 3].into(),
        sequence_number: SequenceNumber::parse(&sequence.to_string()).unwrap(),
        version: version(time, sequence),
        updated_at: "2026-12-05T00:00:10Z".into(),
    }
}

struct Model {
    status: MemoryStatusStore,
    oplog: MemoryCheckpointStore,
    history: MemoryHistoryStore,
    letters: MemoryDeadLetterStore,
    view: MemoryStatusView,
    keys: MemoryIdempotencyStore,
}

fn seconds(s: u8) -> EventTime {
    EventTime::from_unix_nanos(i128::from(s) * 1_000_000_000)
}

fn key_record(key: usize, lease: u8, expires: u8, now: u8) -> IdempotencyRecord {
    IdempotencyRecord {
        key: format!("events#key-{key}"),
        fingerprint: format!("sha-{key}-{lease}"),
        received_at: seconds(now),
        default_time: seconds(now.saturating_sub(1)),
        state: KeyState::InProgress {
            lease_until_ms: i64::from(lease),
        },
        expires_at: i64::from(expires),
    }
}

/// The tables in `dir`, with a change feed every other opening (STATUS decides on the stored
/// version alone without one).
fn open(
    dir: &std::path::Path,
    with_feed: bool,
) -> (Arc<DiskTables>, Option<Arc<MemoryChangeFeed>>) {
    let feed = with_feed.then(|| Arc::new(MemoryChangeFeed::new(10_000)));
    let (tables, _) = DiskTables::open(dir, CACHE, feed.clone()).unwrap();
    (tables, feed)
}

async fn scan_all(store: &dyn StatusScanner) -> Vec<StatusRow> {
    let mut all = Vec::new();
    let mut start = None;
    loop {
        let page = store.scan_page(start.as_deref()).await.unwrap();
        all.extend(page.rows);
        match page.next {
            Some(next) => start = Some(next),
            None => return all,
        }
    }
}

async fn members_all(view: &dyn StatusViewReader, status: &str) -> Vec<Vec<ViewEntry>> {
    let shards: Vec<String> = SHARDS[..2].iter().map(|s| (*s).to_owned()).collect();
    let mut pages = Vec::new();
    let mut below: Option<ListPosition> = None;
    loop {
        let page = view
            .members(&shards, status, below.as_ref(), 2)
            .await
            .unwrap();
        pages.push(page.entries);
        match page.next {
            Some(next) => below = Some(next),
            None => return pages,
        }
    }
}

async fn compare(disk: &DiskTables, model: &Model) {
    for key in 0..3 {
        let name = format!("events#key-{key}");
        assert_eq!(
            disk.idempotency_key(&name).unwrap(),
            model.keys.get(&name),
            "idempotency key {name}"
        );
    }
    assert_eq!(
        scan_all(disk).await,
        scan_all(&model.status).await,
        "STATUS scan"
    );
    for id in IDS {
        assert_eq!(
            StatusReader::get(disk, id).await.unwrap(),
            StatusReader::get(&model.status, id).await.unwrap(),
            "STATUS {id}"
        );
        for (before, limit) in [(None, 100), (None, 2), (Some(version(2, 20)), 3)] {
            assert_eq!(
                disk.page(id, before.as_ref(), limit).await.unwrap(),
                model
                    .history
                    .page(id, before.as_ref(), limit)
                    .await
                    .unwrap(),
                "HISTORY {id} below {before:?}, {limit}"
            );
        }
    }
    assert_eq!(
        CheckpointReader::progress(disk).await.unwrap(),
        model.oplog.progress().await.unwrap(),
        "OPLOG"
    );
    for key in KEYS {
        assert_eq!(
            CheckpointReader::get(disk, key).await.unwrap(),
            CheckpointReader::get(&model.oplog, key).await.unwrap()
        );
    }
    assert_eq!(
        DeadLetterReader::list(disk).await.unwrap(),
        model.letters.list().await.unwrap(),
        "DEADLETTER"
    );
    let ids: Vec<String> = IDS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        StatusViewWriter::entries(disk, &ids).await.unwrap(),
        StatusViewWriter::entries(&model.view, &ids).await.unwrap(),
        "view entries"
    );
    assert_eq!(
        disk.entry_page(None).await.unwrap(),
        model.view.entry_page(None).await.unwrap()
    );
    for shards in [&SHARDS[..], &SHARDS[..1], &SHARDS[1..]] {
        let shards: Vec<String> = shards.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            disk.counts(&shards).await.unwrap(),
            model.view.counts(&shards).await.unwrap(),
            "counts of {shards:?}"
        );
    }
    for status in STATUSES {
        assert_eq!(
            members_all(disk, status).await,
            members_all(&model.view, status).await,
            "members of {status}"
        );
    }
}

async fn run(feed_first: bool, steps: Vec<Step>) {
    let dir = scratch();
    let mut openings = 0;
    let (mut disk, mut feed) = open(&dir, feed_first);
    let (mut fed, mut applied_with_feed) = (0, 0);
    let model = Model {
        status: MemoryStatusStore::default(),
        oplog: MemoryCheckpointStore::default(),
        history: MemoryHistoryStore::default(),
        letters: MemoryDeadLetterStore::default(),
        view: MemoryStatusView::default(),
        keys: MemoryIdempotencyStore::default(),
    };
    for step in steps {
        match step {
            Step::Apply {
                id,
                status,
                time,
                sequence,
                data,
            } => {
                let row = row(id, status, time, sequence, data);
                let outcome = disk.apply(row.clone()).await.unwrap();
                assert_eq!(outcome, model.status.apply(row).await.unwrap());
                if outcome == ApplyOutcome::Applied && feed.is_some() {
                    applied_with_feed += 1;
                }
            }
            Step::Advance {
                key,
                sequence,
                records,
            } => {
                let checkpoint = Checkpoint {
                    shard_id: KEYS[key].into(),
                    sequence_number: SequenceNumber::parse(&sequence.to_string()).unwrap(),
                    updated_at: format!("t{sequence}"),
                    records_applied: u64::from(records),
                    lag_ms: u64::from(records) * 7,
                    mirrored_into: (records % 2 == 0).then(|| "new-table".to_owned()),
                };
                assert_eq!(
                    disk.advance(&checkpoint).await.unwrap(),
                    model.oplog.advance(&checkpoint).await.unwrap()
                );
            }
            Step::Behind { key, sequence, at } => {
                let behind = Behind {
                    shard_id: KEYS[key].into(),
                    sequence_number: SequenceNumber::parse(&sequence.to_string()).unwrap(),
                    since: format!("since {at}"),
                    at: format!("at {at}"),
                };
                disk.note_behind(&behind).await.unwrap();
                model.oplog.note_behind(&behind).await.unwrap();
            }
            Step::History { entries } => {
                let entries: Vec<HistoryEntry> = entries
                    .into_iter()
                    .map(|(id, time, sequence)| {
                        row(id, usize::from(time) % 3, time, sequence, true)
                    })
                    .collect();
                assert_eq!(
                    disk.put_many(entries.clone()).await.unwrap(),
                    model.history.put_many(entries).await.unwrap()
                );
            }
            Step::Letter {
                shard,
                sequence,
                reason,
            } => {
                let record = StreamRecord {
                    partition_key: format!("key {sequence}"),
                    sequence_number: SequenceNumber::parse(&sequence.to_string()).unwrap(),
                    data: Bytes::from(vec![0, 255, b'{', reason]),
                    approximate_arrival: None,
                };
                let letter =
                    DeadLetter::new(SHARDS[shard], &record, &format!("reason {reason}"), "now");
                DeadLetterWriter::put(disk.as_ref(), &letter).await.unwrap();
                DeadLetterWriter::put(&model.letters, &letter)
                    .await
                    .unwrap();
            }
            Step::View {
                id,
                status,
                shard,
                time,
                stale,
            } => {
                let ids = vec![IDS[id].to_owned()];
                let stored = StatusViewWriter::entries(&model.view, &ids).await.unwrap();
                let mut before = stored.get(IDS[id]).cloned();
                if stale {
                    // A writer that read before another one committed.
                    before = match before {
                        Some(_) => None,
                        None => Some(ViewEntry {
                            id: IDS[id].into(),
                            status: "new".into(),
                            version: version(0, 0),
                            shard_id: SHARDS[0].into(),
                        }),
                    };
                }
                let change = ViewChange {
                    before,
                    after: ViewEntry {
                        id: IDS[id].into(),
                        status: STATUSES[status].into(),
                        version: version(time, u16::from(time) * 3),
                        shard_id: SHARDS[shard].into(),
                    },
                };
                let changes = [change];
                assert_eq!(
                    disk.commit(&changes).await.unwrap(),
                    model.view.commit(&changes).await.unwrap()
                );
            }
            Step::Claim {
                key,
                lease,
                expires,
                now,
            } => {
                let record = key_record(key, lease, expires, now);
                assert_eq!(
                    disk.claim(&record, seconds(now)).await.unwrap(),
                    model.keys.claim(&record, seconds(now)).await.unwrap(),
                    "claim {record:?}"
                );
            }
            Step::TakeOver { key, lease, other } => {
                let key = format!("events#key-{key}");
                let (lease, other) = (i64::from(lease), i64::from(other) + 10);
                assert_eq!(
                    disk.take_over(&key, lease, other).await.unwrap(),
                    model.keys.take_over(&key, lease, other).await.unwrap()
                );
            }
            Step::Complete { key, lease } => {
                let key = format!("events#key-{key}");
                let answer = format!(r#"{{"answer":"{key} {lease}"}}"#);
                assert_eq!(
                    disk.complete(&key, i64::from(lease), &answer)
                        .await
                        .unwrap(),
                    model
                        .keys
                        .complete(&key, i64::from(lease), &answer)
                        .await
                        .unwrap()
                );
            }
            Step::Release { key, lease } => {
                let key = format!("events#key-{key}");
                assert_eq!(
                    disk.release(&key, i64::from(lease)).await.unwrap(),
                    model.keys.release(&key, i64::from(lease)).await.unwrap()
                );
            }
            Step::Reopen => {
                fed += feed.as_ref().map_or(0, |f| f.end());
                drop(disk);
                openings += 1;
                (disk, feed) = open(&dir, feed_first == (openings % 2 == 0));
            }
        }
        compare(&disk, &model).await;
    }
    assert_eq!(
        fed + feed.as_ref().map_or(0, |f| f.end()),
        applied_with_feed,
        "every applied row is one change in the feed"
    );
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_tables_on_disk_answer_as_the_tables_in_memory(
        feed_first in any::<bool>(),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(feed_first, steps));
    }
}

/// A file that is not a redb database is refused naming it, not opened over.
#[test]
fn a_file_that_is_not_the_tables_is_refused_naming_it() {
    let dir = scratch();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tables.redb"), b"not a database at all, just text").unwrap();
    let error = DiskTables::open(&dir, CACHE, None).err().unwrap();
    assert!(error.contains("tables.redb"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Expired keys are deleted as new ones are claimed, a few per claim, an hour after they expire:
/// the file holds about one TTL of keys, not every key ever sent.
#[tokio::test]
async fn expired_keys_are_swept_as_new_ones_are_claimed() {
    let dir = scratch();
    let (disk, _) = open(&dir, false);
    let at = |secs: i64| EventTime::from_unix_nanos(i128::from(secs) * 1_000_000_000);
    let claim = |n: u32, now: i64, expires: i64| IdempotencyRecord {
        key: format!("events#k{n}"),
        fingerprint: "f".into(),
        received_at: at(now),
        default_time: at(now),
        state: KeyState::Completed {
            answer: "{}".into(),
        },
        expires_at: expires,
    };
    for n in 0..100 {
        assert_eq!(disk.claim(&claim(n, 0, 10), at(0)).await.unwrap(), None);
    }
    assert_eq!(disk.idempotency_keys().unwrap(), 100);
    // Expired, but within the hour's grace: kept.
    disk.claim(&claim(1000, 3000, 9000), at(3000))
        .await
        .unwrap();
    assert_eq!(disk.idempotency_keys().unwrap(), 101);
    // Past the grace: each claim takes some of them, until none is left.
    for n in 0..20 {
        disk.claim(&claim(2000 + n, 5000, 9000), at(5000))
            .await
            .unwrap();
    }
    assert_eq!(
        disk.idempotency_keys().unwrap(),
        21,
        "the 100 expired keys are gone"
    );
    assert_eq!(disk.idempotency_key("events#k0").unwrap(), None);
    assert!(disk.idempotency_key("events#k1000").unwrap().is_some());
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes from many tasks at once share commits (the writer's groups) and still keep STATUS's
/// rule and the feed's order: each id ends at the greatest version written to it, and its
/// changes in the feed rise in version, each from the status before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_statuss_rule_and_the_feeds_order() {
    let dir = scratch();
    let (disk, feed) = open(&dir, true);
    let feed = feed.unwrap();
    let writers: Vec<_> = (0..8u64)
        .map(|seed| {
            let disk = disk.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut written = Vec::new();
                for _ in 0..300 {
                    let row = row(
                        rng.usize(0..4),
                        rng.usize(0..3),
                        rng.u8(0..4),
                        rng.u16(0..500),
                        true,
                    );
                    written.push(row.clone());
                    disk.apply(row).await.unwrap();
                }
                written
            })
        })
        .collect();
    let mut newest: std::collections::HashMap<String, StatusRow> = Default::default();
    for writer in writers {
        for row in writer.await.unwrap() {
            let kept = newest.entry(row.id.clone()).or_insert_with(|| row.clone());
            if row.version > kept.version {
                *kept = row;
            }
        }
    }
    for (id, row) in &newest {
        assert_eq!(
            StatusReader::get(disk.as_ref(), id).await.unwrap().as_ref(),
            Some(row)
        );
    }
    let FeedRead::Changes { entries, .. } = feed.read_from(None, 100_000).await.unwrap() else {
        panic!("the feed reads from its start");
    };
    let mut last: std::collections::HashMap<String, (VersionKey, String)> = Default::default();
    for entry in entries {
        let change = entry.change;
        let before = last.insert(
            change.id.clone(),
            (change.version.clone(), change.new_status.clone()),
        );
        match before {
            Some((version, status)) => {
                assert!(change.version > version, "{change:?} after {version:?}");
                assert_eq!(change.old_status.as_ref(), Some(&status), "{change:?}");
            }
            None => assert_eq!(change.old_status, None, "{change:?}"),
        }
    }
    for (id, row) in &newest {
        assert_eq!(
            last[id].0, row.version,
            "the feed's last change of {id} is its row"
        );
    }
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
