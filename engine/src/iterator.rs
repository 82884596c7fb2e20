//! Iterators: a merging cursor over the memtables and every table of a version, and on top of
//! it [`DbIterator`], which shows each user key's newest version at one sequence number,
//! forward and reverse, with seek, within `[lower, upper)`.
//!
//! The merging cursor (`Merged`) walks *internal* entries (user key ascending, sequence number
//! descending) of all its children, always positioned on the smallest (moving forward) or
//! largest (moving backward) child entry; it changes direction only by a seek, which
//! repositions every child. `DbIterator` hides versions above its read sequence number,
//! shadowed versions and deleted keys.
//!
//! An iterator holds the memtables and the version it started with, so the tables it reads
//! stay on disk however the tree changes meanwhile, and it reads exactly the state at its
//! sequence number. Level-0 tables are each a child; each deeper level is one child
//! ([`LevelCursor`], Pebble's `levelIter`) that opens its tables one at a time as the walk
//! reaches them, so a walk over thousands of tables holds a few open, within the table cache's
//! bound.

use crate::error::Result;
use crate::memtable::{InternalKey, Memtable, SEQ_MAX};
use crate::sstable::{Table, TableIter};
use crate::table_cache::TableCache;
use crate::version::{FileMeta, Version};
use bytes::Bytes;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

/// Compares internal keys: user key ascending, then sequence number descending.
fn cmp_internal(a: (&[u8], u64), b: (&[u8], u64)) -> Ordering {
    a.0.cmp(b.0).then(b.1.cmp(&a.1))
}

/// A cursor over one memtable. It re-finds its place by key at every step instead of holding
/// a skiplist entry, so it can live across awaits and sees a consistent order while writes go
/// on (entries it has not reached yet may appear; the read sequence number hides them).
#[derive(Debug)]
pub(crate) struct MemCursor {
    mem: Arc<Memtable>,
    current: Option<(InternalKey, Option<Bytes>)>,
}

impl MemCursor {
    pub(crate) fn new(mem: Arc<Memtable>) -> Self {
        MemCursor { mem, current: None }
    }

    fn set(&mut self, found: Option<(InternalKey, Option<Bytes>)>) {
        self.current = found;
    }

    fn probe(user_key: &[u8], seq: u64) -> InternalKey {
        InternalKey::new(Bytes::copy_from_slice(user_key), seq)
    }

    fn seek(&mut self, user_key: &[u8], seq: u64) {
        let probe = Self::probe(user_key, seq);
        self.set(self.mem.neighbour(Bound::Included(&probe), true));
    }

    fn seek_before(&mut self, user_key: &[u8], seq: u64) {
        let probe = Self::probe(user_key, seq);
        self.set(self.mem.neighbour(Bound::Excluded(&probe), false));
    }

    fn next(&mut self) {
        if let Some((key, _)) = self.current.take() {
            self.set(self.mem.neighbour(Bound::Excluded(&key), true));
        }
    }

    fn prev(&mut self) {
        if let Some((key, _)) = self.current.take() {
            self.set(self.mem.neighbour(Bound::Excluded(&key), false));
        }
    }
}

/// A cursor over the tables of one level below 0, which hold disjoint key ranges in key
/// order: it holds one table open at a time, moving to the next (or previous) table when the
/// open one runs out.
#[derive(Debug)]
pub(crate) struct LevelCursor {
    /// The level's tables the read may need, in key order.
    files: Vec<Arc<FileMeta>>,
    tables: Arc<TableCache>,
    /// The open table's position in `files` and its cursor; `None` when unpositioned or run
    /// off either end.
    open: Option<(usize, TableIter)>,
}

impl LevelCursor {
    pub(crate) fn new(files: Vec<Arc<FileMeta>>, tables: Arc<TableCache>) -> Self {
        LevelCursor { files, tables, open: None }
    }

    fn table(&self) -> Option<&TableIter> {
        self.open.as_ref().map(|(_, t)| t).filter(|t| t.valid())
    }

    /// The cursor of table `at` of `files`, opened unless it is the one open. The table open
    /// before is let go of first: one at a time.
    async fn open_at(&mut self, at: usize) -> Result<&mut TableIter> {
        if self.open.as_ref().is_none_or(|(i, _)| *i != at) {
            self.open = None;
            let f = &self.files[at];
            let table = self.tables.get(f.number, f.file_bytes).await?;
            self.open = Some((at, table.iter()));
        }
        Ok(&mut self.open.as_mut().expect("just opened").1)
    }

    /// While the open table has run off its end, moves to the next table's first entry.
    async fn skip_forward(&mut self) -> Result<()> {
        while let Some((at, t)) = &self.open {
            if t.valid() {
                break;
            }
            let next = at + 1;
            if next == self.files.len() {
                self.open = None;
                break;
            }
            self.open_at(next).await?.seek_to_first().await?;
        }
        Ok(())
    }

    /// While the open table has run off its start, moves to the previous table's last entry.
    async fn skip_backward(&mut self) -> Result<()> {
        while let Some((at, t)) = &self.open {
            if t.valid() {
                break;
            }
            let Some(previous) = at.checked_sub(1) else {
                self.open = None;
                break;
            };
            self.open_at(previous).await?.seek_to_last().await?;
        }
        Ok(())
    }

    async fn seek(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        // Every entry of a table whose largest key is below `user_key` sorts before the target.
        let at = self.files.partition_point(|f| f.largest_key.as_ref() < user_key);
        if at == self.files.len() {
            self.open = None;
            return Ok(());
        }
        self.open_at(at).await?.seek(user_key, seq).await?;
        self.skip_forward().await
    }

    async fn seek_before(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        // Every entry of a table whose smallest key is above `user_key` sorts after the target.
        let after = self.files.partition_point(|f| f.smallest_key.as_ref() <= user_key);
        let Some(at) = after.checked_sub(1) else {
            self.open = None;
            return Ok(());
        };
        self.open_at(at).await?.seek_before(user_key, seq).await?;
        self.skip_backward().await
    }

    async fn seek_to_last(&mut self) -> Result<()> {
        let Some(at) = self.files.len().checked_sub(1) else {
            self.open = None;
            return Ok(());
        };
        self.open_at(at).await?.seek_to_last().await?;
        self.skip_backward().await
    }

    async fn next(&mut self) -> Result<()> {
        if let Some((_, t)) = &mut self.open {
            t.next().await?;
        }
        self.skip_forward().await
    }

    async fn prev(&mut self) -> Result<()> {
        if let Some((_, t)) = &mut self.open {
            t.prev().await?;
        }
        self.skip_backward().await
    }
}

/// One input of the merge.
#[derive(Debug)]
pub(crate) enum Child {
    Mem(MemCursor),
    Table(TableIter),
    Level(LevelCursor),
}

impl Child {
    fn valid(&self) -> bool {
        match self {
            Child::Mem(c) => c.current.is_some(),
            Child::Table(t) => t.valid(),
            Child::Level(l) => l.table().is_some(),
        }
    }

    fn key(&self) -> (&[u8], u64) {
        match self {
            Child::Mem(c) => {
                c.current.as_ref().map_or((&[][..], 0), |(k, _)| (&k.user_key[..], k.seq))
            }
            Child::Table(t) => (t.user_key(), t.seq()),
            Child::Level(l) => l.table().map_or((&[][..], 0), |t| (t.user_key(), t.seq())),
        }
    }

    fn value(&self) -> Option<&[u8]> {
        match self {
            Child::Mem(c) => c.current.as_ref().and_then(|(_, v)| v.as_deref()),
            Child::Table(t) => t.value(),
            Child::Level(l) => l.table().and_then(TableIter::value),
        }
    }

    /// The table holding the current entry if its value is a blob pointer.
    fn blob_table(&self) -> Option<&Arc<Table>> {
        let table = match self {
            Child::Mem(_) => None,
            Child::Table(t) => Some(t),
            Child::Level(l) => l.table(),
        };
        table.filter(|t| t.is_blob()).map(TableIter::table)
    }

    async fn seek(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        match self {
            Child::Mem(c) => c.seek(user_key, seq),
            Child::Table(t) => t.seek(user_key, seq).await?,
            Child::Level(l) => l.seek(user_key, seq).await?,
        }
        Ok(())
    }

    async fn seek_before(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        match self {
            Child::Mem(c) => c.seek_before(user_key, seq),
            Child::Table(t) => t.seek_before(user_key, seq).await?,
            Child::Level(l) => l.seek_before(user_key, seq).await?,
        }
        Ok(())
    }

    async fn seek_to_last(&mut self) -> Result<()> {
        match self {
            Child::Mem(c) => {
                let last = c.mem.neighbour(Bound::Unbounded, false);
                c.set(last);
            }
            Child::Table(t) => t.seek_to_last().await?,
            Child::Level(l) => l.seek_to_last().await?,
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<()> {
        match self {
            Child::Mem(c) => c.next(),
            Child::Table(t) => t.next().await?,
            Child::Level(l) => l.next().await?,
        }
        Ok(())
    }

    async fn prev(&mut self) -> Result<()> {
        match self {
            Child::Mem(c) => c.prev(),
            Child::Table(t) => t.prev().await?,
            Child::Level(l) => l.prev().await?,
        }
        Ok(())
    }
}

/// The merge of all children's internal entries.
#[derive(Debug)]
struct Merged {
    children: Vec<Child>,
    current: Option<usize>,
    forward: bool,
}

impl Merged {
    fn valid(&self) -> bool {
        self.current.is_some()
    }

    fn key(&self) -> (&[u8], u64) {
        self.children[self.current.expect("valid")].key()
    }

    /// The current entry's value, or its blob pointer and the table holding it.
    fn slot(&self) -> Option<Value> {
        let child = &self.children[self.current.expect("valid")];
        let value = Bytes::copy_from_slice(child.value()?);
        Some(match child.blob_table() {
            Some(table) => Value::Blob { pointer: value, table: Arc::clone(table) },
            None => Value::Inline(value),
        })
    }

    /// Points `current` at the smallest (forward) or largest child entry.
    fn pick(&mut self) {
        self.current = None;
        for i in 0..self.children.len() {
            if !self.children[i].valid() {
                continue;
            }
            let better = self.current.is_none_or(|c| {
                let order = cmp_internal(self.children[i].key(), self.children[c].key());
                if self.forward {
                    order == Ordering::Less
                } else {
                    order == Ordering::Greater
                }
            });
            if better {
                self.current = Some(i);
            }
        }
    }

    /// Positions at the first entry at or after `(user_key, seq)`.
    async fn seek(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        for child in &mut self.children {
            child.seek(user_key, seq).await?;
        }
        self.forward = true;
        self.pick();
        Ok(())
    }

    /// Positions at the last entry before `(user_key, seq)`.
    async fn seek_before(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        for child in &mut self.children {
            child.seek_before(user_key, seq).await?;
        }
        self.forward = false;
        self.pick();
        Ok(())
    }

    /// Moves past the current entry; only while moving forward (`DbIterator` changes
    /// direction by seeking, which repositions every child).
    async fn next(&mut self) -> Result<()> {
        debug_assert!(self.forward, "the merge changes direction only by seeking");
        let Some(c) = self.current else { return Ok(()) };
        self.children[c].next().await?;
        self.pick();
        Ok(())
    }

    /// Moves before the current entry; only while moving backward.
    async fn prev(&mut self) -> Result<()> {
        debug_assert!(!self.forward, "the merge changes direction only by seeking");
        let Some(c) = self.current else { return Ok(()) };
        self.children[c].prev().await?;
        self.pick();
        Ok(())
    }
}

/// A value as the merge finds it: in place, or in a blob file.
enum Value {
    Inline(Bytes),
    /// The pointer, and the table holding it (for errors naming it).
    Blob {
        pointer: Bytes,
        table: Arc<Table>,
    },
}

/// A cursor over the live keys of the database at one sequence number, in `[lower, upper)`.
/// Created by [`crate::Db::iter`] or [`crate::Snapshot::iter`]; unpositioned until a seek.
/// Every method has a blocking form and an `_async` one.
#[derive(Debug)]
pub struct DbIterator {
    merged: Merged,
    read_seq: u64,
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
    /// The entry shown, copied out: its user key and value.
    entry: Option<(Bytes, Bytes)>,
    /// Keeps the tables and blob files the children read named by a live version, so none is
    /// deleted; gives the blob files' sizes.
    version: Arc<Version>,
    /// Where blob pointers are resolved.
    tables: Arc<TableCache>,
}

impl DbIterator {
    pub(crate) fn new(
        children: Vec<Child>,
        read_seq: u64,
        lower: Option<Vec<u8>>,
        upper: Option<Vec<u8>>,
        version: Arc<Version>,
        tables: Arc<TableCache>,
    ) -> Self {
        let merged = Merged { children, current: None, forward: true };
        DbIterator { merged, read_seq, lower, upper, entry: None, version, tables }
    }

    /// The value `value` stands for, read from its blob file if it is a pointer.
    async fn resolve(&self, key: &[u8], value: Value) -> Result<Bytes> {
        match value {
            Value::Inline(value) => Ok(value),
            Value::Blob { pointer, table } => {
                let blobs = self.tables.blobs();
                blobs.value(&self.version, table.path(), &pointer, key, true).await
            }
        }
    }

    /// Whether the iterator is positioned on an entry.
    pub fn valid(&self) -> bool {
        self.entry.is_some()
    }

    /// The current key. Panics unless `valid()`.
    pub fn key(&self) -> &[u8] {
        &self.entry.as_ref().expect("the iterator is not positioned on an entry").0
    }

    /// The current value. Panics unless `valid()`.
    pub fn value(&self) -> &[u8] {
        &self.entry.as_ref().expect("the iterator is not positioned on an entry").1
    }

    /// The current entry, if any.
    pub fn entry(&self) -> Option<(&Bytes, &Bytes)> {
        self.entry.as_ref().map(|(k, v)| (k, v))
    }

    /// Positions at the first key at or after `target` (and the lower bound).
    pub fn seek(&mut self, target: &[u8]) -> Result<()> {
        crate::blocking::block_on(self.seek_async(target))
    }

    /// See [`DbIterator::seek`].
    pub async fn seek_async(&mut self, target: &[u8]) -> Result<()> {
        let target = match &self.lower {
            Some(lower) if lower.as_slice() > target => lower.clone(),
            _ => target.to_vec(),
        };
        self.merged.seek(&target, SEQ_MAX).await?;
        self.find_next().await
    }

    /// Positions at the last key at or before `target` (and below the upper bound).
    pub fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        crate::blocking::block_on(self.seek_for_prev_async(target))
    }

    /// See [`DbIterator::seek_for_prev`].
    pub async fn seek_for_prev_async(&mut self, target: &[u8]) -> Result<()> {
        match &self.upper {
            Some(upper) if upper.as_slice() <= target => {
                let upper = upper.clone();
                self.merged.seek_before(&upper, SEQ_MAX).await?;
            }
            // Before (target, 0): every version of `target` sorts before it.
            _ => self.merged.seek_before(target, 0).await?,
        }
        self.find_prev().await
    }

    /// Positions at the first key in range.
    pub fn seek_to_first(&mut self) -> Result<()> {
        crate::blocking::block_on(self.seek_to_first_async())
    }

    /// See [`DbIterator::seek_to_first`].
    pub async fn seek_to_first_async(&mut self) -> Result<()> {
        self.seek_async(&[]).await
    }

    /// Positions at the last key in range.
    pub fn seek_to_last(&mut self) -> Result<()> {
        crate::blocking::block_on(self.seek_to_last_async())
    }

    /// See [`DbIterator::seek_to_last`].
    pub async fn seek_to_last_async(&mut self) -> Result<()> {
        match self.upper.clone() {
            Some(upper) => self.merged.seek_before(&upper, SEQ_MAX).await?,
            None => {
                for child in &mut self.merged.children {
                    child.seek_to_last().await?;
                }
                self.merged.forward = false;
                self.merged.pick();
            }
        }
        self.find_prev().await
    }

    /// Moves to the next key. Does nothing unless `valid()`.
    // A cursor that moves both ways and whose every step can fail on I/O, as RocksDB's and
    // Pebble's iterators are: not a std `Iterator`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<()> {
        crate::blocking::block_on(self.next_async())
    }

    /// See [`DbIterator::next`].
    pub async fn next_async(&mut self) -> Result<()> {
        let Some((key, _)) = self.entry.take() else { return Ok(()) };
        if self.merged.forward {
            // Past the rest of this key's versions.
            while self.merged.valid() && self.merged.key().0 == key.as_ref() {
                self.merged.next().await?;
            }
        } else {
            // Before (key, 0) sorts every version of `key`: the first entry after is the next
            // user key.
            self.merged.seek(&key, 0).await?;
        }
        self.find_next().await
    }

    /// Moves to the previous key. Does nothing unless `valid()`.
    pub fn prev(&mut self) -> Result<()> {
        crate::blocking::block_on(self.prev_async())
    }

    /// See [`DbIterator::prev`].
    pub async fn prev_async(&mut self) -> Result<()> {
        let Some((key, _)) = self.entry.take() else { return Ok(()) };
        if self.merged.forward {
            self.merged.seek_before(&key, SEQ_MAX).await?;
        }
        // Moving backward, the merge already stands on the previous key's entries.
        self.find_prev().await
    }

    /// From the merge's position, moving forward, finds the first live key in range.
    async fn find_next(&mut self) -> Result<()> {
        self.entry = None;
        while self.merged.valid() {
            let (key, seq) = self.merged.key();
            if self.upper.as_deref().is_some_and(|upper| key >= upper) {
                return Ok(());
            }
            if seq > self.read_seq {
                self.merged.next().await?;
                continue;
            }
            // The newest version at the read sequence number: the first one reached.
            let key = Bytes::copy_from_slice(key);
            if let Some(value) = self.merged.slot() {
                let value = self.resolve(&key, value).await?;
                self.entry = Some((key, value));
                return Ok(());
            }
            while self.merged.valid() && self.merged.key().0 == key.as_ref() {
                self.merged.next().await?;
            }
        }
        Ok(())
    }

    /// From the merge's position, moving backward, finds the last live key in range. Moving
    /// backward meets a key's versions oldest first, so the newest one at the read sequence
    /// number is the last one met.
    async fn find_prev(&mut self) -> Result<()> {
        self.entry = None;
        while self.merged.valid() {
            let key = Bytes::copy_from_slice(self.merged.key().0);
            if self.lower.as_deref().is_some_and(|lower| key.as_ref() < lower) {
                return Ok(());
            }
            let mut newest: Option<Option<Value>> = None;
            while self.merged.valid() && self.merged.key().0 == key.as_ref() {
                if self.merged.key().1 <= self.read_seq {
                    newest = Some(self.merged.slot());
                }
                self.merged.prev().await?;
            }
            if let Some(Some(value)) = newest {
                let value = self.resolve(&key, value).await?;
                self.entry = Some((key, value));
                return Ok(());
            }
        }
        Ok(())
    }
}
