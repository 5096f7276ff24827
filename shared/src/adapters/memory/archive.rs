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
use crate::domain::archive::oversize_object;
use crate::domain::limits::MAX_DYNAMODB_ITEM_BYTES;
use crate::domain::VersionKey;
use crate::ports::*;

/// Keys per list page, as S3's ListObjectsV2.
const LIST_PAGE_KEYS: usize = 1000;

/// The archive's objects in memory, or in files under a directory (one file per key, its
/// slashes as subdirectories), which outlive the process. In a directory only the keys are held
/// in memory: the bodies are read from the files, so a long `serve --data-dir` run does not keep
/// its whole archive in memory.
pub struct MemoryArchive {
    /// Every key; with its body in memory, or empty when the body is a file.
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
            .map(|(key, body)| {
                let size = match &self.directory {
                    Some(directory) => file_of(directory, key)
                        .ok()
                        .and_then(|file| std::fs::metadata(file).ok())
                        .map_or(0, |m| m.len() as usize),
                    None => body.len(),
                };
                (key.clone(), size)
            })
            .collect()
    }

    /// Replaces an object's bytes (tests: a corrupt object).
    pub fn overwrite(&self, key: &str, body: Bytes) {
        if let Some(directory) = &self.directory {
            if let Ok(file) = file_of(directory, key) {
                let _ = std::fs::write(file, &body);
            }
            lock(&self.objects).insert(key.to_owned(), Bytes::new());
        } else {
            lock(&self.objects).insert(key.to_owned(), body);
        }
    }
}

/// Lists every file under `root` as an object keyed by its path below it (`/`-separated), its
/// body left on disk. Files a crash left half-written (`*.tmp`) are not objects.
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
            objects.insert(key, Bytes::new());
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

fn write_synced(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(body)?;
    file.sync_all()
}

#[async_trait]
impl ArchiveWriter for MemoryArchive {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(directory) = &self.directory {
            // Written aside, synced and renamed: a crash leaves the old object or the new, never
            // half, and once `put` returns the object outlives a power cut too (the archiver's
            // checkpoint, which `serve --data-dir` resumes from, is only written after it).
            let file = file_of(directory, key)?;
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
            }
            let temporary = file.with_extension("tmp");
            write_synced(&temporary, &body).map_err(|e| io_error(&temporary, e))?;
            std::fs::rename(&temporary, &file).map_err(|e| io_error(&file, e))?;
            if let Some(parent) = file.parent() {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error(parent, e))?;
            }
            lock(&self.objects).insert(key.to_owned(), Bytes::new());
        } else {
            lock(&self.objects).insert(key.to_owned(), body);
        }
        Ok(())
    }
}

#[async_trait]
impl ArchivePruner for MemoryArchive {
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(directory) = &self.directory {
            let file = file_of(directory, key)?;
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&file, e)),
            }
        }
        lock(&self.objects).remove(key);
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
        let body = lock(&self.objects)
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::Rejected(format!("no archive object {key:?}")))?;
        match &self.directory {
            Some(directory) => {
                let file = file_of(directory, key)?;
                // As on S3: a file this large is not one the archiver wrote; not read.
                let size = std::fs::metadata(&file)
                    .map_err(|e| io_error(&file, e))?
                    .len();
                if let Some(reason) = oversize_object(key, size) {
                    return Err(StoreError::ItemRejected(reason));
                }
                std::fs::read(&file)
                    .map(Bytes::from)
                    .map_err(|e| io_error(&file, e))
            }
            None => Ok(body),
        }
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
        Ok(HistoryPage::of(newer_first, limit, false))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What one run writes, the next run over the same directory reads back; a half-written
    /// file is not an object, and a key cannot leave the directory.
    #[tokio::test]
    async fn a_directory_archive_outlives_its_process() {
        let dir = std::env::temp_dir().join(format!(
            "tidemark-archive-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let first = MemoryArchive::in_directory(&dir).unwrap();
        first
            .put("2024/05/01/12/s/1.jsonl.gz", Bytes::from_static(b"one"))
            .await
            .unwrap();
        first
            .put("2024/05/01/13/s/9.jsonl.gz", Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert!(first.put("../escape", Bytes::new()).await.is_err());
        assert!(first.put("a//b", Bytes::new()).await.is_err());
        std::fs::write(dir.join("2024/05/01/12/s/5.jsonl.tmp"), b"half").unwrap();

        let second = MemoryArchive::in_directory(&dir).unwrap();
        let page = second.list(None).await.unwrap();
        assert_eq!(
            page.keys,
            ["2024/05/01/12/s/1.jsonl.gz", "2024/05/01/13/s/9.jsonl.gz"]
        );
        assert!(!page.more);
        assert_eq!(
            second.get("2024/05/01/13/s/9.jsonl.gz").await.unwrap(),
            Bytes::from_static(b"two")
        );
        let after = second
            .list(Some("2024/05/01/12/s/1.jsonl.gz"))
            .await
            .unwrap();
        assert_eq!(after.keys, ["2024/05/01/13/s/9.jsonl.gz"]);
        assert_eq!(second.sizes()[0].1, 3);

        // A file grown past what an archive object can be is refused before it is read (a
        // sparse file: no disk is spent on it).
        std::fs::File::options()
            .write(true)
            .open(dir.join("2024/05/01/13/s/9.jsonl.gz"))
            .unwrap()
            .set_len(crate::domain::limits::MAX_ARCHIVE_OBJECT_BYTES + 1024 * 1024 + 1)
            .unwrap();
        match second.get("2024/05/01/13/s/9.jsonl.gz").await {
            Err(StoreError::ItemRejected(reason)) => {
                assert!(
                    reason.contains("more than an archive object can be"),
                    "{reason}"
                )
            }
            other => panic!("expected the oversize file refused, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
