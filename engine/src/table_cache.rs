//! The table cache: bounds how many table files are open at once, keeping the most recently
//! used ones open as `Arc<Table>` by file number.
//!
//! Opening a table costs reads of its footer, index, filter and properties, so live tables stay
//! open; the bound keeps a large database within the process's file-descriptor limit. Readers
//! hold an `Arc`, so evicting a table only closes its file once the last reader drops it.
//!
//! Each open table's memory (index, filter) is charged to the memory budget; under a budget the
//! cache also closes the least recently used tables past what the budget leaves open tables
//! (but always keeps the one just asked for).
//!
//! Invariant: at most `open_files_max` tables are held, and the mutex is never held across an
//! `.await`: a miss opens the table unlocked, then inserts it (if two tasks open the same table
//! at once, the first insert wins and the other copy is dropped).

use crate::blob::BlobFiles;
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::memory::MemoryBudget;
use crate::runtime::RuntimeRef;
use crate::sstable::{file_name, ReadStats, Table};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// An LRU of open tables by file number.
pub(crate) struct TableCache {
    rt: RuntimeRef,
    dir: PathBuf,
    open_files_max: usize,
    block_cache: Option<Arc<BlockCache>>,
    stats: Arc<ReadStats>,
    budget: Arc<MemoryBudget>,
    inner: Mutex<Lru>,
    /// The open blob files, for the values tables point to: a bound of their own, of the same
    /// size (`open_tables_max`).
    blobs: BlobFiles,
}

impl fmt::Debug for TableCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableCache")
            .field("dir", &self.dir)
            .field("open_files_max", &self.open_files_max)
            .field("open", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// Open tables by file number, in order of last use.
type Lru = crate::lru::Lru<u64, Arc<Table>>;

/// Removes the least recently used tables beyond `max`, and then beyond `bytes` of memory if
/// given (keeping one), returning them so the caller can drop (close) them after releasing the
/// lock.
fn trim(lru: &mut Lru, max: usize, bytes: Option<(u64, u64)>) -> Vec<Arc<Table>> {
    let mut evicted = Vec::new();
    while lru.len() > max {
        let Some((_, table)) = lru.pop_oldest() else { break };
        evicted.push(table);
    }
    if let Some((mut held, allowed)) = bytes {
        held = held.saturating_sub(evicted.iter().map(|t| t.memory_bytes()).sum());
        while held > allowed && lru.len() > 1 {
            let Some((_, table)) = lru.pop_oldest() else { break };
            held = held.saturating_sub(table.memory_bytes());
            evicted.push(table);
        }
    }
    evicted
}

impl TableCache {
    pub(crate) fn new(
        rt: RuntimeRef,
        dir: PathBuf,
        open_files_max: usize,
        block_cache: Option<Arc<BlockCache>>,
        stats: Arc<ReadStats>,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let inner = Mutex::default();
        let blobs =
            BlobFiles::new(Arc::clone(&rt), dir.clone(), open_files_max, block_cache.clone());
        TableCache { rt, dir, open_files_max, block_cache, stats, budget, inner, blobs }
    }

    /// The open blob files.
    pub(crate) fn blobs(&self) -> &BlobFiles {
        &self.blobs
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open table `file_number` of `file_bytes` bytes, opening it if needed and closing the
    /// least recently used beyond the bound. A missing file gives the `Io` error of the open.
    pub(crate) async fn get(&self, file_number: u64, file_bytes: u64) -> Result<Arc<Table>> {
        if let Some(table) = self.lock().get(file_number).cloned() {
            debug_assert_eq!(table.properties().file_bytes, file_bytes);
            return Ok(table);
        }
        let opened = Arc::new(self.open(file_number, file_bytes).await?);
        let (table, evicted) = {
            let mut lru = self.lock();
            let table = match lru.get(file_number) {
                Some(table) => Arc::clone(table),
                None => {
                    lru.insert(file_number, Arc::clone(&opened));
                    opened
                }
            };
            let bytes = self.budget.tables_allowance().map(|a| (self.budget.tables(), a));
            (table, trim(&mut lru, self.open_files_max, bytes))
        };
        // Closing files is I/O; it happens here, after the lock is released.
        drop(evicted);
        Ok(table)
    }

    async fn open(&self, file_number: u64, file_bytes: u64) -> Result<Table> {
        let path = self.dir.join(file_name(file_number));
        let file = self.rt.fs().open(&path).await.map_err(|e| Error::io("opening", &path, e))?;
        let cache = self.block_cache.clone();
        let table =
            Table::open(file, path, file_number, file_bytes, cache, Arc::clone(&self.stats))
                .await?;
        Ok(table.within(&self.budget))
    }

    /// Closes table `file_number` (once its readers are done) and drops its cached blocks:
    /// call it when the table is deleted.
    pub(crate) fn evict(&self, file_number: u64) {
        let evicted = self.lock().remove(file_number);
        drop(evicted);
        if let Some(cache) = &self.block_cache {
            cache.evict_file(file_number);
        }
    }

    /// How many tables are open (held by the cache).
    #[cfg(test)]
    pub(crate) fn open_tables(&self) -> usize {
        self.lock().len()
    }

    /// Whether table `file_number` is held open.
    #[cfg(test)]
    pub(crate) fn is_open(&self, file_number: u64) -> bool {
        self.lock().contains(file_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use crate::sstable::{TableOptions, TableWriter};
    use crate::testing::MemRuntime;
    use std::io;
    use std::path::Path;

    const DIR: &str = "/db";

    /// Writes table `number` holding one key, returning its size.
    async fn write_table(rt: &dyn Runtime, number: u64) -> u64 {
        let path = Path::new(DIR).join(file_name(number));
        let file = rt.fs().create(&path).await.unwrap();
        let mut w = TableWriter::new(file, path, TableOptions::default());
        w.add(format!("key{number}").as_bytes(), number, Some(b"v")).await.unwrap();
        w.finish().await.unwrap().file_bytes
    }

    fn setup(open_files_max: usize, tables: u64) -> (TableCache, Vec<u64>) {
        let rt: RuntimeRef = Arc::new(MemRuntime::default());
        let sizes = pollster::block_on(async {
            let mut sizes = vec![0];
            for n in 1..=tables {
                sizes.push(write_table(rt.as_ref(), n).await);
            }
            sizes
        });
        let block_cache = Some(Arc::new(BlockCache::new(1 << 20)));
        let stats = Arc::new(ReadStats::default());
        let budget = MemoryBudget::new(None);
        (TableCache::new(rt, PathBuf::from(DIR), open_files_max, block_cache, stats, budget), sizes)
    }

    #[test]
    fn keeps_at_most_the_bound_open_and_evicts_the_least_recently_used() {
        let (cache, sizes) = setup(2, 4);
        pollster::block_on(async {
            let t1 = cache.get(1, sizes[1]).await.unwrap();
            cache.get(2, sizes[2]).await.unwrap();
            let again = cache.get(1, sizes[1]).await.unwrap(); // 2 is now the oldest
            assert!(Arc::ptr_eq(&t1, &again), "a held table is not reopened");
            cache.get(3, sizes[3]).await.unwrap();
            assert_eq!(cache.open_tables(), 2);
            assert!(cache.is_open(1) && cache.is_open(3) && !cache.is_open(2));
            let t4 = cache.get(4, sizes[4]).await.unwrap();
            assert!(cache.is_open(3) && cache.is_open(4) && !cache.is_open(1));
            // An evicted table a reader still holds keeps working.
            assert_eq!(t1.get(b"key1", u64::MAX).await.unwrap().unwrap().0, 1);
            assert_eq!(t4.get(b"key4", u64::MAX).await.unwrap().unwrap().0, 4);
        });
    }

    #[test]
    fn evict_closes_a_table_and_a_later_get_reopens_it() {
        let (cache, sizes) = setup(8, 2);
        pollster::block_on(async {
            let first = cache.get(1, sizes[1]).await.unwrap();
            assert!(first.get(b"key1", 5).await.unwrap().is_some());
            cache.evict(1);
            assert!(!cache.is_open(1));
            let second = cache.get(1, sizes[1]).await.unwrap();
            assert!(!Arc::ptr_eq(&first, &second));
            assert_eq!(cache.open_tables(), 1);
        });
    }

    #[test]
    fn a_missing_table_gives_the_open_error() {
        let (cache, _) = setup(2, 1);
        let err = pollster::block_on(cache.get(9, 100)).unwrap_err();
        match err {
            Error::Io { source, path, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(path, Path::new(DIR).join("000009.sst"));
            }
            other => panic!("expected an I/O error, got {other}"),
        }
        assert_eq!(cache.open_tables(), 0);
    }

    #[test]
    fn a_zero_bound_keeps_nothing_open() {
        let (cache, sizes) = setup(0, 1);
        let table = pollster::block_on(cache.get(1, sizes[1])).unwrap();
        assert_eq!(table.file_number(), 1);
        assert_eq!(cache.open_tables(), 0);
    }
}
