//! Snapshots: a pinned sequence number that reads go through, and that compactions keep
//! every version it needs for until it is dropped.

use super::Db;
use crate::error::Result;
use crate::iterator::DbIterator;
use bytes::Bytes;
use std::sync::PoisonError;

impl Db {
    /// A consistent view of the database as of now: reads through it see exactly the writes
    /// visible at this moment, however much is written, flushed or compacted meanwhile. Holding
    /// it keeps the versions it needs from being compacted away.
    pub fn snapshot(&self) -> Snapshot {
        // Read and pinned under the lock a compaction reads the pins under: a compaction that
        // missed this pin started before it, when no version newer than `seq` was in a table.
        let mut pinned = self.inner.snapshots.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.latest_sequence();
        *pinned.entry(seq).or_insert(0) += 1;
        Snapshot { db: self.clone(), seq }
    }
}

/// A pinned view of the database; see [`Db::snapshot`]. Dropping it releases the pin.
#[derive(Debug)]
pub struct Snapshot {
    db: Db,
    seq: u64,
}

impl Snapshot {
    /// The sequence number this snapshot reads at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        crate::blocking::block_on(self.get_async(key))
    }

    /// See [`Snapshot::get`].
    pub async fn get_async(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.db.inner.check_open()?;
        self.db.inner.get_at(key, Some(self.seq)).await
    }

    /// Every live key and value in `[start, end)` as of the snapshot; see [`Db::scan`].
    pub fn scan(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<(Bytes, Bytes)>> {
        crate::blocking::block_on(self.scan_async(start, end))
    }

    /// See [`Snapshot::scan`].
    pub async fn scan_async(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.db.inner.check_open()?;
        self.db.inner.scan_at(start, end, Some(self.seq)).await
    }
}

impl Snapshot {
    /// An iterator over `[lower, upper)` as of the snapshot; see [`Db::iter`].
    pub fn iter(&self, lower: Option<&[u8]>, upper: Option<&[u8]>) -> Result<DbIterator> {
        crate::blocking::block_on(self.iter_async(lower, upper))
    }

    /// See [`Snapshot::iter`].
    pub async fn iter_async(
        &self,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
    ) -> Result<DbIterator> {
        self.db.inner.check_open()?;
        self.db.inner.iter_at(lower, upper, Some(self.seq)).await
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut pinned = self.db.inner.snapshots.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = pinned.keys().next() == Some(&self.seq);
        let Some(count) = pinned.get_mut(&self.seq) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        pinned.remove(&self.seq);
        drop(pinned);
        if oldest {
            // Entries only this snapshot needed may now be dropped from bottom-level tables:
            // the workers look (see `compaction::pick`).
            self.db.inner.work_bells.ring();
        }
    }
}
