//! The status view in memory: entries, counters and the lists under one lock, so a commit is
//! all or nothing exactly as a DynamoDB transaction is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::status_view::{
    counter_deltas, sum_counts, CounterKey, ListPosition, StatusCount, ViewChange, ViewEntry,
};
use crate::domain::VersionKey;
use crate::ports::{
    EntryPage, MemberPage, StatusViewReader, StatusViewScanner, StatusViewWriter, StoreError,
    ViewCommit,
};

#[derive(Default)]
pub struct MemoryStatusView {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, ViewEntry>,
    counters: HashMap<CounterKey, i64>,
    /// (status, version, shard) → id: every status's list, in list order.
    lists: BTreeMap<(String, VersionKey, String), String>,
}

fn list_key(entry: &ViewEntry) -> (String, VersionKey, String) {
    (
        entry.status.clone(),
        entry.version.clone(),
        entry.shard_id.clone(),
    )
}

impl MemoryStatusView {
    /// Every entry, for tests to compare with STATUS.
    pub fn all_entries(&self) -> Vec<ViewEntry> {
        lock(&self.state).entries.values().cloned().collect()
    }

    /// Every (shard, status) counter, for tests to compare with the entries.
    pub fn counters(&self) -> HashMap<CounterKey, i64> {
        lock(&self.state).counters.clone()
    }
}

#[async_trait]
impl StatusViewWriter for MemoryStatusView {
    async fn entries(&self, ids: &[String]) -> Result<HashMap<String, ViewEntry>, StoreError> {
        let state = lock(&self.state);
        Ok(ids
            .iter()
            .filter_map(|id| state.entries.get(id).map(|e| (id.clone(), e.clone())))
            .collect())
    }

    async fn commit(&self, changes: &[ViewChange]) -> Result<ViewCommit, StoreError> {
        let mut state = lock(&self.state);
        if changes
            .iter()
            .any(|c| state.entries.get(&c.after.id) != c.before.as_ref())
        {
            return Ok(ViewCommit::Conflict);
        }
        for (key, delta) in counter_deltas(changes) {
            *state.counters.entry(key).or_insert(0) += delta;
        }
        for change in changes {
            if let Some(before) = &change.before {
                state.lists.remove(&list_key(before));
            }
            let after = &change.after;
            state.lists.insert(list_key(after), after.id.clone());
            state.entries.insert(after.id.clone(), after.clone());
        }
        Ok(ViewCommit::Committed)
    }
}

/// Entries per page of [`MemoryStatusView`]'s scan, like a DynamoDB page of small items.
const ENTRY_PAGE: usize = 1000;

#[async_trait]
impl StatusViewScanner for MemoryStatusView {
    /// Pages in id order; each page sorts the ids after `start` (a test-sized view's scan).
    async fn entry_page(&self, start: Option<&str>) -> Result<EntryPage, StoreError> {
        let state = lock(&self.state);
        let mut ids: Vec<&String> = state
            .entries
            .keys()
            .filter(|id| start.is_none_or(|s| id.as_str() > s))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > ENTRY_PAGE;
        ids.truncate(ENTRY_PAGE);
        Ok(EntryPage {
            next: more.then(|| ids.last().map(|id| (*id).clone())).flatten(),
            entries: ids.iter().map(|id| state.entries[*id].clone()).collect(),
        })
    }
}

#[async_trait]
impl StatusViewReader for MemoryStatusView {
    async fn counts(&self, shards: &[String]) -> Result<Vec<StatusCount>, StoreError> {
        let state = lock(&self.state);
        Ok(sum_counts(
            state
                .counters
                .iter()
                .filter(|(k, _)| shards.contains(&k.shard_id))
                .map(|(k, v)| (k.clone(), *v)),
        ))
    }

    async fn members(
        &self,
        shards: &[String],
        status: &str,
        below: Option<&ListPosition>,
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        let state = lock(&self.state);
        let low = (status.to_owned(), VersionKey(String::new()), String::new());
        // Every key of `status` sorts below this: no status lies between s and s + NUL.
        let high = match below {
            Some(p) => (status.to_owned(), p.version.clone(), p.shard_id.clone()),
            None => (
                format!("{status}\0"),
                VersionKey(String::new()),
                String::new(),
            ),
        };
        let mut entries = Vec::new();
        let mut more = false;
        for ((_, _, shard), id) in state.lists.range(low..high).rev() {
            if !shards.contains(shard) {
                continue;
            }
            if entries.len() == limit {
                more = true;
                break;
            }
            if let Some(entry) = state.entries.get(id) {
                entries.push(entry.clone());
            }
        }
        let next = more
            .then(|| entries.last().map(ViewEntry::position))
            .flatten();
        Ok(MemberPage { entries, next })
    }
}
