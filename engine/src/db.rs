//! `Db`: open, write, read and close a database.
//!
//! Opening replays every WAL into memtables (one per log, oldest first), truncates a torn tail
//! off the newest log, then starts a fresh WAL and memtable for new writes. Writes go through
//! the commit pipeline (`commit`); reads consult the memtables newest first at the visible
//! sequence number. Both a blocking API and an async one are offered: the blocking methods drive
//! the async ones to completion on the caller's thread.
//!
//! Invariant: `visible_seq` only grows, and every operation with a sequence number at or below
//! it is in a memtable.

use crate::batch::{BatchOp, WriteBatch};
use crate::commit::{self, LeaderState, Pipeline, Publisher};
use crate::error::{Error, Result};
use crate::memtable::{Memtable, Slot};
use crate::metrics::{Counters, Metrics};
use crate::options::{Options, WriteOptions};
use crate::runtime::{FileLock, RuntimeRef};
use crate::wal::{self, WalWriter};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

/// An open database. Cloning gives another handle to the same database.
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<DbInner>,
}

/// The memtables: the active one takes writes; the immutable ones, newest last, wait for flush.
#[derive(Debug)]
struct Memtables {
    active: Arc<Memtable>,
    immutable: Vec<Arc<Memtable>>,
}

#[derive(Debug)]
pub(crate) struct DbInner {
    pub(crate) rt: RuntimeRef,
    pub(crate) options: Options,
    pub(crate) counters: Counters,
    pub(crate) pipeline: Pipeline,
    pub(crate) publisher: Publisher,
    dir: PathBuf,
    memtables: RwLock<Memtables>,
    visible_seq: AtomicU64,
    poisoned: OnceLock<Arc<str>>,
    closed: AtomicBool,
    lock: Mutex<Option<Box<dyn FileLock>>>,
}

impl Db {
    /// Opens (or creates) the database in `dir`, blocking the calling thread.
    pub fn open(dir: impl AsRef<Path>, options: Options, rt: RuntimeRef) -> Result<Db> {
        pollster::block_on(Self::open_async(dir, options, rt))
    }

    /// Opens (or creates) the database in `dir`.
    pub async fn open_async(dir: impl AsRef<Path>, options: Options, rt: RuntimeRef) -> Result<Db> {
        crate::recovery::open(dir.as_ref(), options, rt).await
    }

    pub(crate) fn from_recovered(r: crate::recovery::Recovered) -> Db {
        let active = Arc::new(Memtable::new(r.wal.number()));
        let next_file_number = r.wal.number() + 1;
        let state = LeaderState::new(r.wal, r.last_seq, next_file_number);
        let inner = DbInner {
            rt: r.rt,
            options: r.options,
            counters: Counters::default(),
            pipeline: Pipeline::new(state),
            publisher: Publisher::default(),
            dir: r.dir,
            memtables: RwLock::new(Memtables { active, immutable: r.memtables }),
            visible_seq: AtomicU64::new(r.last_seq),
            poisoned: OnceLock::new(),
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(r.lock)),
        };
        Db { inner: Arc::new(inner) }
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &[u8], value: &[u8], opts: WriteOptions) -> Result<()> {
        pollster::block_on(self.put_async(key, value, opts))
    }

    /// Sets `key` to `value`.
    pub async fn put_async(&self, key: &[u8], value: &[u8], opts: WriteOptions) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value)?;
        self.write_async(batch, opts).await.map(drop)
    }

    /// Removes `key`.
    pub fn delete(&self, key: &[u8], opts: WriteOptions) -> Result<()> {
        pollster::block_on(self.delete_async(key, opts))
    }

    /// Removes `key`.
    pub async fn delete_async(&self, key: &[u8], opts: WriteOptions) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key)?;
        self.write_async(batch, opts).await.map(drop)
    }

    /// Applies `batch` atomically. Returns the sequence number of its first operation (the
    /// others follow consecutively); an empty batch returns the last assigned number.
    pub fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<u64> {
        pollster::block_on(self.write_async(batch, opts))
    }

    /// Applies `batch` atomically; see [`Db::write`].
    pub async fn write_async(&self, batch: WriteBatch, opts: WriteOptions) -> Result<u64> {
        self.inner.check_writable()?;
        if batch.is_empty() && !opts.sync {
            return Ok(self.latest_sequence());
        }
        commit::commit(&self.inner, batch, opts.sync, false).await
    }

    /// Makes every write acknowledged so far durable, as a synced write would.
    pub fn sync_wal(&self) -> Result<()> {
        pollster::block_on(self.sync_wal_async())
    }

    /// Makes every write acknowledged so far durable.
    pub async fn sync_wal_async(&self) -> Result<()> {
        self.write_async(WriteBatch::new(), WriteOptions::synced()).await.map(drop)
    }

    /// The value of `key`, or `None` if it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        pollster::block_on(self.get_async(key))
    }

    /// The value of `key`, or `None` if it is absent.
    pub async fn get_async(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.inner.check_open()?;
        let seq = self.latest_sequence();
        Ok(self.inner.get_at(key, seq).flatten())
    }

    /// Every live key and value in `[start, end)` (to the last key if `end` is `None`), in key
    /// order, as of one sequence number. Materializes the whole range: meant for modest ranges
    /// and for verification.
    pub fn scan(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<(Bytes, Bytes)>> {
        self.inner.check_open()?;
        let seq = self.latest_sequence();
        let tables = self.inner.memtables_newest_first();
        let mut keys = Vec::new();
        for table in &tables {
            table.keys_in(start, end, &mut keys);
        }
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(Some(value)) = find(&tables, &key, seq) {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// The sequence number of the newest write visible to reads. Never decreases.
    pub fn latest_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// A snapshot of the engine's counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
    }

    /// Waits for writes in flight, makes every acknowledged write durable, and releases the
    /// database. Later calls on any handle fail with [`Error::Closed`]. Dropping every handle
    /// without closing keeps only what was already synced.
    pub fn close(&self) -> Result<()> {
        pollster::block_on(self.close_async())
    }

    /// See [`Db::close`].
    pub async fn close_async(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let sealed = commit::commit(&self.inner, WriteBatch::new(), true, true).await;
        self.inner.lock.lock().unwrap_or_else(PoisonError::into_inner).take();
        sealed.map(drop)
    }
}

/// The newest version of `key` at `seq` across `tables` (newest first).
fn find(tables: &[Arc<Memtable>], key: &[u8], seq: u64) -> Option<Slot> {
    tables.iter().find_map(|t| t.get(key, seq))
}

impl DbInner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn check_not_poisoned(&self) -> Result<()> {
        match self.poisoned.get() {
            Some(cause) => Err(Error::Poisoned(Arc::clone(cause))),
            None => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        self.check_not_poisoned()
    }

    /// Latches the poisoned state (the first cause wins) and returns the error to report.
    pub(crate) fn poison(&self, cause: &str) -> Error {
        let cause = self.poisoned.get_or_init(|| Arc::from(cause));
        tracing::error!(%cause, "database poisoned: no more writes until reopened");
        Error::Poisoned(Arc::clone(cause))
    }

    fn get_at(&self, key: &[u8], seq: u64) -> Option<Slot> {
        find(&self.memtables_newest_first(), key, seq)
    }

    fn memtables_newest_first(&self) -> Vec<Arc<Memtable>> {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        let mut tables = Vec::with_capacity(m.immutable.len() + 1);
        tables.push(Arc::clone(&m.active));
        tables.extend(m.immutable.iter().rev().cloned());
        tables
    }

    pub(crate) fn active_memtable(&self) -> Arc<Memtable> {
        Arc::clone(&self.memtables.read().unwrap_or_else(PoisonError::into_inner).active)
    }

    pub(crate) fn active_memtable_full(&self) -> bool {
        self.active_memtable().approximate_bytes() >= self.options.memtable_bytes_max
    }

    /// Retires the active memtable and starts one for WAL `wal_number`.
    pub(crate) fn install_memtable(&self, wal_number: u64) {
        let mut m = self.memtables.write().unwrap_or_else(PoisonError::into_inner);
        let fresh = Arc::new(Memtable::new(wal_number));
        let old = std::mem::replace(&mut m.active, fresh);
        m.immutable.push(old);
    }

    pub(crate) fn publish(&self, seq: u64) {
        debug_assert!(seq >= self.visible_seq.load(Ordering::Relaxed));
        self.visible_seq.store(seq, Ordering::Release);
    }

    pub(crate) async fn create_wal(&self, number: u64) -> Result<WalWriter> {
        create_wal(self.rt.as_ref(), &self.dir, number).await
    }
}

/// Creates WAL `number` in `dir` and makes its name durable.
pub(crate) async fn create_wal(
    rt: &dyn crate::runtime::Runtime,
    dir: &Path,
    number: u64,
) -> Result<WalWriter> {
    let path = dir.join(wal::file_name(number));
    let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    rt.fs().sync_dir(dir).await.map_err(|e| Error::io("syncing directory", dir, e))?;
    Ok(WalWriter::new(file, path, number, 0))
}

/// Applies replayed operations to a memtable.
pub(crate) fn apply_ops(memtable: &Memtable, first_seq: u64, ops: Vec<BatchOp>) {
    for (op, seq) in ops.into_iter().zip(first_seq..) {
        match op {
            BatchOp::Put(key, value) => memtable.insert(key, seq, Some(value)),
            BatchOp::Delete(key) => memtable.insert(key, seq, None),
        }
    }
}

/// Handles cross threads and tasks.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<Db>();
};
