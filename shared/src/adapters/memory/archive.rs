//! The archive and HISTORY without AWS: [`MemoryArchive`] (objects in memory, or files under a
//! directory for `serve --data-dir`) and [`MemoryHistoryStore`], with S3's and DynamoDB's
//! semantics (a put replaces, keys list in byte order, items over 400 KB are refused).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::lock;
use super::tables::item_size;
use crate::domain::limits::MAX_DYNAMODB_ITEM_BYTES;
use crate::domain::VersionKey;
use crate::ports::*;

/// Keys per list page, as S3's ListObjectsV2.
const LIST_PAGE_KEYS: usize = 1000;

/// The archive's objects in memory, or in files under a directory (one file per key, its
/// slashes as subdirectories), which outlive the process.
pub struct MemoryArchive {
    objects: Mutex<BTreeMap<String, Bytes>>,
    directory: Option<PathBuf>,
    put_calls: AtomicU64,
}

impl Default for MemoryArchive {
    fn default() -> Self {
        Self {
            objects: Mutex::default(),
            directory: None,
            put_calls: AtomicU64::new(0),
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

impl MemoryArchive {
    /// An archive kept in `directory`, holding what an earlier run left there.
    pub fn in_directory(directory: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let directory = directory.into();
        std::fs::create_dir_all(&directory).map_err(|e| io_error(&directory, e))?;
        let mut objects = BTreeMap::new();
        load(&directory, &directory, &mut objects)?;
        Ok(Self {
            objects: Mutex::new(objects),
            directory: Some(directory),
            put_calls: AtomicU64::new(0),
        })
    }

    pub fn put_calls(&self) -> u64 {
        self.put_calls.load(Ordering::Relaxed)
    }

    /// Every object's key and size in bytes.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        lock(&self.objects)
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// Replaces an object's bytes (tests: a corrupt object).
    pub fn overwrite(&self, key: &str, body: Bytes) {
        lock(&self.objects).insert(key.to_owned(), body);
    }
}

/// Reads every file under `root` as an object keyed by its path below it (`/`-separated). Files
/// a crash left half-written (`*.tmp`) are not objects.
fn load(
    root: &Path,
    directory: &Path,
    objects: &mut BTreeMap<String, Bytes>,
) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(directory).map_err(|e| io_error(directory, e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error(directory, e))?.path();
        if path.is_dir() {
            load(root, &path, objects)?;
        } else if path.extension().is_none_or(|ext| ext != "tmp") {
            let key = path
                .strip_prefix(root)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let body = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
            objects.insert(key, body.into());
        }
    }
    Ok(())
}

/// A key is a relative path of plain names: no `..`, no empty part, nothing absolute.
fn file_of(directory: &Path, key: &str) -> Result<PathBuf, StoreError> {
    let mut path = directory.to_path_buf();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
            return Err(StoreError::Rejected(format!(
                "{key:?} is not an archive key"
            )));
        }
        path.push(part);
    }
    Ok(path)
}

#[async_trait]
impl ArchiveWriter for MemoryArchive {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(directory) = &self.directory {
            // Written aside and renamed: a crash leaves the old object or the new, never half.
            let file = file_of(directory, key)?;
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
            }
            let temporary = file.with_extension("tmp");
            std::fs::write(&temporary, &body).map_err(|e| io_error(&temporary, e))?;
            std::fs::rename(&temporary, &file).map_err(|e| io_error(&file, e))?;
        }
        lock(&self.objects).insert(key.to_owned(), body);
        Ok(())
    }
}

#[async_trait]
impl ArchiveReader for MemoryArchive {
    async fn list(&self, start_after: Option<&str>) -> Result<ArchivePage, StoreError> {
        let objects = lock(&self.objects);
        let mut keys = objects
            .keys()
            .filter(|key| start_after.is_none_or(|after| key.as_str() > after));
        let page: Vec<String> = keys.by_ref().take(LIST_PAGE_KEYS).cloned().collect();
        Ok(ArchivePage {
            more: keys.next().is_some(),
            keys: page,
        })
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        lock(&self.objects)
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::Rejected(format!("no archive object {key:?}")))
    }
}

/// HISTORY in memory: (id, version) → entry; refuses entries over DynamoDB's item limit.
#[derive(Default)]
pub struct MemoryHistoryStore {
    entries: Mutex<BTreeMap<(String, VersionKey), HistoryEntry>>,
    put_calls: AtomicU64,
}

impl MemoryHistoryStore {
    /// Entries written, counting rewrites of one key once.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn put_calls(&self) -> u64 {
        self.put_calls.load(Ordering::Relaxed)
    }

    /// Every entry of `id`, oldest first.
    pub fn of(&self, id: &str) -> Vec<HistoryEntry> {
        lock(&self.entries)
            .range((id.to_owned(), VersionKey(String::new()))..)
            .take_while(|((entry_id, _), _)| entry_id == id)
            .map(|(_, entry)| entry.clone())
            .collect()
    }
}

#[async_trait]
impl HistoryWriter for MemoryHistoryStore {
    async fn put_many(&self, entries: Vec<HistoryEntry>) -> Result<HistoryWrite, StoreError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        let mut write = HistoryWrite::default();
        let mut stored = lock(&self.entries);
        for entry in entries {
            if item_size(&entry) > MAX_DYNAMODB_ITEM_BYTES {
                write.refused.push((entry.id, entry.sequence_number));
                continue;
            }
            write.written += 1;
            stored.insert((entry.id.clone(), entry.version.clone()), entry);
        }
        Ok(write)
    }
}

#[async_trait]
impl HistoryReader for MemoryHistoryStore {
    async fn page(
        &self,
        id: &str,
        before: Option<&VersionKey>,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        let stored = lock(&self.entries);
        let low = (id.to_owned(), VersionKey(String::new()));
        let mut newer_first = stored
            .range(low..)
            .take_while(|((entry_id, _), _)| entry_id == id)
            .filter(|((_, version), _)| before.is_none_or(|before| version < before))
            .map(|(_, entry)| entry.clone())
            .collect::<Vec<_>>();
        newer_first.reverse();
        let more = newer_first.len() > limit;
        newer_first.truncate(limit);
        Ok(HistoryPage {
            next: if more {
                newer_first.last().map(|e| e.version.clone())
            } else {
                None
            },
            entries: newer_first,
        })
    }
}
