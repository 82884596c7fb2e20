//! `Db`: open, write, read and close a database.
//!
//! Opening replays every WAL into memtables (one per log, oldest first), truncates a torn tail
//! off the newest log, then starts a fresh WAL and memtable for new writes, and the commit
//! pipeline's background sync task (stopped by `close`, or when the last handle is dropped).
//! Writes go through the commit pipeline (`commit`); reads consult the memtables newest first
//! at the visible sequence number. Both a blocking API and an async one are offered: the
//! blocking methods drive the async ones to completion on the caller's thread.
//!
//! Invariant: `visible_seq` only grows, and every operation with a sequence number at or below
//! it is in a memtable.

use crate::batch::{BatchOp, WriteBatch};
use crate::commit::{self, LeaderState, Pipeline, PublishQueue};
use crate::error::{Error, Result};
use crate::memtable::{Memtable, Slot};
use crate::metrics::{Counters, Metrics};
use crate::options::{Options, WriteOptions};
use crate::runtime::{FileLock, JoinHandle, RuntimeRef};
use crate::signal::Doorbell;
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
    pub(crate) publish_queue: PublishQueue,
    /// Wakes the commit pipeline's sync task; stopping it ends the task.
    pub(crate) sync_bell: Arc<Doorbell>,
    sync_task: Mutex<Option<JoinHandle>>,
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
        crate::blocking::block_on(Self::open_async(dir, options, rt))
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
            publish_queue: PublishQueue::default(),
            sync_bell: Arc::default(),
            sync_task: Mutex::new(None),
            dir: r.dir,
            memtables: RwLock::new(Memtables { active, immutable: r.memtables }),
            visible_seq: AtomicU64::new(r.last_seq),
            poisoned: OnceLock::new(),
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(r.lock)),
        };
        let inner = Arc::new(inner);
        let task = commit::sync_task::start(&inner);
        *inner.sync_task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Db { inner }
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &[u8], value: &[u8], opts: WriteOptions) -> Result<()> {
        crate::blocking::block_on(self.put_async(key, value, opts))
    }

    /// Sets `key` to `value`.
    pub async fn put_async(&self, key: &[u8], value: &[u8], opts: WriteOptions) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value)?;
        self.write_async(batch, opts).await.map(drop)
    }

    /// Removes `key`.
    pub fn delete(&self, key: &[u8], opts: WriteOptions) -> Result<()> {
        crate::blocking::block_on(self.delete_async(key, opts))
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
        crate::blocking::block_on(self.write_async(batch, opts))
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
        crate::blocking::block_on(self.sync_wal_async())
    }

    /// Makes every write acknowledged so far durable.
    pub async fn sync_wal_async(&self) -> Result<()> {
        self.write_async(WriteBatch::new(), WriteOptions::synced()).await.map(drop)
    }

    /// The value of `key`, or `None` if it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        crate::blocking::block_on(self.get_async(key))
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

    /// Waits for writes in flight, makes every acknowledged write durable, stops the background
    /// task, and releases the database. Later calls on any handle fail with [`Error::Closed`].
    /// Dropping every handle without closing keeps only what was already synced.
    pub fn close(&self) -> Result<()> {
        crate::blocking::block_on(self.close_async())
    }

    /// See [`Db::close`].
    pub async fn close_async(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        // Every close, not just the first, goes through the pipeline: a second or concurrent
        // close then returns only once the log is sealed, and a close whose future was dropped
        // midway is finished by the next one. `Closed` from the pipeline means an earlier seal
        // succeeded, so everything acknowledged is durable.
        let sealed = match commit::commit(&self.inner, WriteBatch::new(), true, true).await {
            Err(Error::Closed) => Ok(0),
            other => other,
        };
        // Every group was synced by the seal or failed, so the sync task has nothing left to do.
        self.inner.sync_bell.stop();
        let task = self.inner.sync_task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.join().await;
        }
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
        create_wal(self.rt.as_ref(), &self.dir, number, self.options.wal_preallocate_bytes).await
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        // The sync task holds only a weak reference; this tells it to look and end.
        self.sync_bell.stop();
    }
}

/// Creates WAL `number` in `dir` and makes its name durable.
pub(crate) async fn create_wal(
    rt: &dyn crate::runtime::Runtime,
    dir: &Path,
    number: u64,
    preallocate_bytes: u64,
) -> Result<WalWriter> {
    let path = dir.join(wal::file_name(number));
    let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    rt.fs().sync_dir(dir).await.map_err(|e| Error::io("syncing directory", dir, e))?;
    Ok(WalWriter::new(file, path, number, 0, preallocate_bytes))
}

/// Applies replayed operations to a memtable.
pub(crate) fn apply_ops(memtable: &Memtable, first_seq: u64, ops: Vec<BatchOp>) {
    for (op, seq) in ops.into_iter().zip(first_seq..) {
        apply_op(memtable, seq, op);
    }
}

/// Applies one operation with sequence number `seq` to a memtable.
pub(crate) fn apply_op(memtable: &Memtable, seq: u64, op: BatchOp) {
    match op {
        BatchOp::Put(key, value) => memtable.insert(key, seq, Some(value)),
        BatchOp::Delete(key) => memtable.insert(key, seq, None),
    }
}

/// Handles cross threads and tasks.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<Db>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemRuntime;
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;

    fn open(rt: &Arc<MemRuntime>, options: Options) -> Db {
        Db::open("/db", options, Arc::clone(rt) as RuntimeRef).expect("open")
    }

    fn key(writer: usize, i: usize) -> Vec<u8> {
        format!("w{writer:02}-{i:05}").into_bytes()
    }

    /// Waits (a bounded time) until `n` spawned tasks have ended.
    fn await_tasks_finished(finished: &AtomicUsize, n: usize) {
        for _ in 0..5000 {
            if finished.load(Ordering::SeqCst) >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the sync task did not end");
    }

    #[test]
    fn concurrent_synced_writers_survive_rotation_close_and_reopen() {
        let rt = Arc::new(MemRuntime::default());
        // Small memtables and preallocation: many rotations, each cutting a log back.
        let options = Options::default().memtable_bytes_max(4096).wal_preallocate_bytes(1000);
        let db = open(&rt, options.clone());
        let (writers, per_writer) = (8, 150);
        std::thread::scope(|s| {
            for w in 0..writers {
                let db = db.clone();
                s.spawn(move || {
                    for i in 0..per_writer {
                        db.put(&key(w, i), &key(i, w), WriteOptions::synced()).expect("put");
                    }
                });
            }
        });
        assert_eq!(db.latest_sequence(), (writers * per_writer) as u64);
        assert!(db.metrics().memtable_rotations > 0);
        db.close().expect("close");
        await_tasks_finished(&rt.tasks_finished, 1);

        let db = open(&rt, options);
        assert_eq!(db.latest_sequence(), (writers * per_writer) as u64);
        for w in 0..writers {
            for i in 0..per_writer {
                assert_eq!(db.get(&key(w, i)).unwrap().as_deref(), Some(&key(i, w)[..]));
            }
        }
        db.close().expect("close");
    }

    #[test]
    fn dropping_every_handle_ends_the_sync_task_and_reopen_cuts_preallocated_zeros() {
        let rt = Arc::new(MemRuntime::default());
        let db = open(&rt, Options::default().wal_preallocate_bytes(1 << 16));
        db.put(b"k", b"v", WriteOptions::synced()).unwrap();
        let handle = db.clone();
        drop(db);
        drop(handle);
        await_tasks_finished(&rt.tasks_finished, 1);
        let log = rt.file(Path::new("/db/000001.log"));
        assert!(log.len() > 1 << 16, "the log ends in preallocated zeros");

        let db = open(&rt, Options::default());
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(log.len() < 100, "the zeros were cut off before a newer log was created");
        db.close().unwrap();
    }

    #[test]
    fn a_failed_fsync_poisons_and_is_never_retried() {
        let rt = Arc::new(MemRuntime::default());
        let db = open(&rt, Options::default());
        db.put(b"a", b"1", WriteOptions::synced()).unwrap();
        rt.file(Path::new("/db/000001.log")).fail_next_sync();
        let syncs = db.metrics().wal_syncs;

        assert!(db.put(b"b", b"2", WriteOptions::synced()).is_err());
        assert!(matches!(db.put(b"c", b"3", WriteOptions::default()), Err(Error::Poisoned(_))));
        assert!(matches!(db.sync_wal(), Err(Error::Poisoned(_))));
        assert_eq!(db.metrics().wal_syncs, syncs + 1);
        assert_eq!(db.get(b"b").unwrap(), None, "a write that was never acknowledged is invisible");
        assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(db.close().is_err());
        await_tasks_finished(&rt.tasks_finished, 1);
    }

    #[test]
    fn a_writer_that_stops_waiting_loses_nothing() {
        let rt = Arc::new(MemRuntime::default());
        let db = open(&rt, Options::default());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for i in 0..200usize {
            let k = key(0, i);
            let mut put = Box::pin(db.put_async(&k, b"v", WriteOptions::synced()));
            // Usually pending on the sync task's fsync; dropped there, the write still stands.
            let _ = put.as_mut().poll(&mut cx);
        }
        db.put(b"after", b"x", WriteOptions::synced()).expect("the pipeline still works");
        assert_eq!(db.latest_sequence(), 201);
        assert!(db.get(&key(0, 199)).unwrap().is_some());
        db.close().expect("close");
    }
}
