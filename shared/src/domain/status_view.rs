//! The status view: for every status, the ids whose newest event has it, and how many.
//!
//! ## The rule, and why the counts are exact under at-least-once delivery
//!
//! The view keeps one *entry* per id (status, version, the shard that wrote it) and one
//! *counter* per (shard, status). An event changes an entry exactly when its version is newer
//! than the stored one — the same rule as STATUS ([`super::version`]), so after settling every
//! entry holds the status of the id's STATUS row.
//!
//! A change and the counters it moves are committed together, atomically (a DynamoDB
//! transaction; one lock in memory), and only if the entry is still what the consumer read
//! before deciding (`ViewChange::before`). So:
//! - a crash before the commit leaves nothing; the redelivered record decides again;
//! - a crash after it leaves entry and counters moved together; redelivered, the record is no
//!   longer newer than the entry, decides no change, and counts nothing twice;
//! - two writers of one id (a reshard's parent and child, a rebuild beside the live view) cannot
//!   both count from the same `before`: the second commit's precondition fails, it reads again.
//!
//! Hence, per status, the sum of its counters over shards is the number of entries with that
//! status, whatever order, duplication or failures the records met. Better still, counter
//! (shard, status) always equals the number of entries in bucket (shard, status): a change adds
//! one to its new entry's (shard, status) and takes one from its old entry's.
//!
//! ## Why per (shard, status), and not one counter per status
//!
//! A low-cardinality status would otherwise be one hot item taking every shard's writes (DynamoDB
//! takes at most 1,000 write units per second on one partition). An entry only moves to the
//! shard of the record that wrote it, and an id stays on one shard until a reshard, so counter
//! (shard, status) is written by that shard's consumer alone, once per commit (a commit carries
//! up to [`MAX_COMMIT_ITEMS`] items): a few dozen writes per second at a shard's full 1,000
//! records/s. The list index is bucketed the same way (`shard#status`), so no index key takes
//! more than one shard's write rate either.

use std::collections::BTreeMap;

use super::version::VersionKey;

/// One id's entry in the view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewEntry {
    pub id: String,
    pub status: String,
    pub version: VersionKey,
    /// The shard whose record wrote the entry: the bucket it is listed and counted in.
    pub shard_id: String,
}

impl ViewEntry {
    /// Where the entry sorts in its status's list.
    pub fn position(&self) -> ListPosition {
        ListPosition {
            version: self.version.clone(),
            shard_id: self.shard_id.clone(),
        }
    }

    pub fn counter(&self) -> CounterKey {
        CounterKey {
            shard_id: self.shard_id.clone(),
            status: self.status.clone(),
        }
    }
}

/// The list's order: version (event time first), then shard. Listing walks it downwards, so the
/// newest event time comes first. Within one bucket (shard, status) the version alone is unique:
/// an entry's version names the record that wrote it (event time, sequence number), and one
/// record of one shard is one id; the shard breaks ties between buckets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListPosition {
    pub version: VersionKey,
    pub shard_id: String,
}

/// A (shard, status) counter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub shard_id: String,
    pub status: String,
}

/// An entry to write, valid only while the stored entry is still `before` (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    pub before: Option<ViewEntry>,
    pub after: ViewEntry,
}

/// The change `candidate` makes to the stored entry: `None` unless it is newer (an equal version
/// is the same event delivered again).
pub fn decide(stored: Option<&ViewEntry>, candidate: ViewEntry) -> Option<ViewChange> {
    match stored {
        Some(stored) if stored.version >= candidate.version => None,
        _ => Some(ViewChange {
            before: stored.cloned(),
            after: candidate,
        }),
    }
}

/// What `changes` add to each counter; counters they leave as they were are not listed.
pub fn counter_deltas(changes: &[ViewChange]) -> BTreeMap<CounterKey, i64> {
    let mut deltas = BTreeMap::new();
    for change in changes {
        *deltas.entry(change.after.counter()).or_insert(0) += 1;
        if let Some(before) = &change.before {
            *deltas.entry(before.counter()).or_insert(0) -= 1;
        }
    }
    deltas.retain(|_, delta| *delta != 0);
    deltas
}

/// Items one commit may write: DynamoDB's TransactWriteItems takes at most 100.
pub const MAX_COMMIT_ITEMS: usize = 100;

/// The items a commit of `changes` writes: per change its entry, its new list item and (when it
/// had one) the old list item it removes; then each counter it moves.
pub fn commit_items(changes: &[ViewChange]) -> usize {
    let per_change: usize = changes
        .iter()
        .map(|c| 2 + usize::from(c.before.is_some()))
        .sum();
    per_change + counter_deltas(changes).len()
}

/// Splits `changes` into commits of at most `max_items` items each ([`commit_items`]), each
/// as large as the bound lets it be. Counts as it goes (a store may take thousands of changes
/// in one commit, and counting each candidate commit again would be quadratic).
pub fn commits(changes: Vec<ViewChange>, max_items: usize) -> Vec<Vec<ViewChange>> {
    // One change moves at most five items: entry, two list items, two counters.
    let max_items = max_items.max(5);
    let mut out: Vec<Vec<ViewChange>> = Vec::new();
    let mut current = Pending::default();
    for change in changes {
        if !current.changes.is_empty() && current.items_with(&change) > max_items {
            out.push(std::mem::take(&mut current).changes);
        }
        current.push(change);
    }
    if !current.changes.is_empty() {
        out.push(current.changes);
    }
    out
}

/// A commit being filled, with its [`commit_items`] kept up to date.
#[derive(Default)]
struct Pending {
    changes: Vec<ViewChange>,
    /// Entries and list items.
    per_change: usize,
    deltas: BTreeMap<CounterKey, i64>,
    /// Counters whose delta is not zero: the counter items.
    moved: usize,
}

impl Pending {
    /// The counters `change` moves, and by how much.
    fn moves(change: &ViewChange) -> [(CounterKey, i64); 2] {
        let after = (change.after.counter(), 1);
        match &change.before {
            Some(before) => [after, (before.counter(), -1)],
            None => [after.clone(), (after.0, 0)],
        }
    }

    fn items_with(&self, change: &ViewChange) -> usize {
        let mut deltas: BTreeMap<&CounterKey, i64> = BTreeMap::new();
        let moves = Self::moves(change);
        for (key, delta) in &moves {
            let old = self.deltas.get(key).copied().unwrap_or(0);
            *deltas.entry(key).or_insert(old) += delta;
        }
        let mut moved = self.moved;
        for (key, new) in deltas {
            let old = self.deltas.get(key).copied().unwrap_or(0);
            moved = moved + usize::from(new != 0) - usize::from(old != 0);
        }
        self.per_change + 2 + usize::from(change.before.is_some()) + moved
    }

    fn push(&mut self, change: ViewChange) {
        for (key, delta) in Self::moves(&change) {
            let value = self.deltas.entry(key).or_insert(0);
            let was_moved = *value != 0;
            *value += delta;
            self.moved = self.moved + usize::from(*value != 0) - usize::from(was_moved);
        }
        self.per_change += 2 + usize::from(change.before.is_some());
        self.changes.push(change);
    }
}

/// How many ids are in one status, summed over shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

/// Sums per-(shard, status) counters into one count per status, sorted by status; statuses
/// whose count is zero are left out (no id has them now).
pub fn sum_counts(counters: impl IntoIterator<Item = (CounterKey, i64)>) -> Vec<StatusCount> {
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for (key, count) in counters {
        *sums.entry(key.status).or_insert(0) += count;
    }
    sums.into_iter()
        .filter(|(_, count)| *count != 0)
        .map(|(status, count)| StatusCount { status, count })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, status: &str, version: &str, shard: &str) -> ViewEntry {
        ViewEntry {
            id: id.into(),
            status: status.into(),
            version: VersionKey(version.into()),
            shard_id: shard.into(),
        }
    }

    #[test]
    fn only_a_newer_version_changes_an_entry() {
        let stored = entry("a", "shipped", "2", "s0");
        assert_eq!(decide(Some(&stored), entry("a", "x", "1", "s0")), None);
        assert_eq!(decide(Some(&stored), entry("a", "x", "2", "s0")), None);
        let change = decide(Some(&stored), entry("a", "x", "3", "s0")).unwrap();
        assert_eq!(change.before, Some(stored));
        assert!(decide(None, entry("a", "x", "1", "s0"))
            .unwrap()
            .before
            .is_none());
    }

    #[test]
    fn deltas_move_one_from_the_old_bucket_to_the_new() {
        let changes = vec![
            ViewChange {
                before: Some(entry("a", "shipped", "1", "s0")),
                after: entry("a", "delivered", "2", "s0"),
            },
            ViewChange {
                before: None,
                after: entry("b", "delivered", "1", "s0"),
            },
            // Same status, same shard: the counters stay.
            ViewChange {
                before: Some(entry("c", "shipped", "1", "s0")),
                after: entry("c", "shipped", "2", "s0"),
            },
            // Same status, another shard (a reshard): one bucket to the other.
            ViewChange {
                before: Some(entry("d", "shipped", "1", "s0")),
                after: entry("d", "shipped", "2", "s1"),
            },
        ];
        let deltas = counter_deltas(&changes);
        let key = |shard: &str, status: &str| CounterKey {
            shard_id: shard.into(),
            status: status.into(),
        };
        assert_eq!(deltas.get(&key("s0", "delivered")), Some(&2));
        assert_eq!(deltas.get(&key("s0", "shipped")), Some(&-2));
        assert_eq!(deltas.get(&key("s1", "shipped")), Some(&1));
        assert_eq!(deltas.len(), 3);
    }

    #[test]
    fn commits_never_exceed_the_item_bound() {
        // New ids, moves between statuses, and moves that leave the counters where they were.
        let changes: Vec<ViewChange> = (0..250)
            .map(|i| ViewChange {
                before: (i % 3 != 0)
                    .then(|| entry(&format!("id{i}"), &format!("old{}", i % 40), "1", "s0")),
                after: if i % 5 == 0 {
                    entry(&format!("id{i}"), &format!("old{}", i % 40), "2", "s0")
                } else {
                    entry(&format!("id{i}"), &format!("new{}", i % 70), "2", "s0")
                },
            })
            .collect();
        for max in [5, 7, MAX_COMMIT_ITEMS, 1_000] {
            let split = commits(changes.clone(), max);
            for (i, commit) in split.iter().enumerate() {
                assert!(commit_items(commit) <= max, "{max}");
                // As large as the bound lets it be: the next change would not have fitted.
                if let Some(next) = split.get(i + 1) {
                    let mut more = commit.clone();
                    more.push(next[0].clone());
                    assert!(
                        commit_items(&more) > max,
                        "{max}: commit {i} could take more"
                    );
                }
            }
            assert_eq!(split.concat(), changes, "nothing lost, order kept");
        }
    }

    #[test]
    fn counts_sum_over_shards_and_drop_zeros() {
        let key = |shard: &str, status: &str| CounterKey {
            shard_id: shard.into(),
            status: status.into(),
        };
        let counts = sum_counts([
            (key("s0", "b"), 2),
            (key("s1", "b"), -1),
            (key("s0", "a"), 1),
            (key("s1", "a"), -1),
        ]);
        assert_eq!(
            counts,
            vec![StatusCount {
                status: "b".into(),
                count: 1
            }]
        );
    }
}
