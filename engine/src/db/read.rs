//! The read path: a point read consults the memtables newest first, then the tables of the
//! version that goes with them, at one sequence number; a scan or an iterator merges them all.

use super::{Db, DbInner, ReadView};
use crate::error::Result;
use crate::iterator::{Child, DbIterator, LevelCursor, MemCursor};
use crate::memtable::{Memtable, Slot};
use crate::metrics::{sampled, Sampled, Timer};
use crate::version::FileMeta;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

impl Db {
    /// The value of `key`, or `None` if it is absent. The value shares the memory it was read
    /// from (a memtable's 64 KiB block or a table's data block), which it keeps allocated for
    /// as long as it lives: copy a value that is kept for long.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        crate::blocking::block_on(self.get_async(key))
    }

    /// The value of `key`, or `None` if it is absent.
    pub async fn get_async(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.inner.check_open()?;
        self.inner.get_at(key, None).await
    }

    /// Every live key and value in `[start, end)` (to the last key if `end` is `None`), in key
    /// order, as of one sequence number. Materializes the whole range: meant for modest ranges
    /// and for verification.
    pub fn scan(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<(Bytes, Bytes)>> {
        crate::blocking::block_on(self.scan_async(start, end))
    }

    /// See [`Db::scan`].
    pub async fn scan_async(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.inner.check_open()?;
        self.inner.scan_at(start, end, None).await
    }

    /// An iterator over the live keys in `[lower, upper)` (unbounded where `None`) as of now;
    /// position it with a seek. It reads one consistent state however the database changes
    /// meanwhile.
    pub fn iter(&self, lower: Option<&[u8]>, upper: Option<&[u8]>) -> Result<DbIterator> {
        crate::blocking::block_on(self.iter_async(lower, upper))
    }

    /// See [`Db::iter`].
    pub async fn iter_async(
        &self,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
    ) -> Result<DbIterator> {
        self.inner.check_open()?;
        self.inner.iter_at(lower, upper, None).await
    }
}

/// The newest version of `key` at `seq` across `tables` (newest first).
fn find(tables: &[Arc<Memtable>], key: &[u8], seq: u64) -> Option<Slot> {
    tables.iter().find_map(|t| t.get(key, seq))
}

impl DbInner {
    /// The value of `key` at sequence number `seq` (a snapshot's) or, if `None`, the latest:
    /// memtables newest first, then tables.
    pub(super) async fn get_at(&self, key: &[u8], seq: Option<u64>) -> Result<Option<Bytes>> {
        if !sampled(Sampled::Get) {
            return self.get_untimed(key, seq).await;
        }
        let timer = Timer::start(self.rt.as_ref(), &self.counters.latency.get);
        let found = self.get_untimed(key, seq).await;
        timer.stop();
        found
    }

    async fn get_untimed(&self, key: &[u8], seq: Option<u64>) -> Result<Option<Bytes>> {
        let (view, seq) = self.read_view(seq);
        if let Some(slot) = find(&view.memtables, key, seq) {
            return Ok(slot);
        }
        for file in view.version.files_for_key(key) {
            if file.min_seq > seq {
                continue; // every entry in it is newer than the read
            }
            let table = self.table_cache.get(file.number, file.file_bytes).await?;
            let Some(hit) = table.find(key, seq).await? else { continue };
            return match hit.value {
                Some(pointer) if hit.blob => {
                    let blobs = self.table_cache.blobs();
                    Ok(Some(blobs.value(&view.version, table.path(), &pointer, key, true).await?))
                }
                value => Ok(value),
            };
        }
        Ok(None)
    }

    /// Every live key in `[start, end)` at sequence number `seq` (as in `get_at`), with its
    /// value.
    pub(super) async fn scan_at(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        seq: Option<u64>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let mut it = self.iter_at(Some(start), end, seq).await?;
        it.seek_to_first_async().await?;
        let mut out = Vec::new();
        while let Some((key, value)) = it.entry() {
            out.push((key.clone(), value.clone()));
            it.next_async().await?;
        }
        Ok(out)
    }

    /// An iterator over `[lower, upper)` at sequence number `seq` (as in `get_at`).
    pub(super) async fn iter_at(
        &self,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        seq: Option<u64>,
    ) -> Result<DbIterator> {
        let (view, seq) = self.read_view(seq);
        let version = &view.version;
        let mut children: Vec<Child> =
            view.memtables.iter().map(|m| Child::Mem(MemCursor::new(Arc::clone(m)))).collect();
        let wanted = |file: &FileMeta| {
            let below = upper.is_some_and(|upper| file.smallest_key.as_ref() >= upper);
            let above = lower.is_some_and(|lower| file.largest_key.as_ref() < lower);
            !below && !above && file.min_seq <= seq
        };
        for file in version.levels[0].iter().filter(|f| wanted(f)) {
            let table = self.table_cache.get(file.number, file.file_bytes).await?;
            children.push(Child::Table(table.iter()));
        }
        // Deeper levels open their tables as the walk reaches them.
        for level in &version.levels[1..] {
            let files: Vec<_> = level.iter().filter(|f| wanted(f)).cloned().collect();
            if !files.is_empty() {
                let tables = Arc::clone(&self.table_cache);
                children.push(Child::Level(LevelCursor::new(files, tables)));
            }
        }
        // The iterator holds the tables open; the version's files stay on disk while it lives.
        let pin = Arc::clone(version);
        Ok(DbIterator::new(
            children,
            seq,
            lower.map(<[u8]>::to_vec),
            upper.map(<[u8]>::to_vec),
            pin,
            Arc::clone(&self.table_cache),
        ))
    }

    /// What a read consults: the memtables and the version, taken together, then (unless a
    /// snapshot gives it) the sequence number. The sequence number last, because a compaction
    /// may drop versions older than the newest one published when it started, and a latest
    /// read taken after the version is installed sees that newest one.
    fn read_view(&self, seq: Option<u64>) -> (Arc<ReadView>, u64) {
        let view = {
            let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(&m.view)
        };
        let seq = seq.unwrap_or_else(|| self.visible_seq.load(Ordering::SeqCst));
        (view, seq)
    }
}
