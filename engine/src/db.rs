//! `Db`: open, write, read and close a database.
//!
//! Opening (`recovery`) recovers the table files from the MANIFEST, replays the newer WALs and
//! flushes them to tables, then starts a fresh WAL and memtable for new writes, the commit
//! pipeline's sync task and the background worker (both stopped by `close`, or when the last
//! handle is dropped). Writes go through the commit pipeline (`commit`); a full memtable is
//! retired and flushed in the background (`flush`). Reads consult the memtables newest first,
//! then the tables of the current version, at one sequence number. Both a blocking API and an
//! async one are offered: the blocking methods drive the async ones on the caller's thread.
//!
//! Invariants: `visible_seq` only grows, and every operation with a sequence number at or below
//! it is in a memtable or in a table of the current version. The memtables and the version are
//! swapped under one lock (a flush installs its table and drops its memtable in one step), so a
//! read always takes a matching pair: every write is in exactly one of them.

use crate::batch::WriteBatch;
use crate::cache::BlockCache;
use crate::commit::{self, Barrier, LeaderState, Pipeline, PublishQueue};
use crate::error::{Error, Result};
use crate::iterator::{Child, DbIterator, MemCursor};
use crate::job::{FlushJob, JobEnv, ReadState};
use crate::memtable::{Memtable, Slot};
use crate::metrics::{Counters, Metrics};
use crate::options::{Options, WriteOptions};
use crate::runtime::{FileLock, JoinHandle, Phase, PhaseGuard, RuntimeRef};
use crate::signal::{Doorbell, Notify, Signal};
use crate::sstable::ReadStats;
use crate::table_cache::TableCache;
use crate::version::Version;
use crate::version_set::VersionSet;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

/// An open database. Cloning gives another handle to the same database.
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<DbInner>,
}

/// What a read consults, changed only as a whole under one lock: the memtables (the active one
/// takes writes; the immutable ones, newest last, wait for flush) and the version of tables.
#[derive(Debug)]
struct Memtables {
    active: Arc<Memtable>,
    /// Each with the last sequence number assigned to a write in it.
    immutable: Vec<(Arc<Memtable>, u64)>,
    version: Arc<Version>,
}

#[derive(Debug)]
pub(crate) struct DbInner {
    pub(crate) rt: RuntimeRef,
    pub(crate) options: Options,
    pub(crate) counters: Arc<Counters>,
    /// The current version, file numbers and the MANIFEST.
    pub(crate) versions: VersionSet,
    pub(crate) pipeline: Pipeline,
    pub(crate) publish_queue: PublishQueue,
    /// Wakes the commit pipeline's sync task; stopping it ends the task.
    pub(crate) sync_bell: Arc<Doorbell>,
    sync_task: Mutex<Option<JoinHandle>>,
    /// Wakes the background worker; stopping it ends the worker.
    pub(crate) work_bell: Arc<Doorbell>,
    background_task: Mutex<Option<JoinHandle>>,
    /// Told when a flush frees a memtable, and when the database is poisoned.
    pub(crate) changed: Notify,
    pub(crate) dir: PathBuf,
    memtables: RwLock<Memtables>,
    /// Publication rings the background worker once the visible sequence number reaches this:
    /// a retired memtable can be flushed only once every write in it is published.
    flush_wait_seq: AtomicU64,
    pub(crate) table_cache: TableCache,
    pub(crate) block_cache: Option<Arc<BlockCache>>,
    read_stats: Arc<ReadStats>,
    /// Sequence numbers pinned by live snapshots, with how many snapshots pin each.
    snapshots: Mutex<BTreeMap<u64, usize>>,
    /// `compact_range` calls waiting for the background worker.
    pub(crate) range_requests: Mutex<Vec<crate::background::RangeRequest>>,
    visible_seq: AtomicU64,
    poisoned: OnceLock<Arc<str>>,
    closed: AtomicBool,
    /// Commit leaders waiting for the background worker to make room (see `commit::stall_until`).
    pub(crate) writers_stalled: AtomicU64,
    lock: Mutex<Option<Box<dyn FileLock>>>,
}

impl Db {
    /// Opens (or creates) the database in `dir`, blocking the calling thread.
    pub fn open(dir: impl AsRef<Path>, options: Options, rt: RuntimeRef) -> Result<Db> {
        crate::blocking::block_on(Self::open_async(dir, options, rt))
    }

    /// Opens (or creates) the database in `dir`.
    pub async fn open_async(dir: impl AsRef<Path>, options: Options, rt: RuntimeRef) -> Result<Db> {
        let recovered = crate::recovery::open(dir.as_ref(), options, rt).await?;
        Ok(Self::from_recovered(recovered))
    }

    fn from_recovered(r: crate::recovery::Recovered) -> Db {
        let active = Arc::new(Memtable::new(r.wal.number()));
        let counters = Arc::new(r.counters);
        let manifest_bytes_max = r.options.manifest_bytes_max;
        let versions = VersionSet::new(
            Arc::clone(&r.rt),
            r.dir.clone(),
            manifest_bytes_max,
            Arc::clone(&counters),
            r.versions,
        );
        let version = versions.current();
        let state = LeaderState::new(r.wal, r.last_seq);
        let read_stats = Arc::new(ReadStats::default());
        let block_cache = (r.options.block_cache_bytes > 0)
            .then(|| Arc::new(BlockCache::new(r.options.block_cache_bytes)));
        let table_cache = TableCache::new(
            Arc::clone(&r.rt),
            r.dir.clone(),
            r.options.open_tables_max,
            block_cache.clone(),
            Arc::clone(&read_stats),
        );
        let inner = DbInner {
            rt: r.rt,
            options: r.options,
            counters,
            versions,
            pipeline: Pipeline::new(state),
            publish_queue: PublishQueue::default(),
            sync_bell: Arc::default(),
            sync_task: Mutex::new(None),
            work_bell: Arc::default(),
            background_task: Mutex::new(None),
            changed: Notify::default(),
            dir: r.dir,
            memtables: RwLock::new(Memtables { active, immutable: Vec::new(), version }),
            flush_wait_seq: AtomicU64::new(u64::MAX),
            table_cache,
            block_cache,
            read_stats,
            snapshots: Mutex::default(),
            range_requests: Mutex::default(),
            visible_seq: AtomicU64::new(r.last_seq),
            poisoned: OnceLock::new(),
            closed: AtomicBool::new(false),
            writers_stalled: AtomicU64::new(0),
            lock: Mutex::new(Some(r.lock)),
        };
        let inner = Arc::new(inner);
        let task = commit::sync_task::start(&(Arc::clone(&inner) as Arc<dyn commit::Host>));
        *inner.sync_task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        let task =
            crate::background::start(&(Arc::clone(&inner) as Arc<dyn crate::background::Host>));
        *inner.background_task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Db { inner }
    }

    /// The database as the commit pipeline sees it.
    fn host(&self) -> Arc<dyn commit::Host> {
        Arc::clone(&self.inner) as Arc<dyn commit::Host>
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
        commit::commit(&self.host(), batch, opts.sync, Barrier::None).await
    }

    /// Writes everything in the memtables to level-0 tables and waits until it is there: the
    /// active memtable is retired (if it holds anything) and every memtable retired before
    /// this call is flushed. The WALs they replace are then deleted.
    pub fn flush(&self) -> Result<()> {
        crate::blocking::block_on(self.flush_async())
    }

    /// See [`Db::flush`].
    pub async fn flush_async(&self) -> Result<()> {
        self.inner.check_writable()?;
        commit::commit(&self.host(), WriteBatch::new(), false, Barrier::Rotate).await?;
        let active_wal = self.inner.active_memtable().wal_number();
        self.inner.work_bell.ring();
        loop {
            // Listening before checking: a flush that ends in between still wakes this call.
            let changed = self.inner.changed.listen();
            self.inner.check_writable()?;
            if !self.inner.holds_memtable_before(active_wal) {
                return Ok(());
            }
            changed.await;
        }
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

    /// Compacts every table holding keys in `[start, end]` (both inclusive) down the levels,
    /// dropping overwritten versions and tombstones no snapshot needs. Waits for the work, done
    /// by the background worker. Writes still in memtables are not included.
    pub fn compact_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        crate::blocking::block_on(self.compact_range_async(start, end))
    }

    /// See [`Db::compact_range`].
    pub async fn compact_range_async(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.inner.check_writable()?;
        let done = Signal::new();
        let request = crate::background::RangeRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            level: 0,
            done: Arc::clone(&done),
        };
        {
            // Checked under the lock `close` drains the requests under: a request is either
            // drained (and failed) by `close` or refused here, never left waiting.
            let mut requests =
                self.inner.range_requests.lock().unwrap_or_else(PoisonError::into_inner);
            self.inner.check_open()?;
            requests.push(request);
        }
        self.inner.work_bell.ring();
        done.wait().await
    }

    /// The sequence number of the newest write visible to reads. Never decreases.
    pub fn latest_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// A snapshot of the engine's counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics()
    }

    /// Waits for writes in flight, makes every acknowledged write durable, stops the background
    /// tasks, and releases the database. A flush or compaction in progress finishes; no other
    /// starts (the next open takes up what is left), and waiting `flush` and `compact_range`
    /// calls fail with [`Error::Closed`], as do later calls on any handle. Returns the
    /// [`Error::Poisoned`] error if the database was poisoned. Dropping every handle without
    /// closing keeps only what was already synced.
    pub fn close(&self) -> Result<()> {
        crate::blocking::block_on(self.close_async())
    }

    /// See [`Db::close`].
    pub async fn close_async(&self) -> Result<()> {
        let _phase = PhaseGuard::enter(self.inner.rt.as_ref(), Phase::Close);
        self.inner.closed.store(true, Ordering::Release);
        // Every close, not just the first, goes through the pipeline: a second or concurrent
        // close then returns only once the log is sealed, and a close whose future was dropped
        // midway is finished by the next one. `Closed` from the pipeline means an earlier seal
        // succeeded, so everything acknowledged is durable.
        let sealed =
            match commit::commit(&self.host(), WriteBatch::new(), true, Barrier::Seal).await {
                Err(Error::Closed) => Ok(0),
                other => other,
            };
        // Every group was synced by the seal or failed, so the sync task has nothing left to do.
        self.inner.sync_bell.stop();
        let task = self.inner.sync_task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.join().await;
        }
        // The job in progress completes and no other starts (`background_work_wanted`);
        // memtables not yet flushed stay in their sealed WALs, which the next open replays.
        self.inner.work_bell.stop();
        let task = self.inner.background_task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.join().await;
        }
        // A `flush` or `compact_range` waiting for the worker learns it is gone.
        self.inner.changed.notify_all();
        let requests = std::mem::take(
            &mut *self.inner.range_requests.lock().unwrap_or_else(PoisonError::into_inner),
        );
        for request in requests {
            let _ = request.done.fill(Err(Error::Closed));
        }
        self.inner.lock.lock().unwrap_or_else(PoisonError::into_inner).take();
        sealed.map(drop)
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
        if let Some(count) = pinned.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                pinned.remove(&self.seq);
            }
        }
    }
}

/// The newest version of `key` at `seq` across `tables` (newest first).
fn find(tables: &[Arc<Memtable>], key: &[u8], seq: u64) -> Option<Slot> {
    tables.iter().find_map(|t| t.get(key, seq))
}

impl DbInner {
    /// What background jobs work with.
    pub(crate) fn job_env(&self) -> JobEnv<'_> {
        JobEnv {
            rt: self.rt.as_ref(),
            dir: &self.dir,
            options: &self.options,
            counters: &self.counters,
            versions: &self.versions,
            table_cache: &self.table_cache,
            reads: self,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Whether the background worker should start another job. Once `close` has begun it
    /// starts none, so that `close` waits for the job in progress at most, not for the whole
    /// backlog: memtables not yet flushed stay in their sealed WALs, which the next open
    /// replays, and the tree is compacted after it. The exception is a writer stalled for room
    /// (a flush or a compaction): the seal may be queued behind it, and would wait forever.
    pub(crate) fn background_work_wanted(&self) -> bool {
        !self.closed.load(Ordering::Acquire) || self.writers_stalled.load(Ordering::SeqCst) > 0
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
        // Writers stalled for a flush that will now never come.
        self.changed.notify_all();
        Error::Poisoned(Arc::clone(cause))
    }

    /// The value of `key` at sequence number `seq` (a snapshot's) or, if `None`, the latest:
    /// memtables newest first, then tables.
    async fn get_at(&self, key: &[u8], seq: Option<u64>) -> Result<Option<Bytes>> {
        let (memtables, version, seq) = self.read_view(seq);
        if let Some(slot) = find(&memtables, key, seq) {
            return Ok(slot);
        }
        for file in version.files_for_key(key) {
            if file.min_seq > seq {
                continue; // every entry in it is newer than the read
            }
            let table = self.table_cache.get(file.number, file.file_bytes).await?;
            if let Some((_, slot)) = table.get(key, seq).await? {
                return Ok(slot);
            }
        }
        Ok(None)
    }

    /// Every live key in `[start, end)` at sequence number `seq` (as in `get_at`), with its
    /// value.
    async fn scan_at(
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
    async fn iter_at(
        &self,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        seq: Option<u64>,
    ) -> Result<DbIterator> {
        let (memtables, version, seq) = self.read_view(seq);
        let mut children: Vec<Child> =
            memtables.into_iter().map(|m| Child::Mem(MemCursor::new(m))).collect();
        for (_, file) in version.files() {
            let below = upper.is_some_and(|upper| file.smallest_key.as_ref() >= upper);
            let above = lower.is_some_and(|lower| file.largest_key.as_ref() < lower);
            if below || above || file.min_seq > seq {
                continue;
            }
            let table = self.table_cache.get(file.number, file.file_bytes).await?;
            children.push(Child::Table(table.iter()));
        }
        // The iterator holds the tables open; the version's files stay on disk while it lives.
        let pin = version;
        Ok(DbIterator::new(
            children,
            seq,
            lower.map(<[u8]>::to_vec),
            upper.map(<[u8]>::to_vec),
            pin,
        ))
    }

    /// What a read consults: the memtables and the version, taken together, then (unless a
    /// snapshot gives it) the sequence number. The sequence number last, because a compaction
    /// may drop versions older than the newest one published when it started, and a latest
    /// read taken after the version is installed sees that newest one.
    fn read_view(&self, seq: Option<u64>) -> (Vec<Arc<Memtable>>, Arc<Version>, u64) {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        let mut memtables = Vec::with_capacity(m.immutable.len() + 1);
        memtables.push(Arc::clone(&m.active));
        memtables.extend(m.immutable.iter().rev().map(|(table, _)| Arc::clone(table)));
        let version = Arc::clone(&m.version);
        drop(m);
        let seq = seq.unwrap_or_else(|| self.visible_seq.load(Ordering::SeqCst));
        (memtables, version, seq)
    }

    /// Whether an immutable memtable of a WAL numbered below `wal` is still held.
    fn holds_memtable_before(&self, wal: u64) -> bool {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        m.immutable.iter().any(|(mem, _)| mem.wal_number() < wal)
    }

    /// How many memtables are held, the active one included.
    pub(crate) fn memtable_count(&self) -> usize {
        self.memtables.read().unwrap_or_else(PoisonError::into_inner).immutable.len() + 1
    }

    pub(crate) fn active_memtable(&self) -> Arc<Memtable> {
        Arc::clone(&self.memtables.read().unwrap_or_else(PoisonError::into_inner).active)
    }

    /// Retires the active memtable, whose last write has sequence number `last_seq`, starts
    /// one for WAL `wal_number`, and tells the background worker.
    pub(crate) fn install_memtable(&self, wal_number: u64, last_seq: u64) {
        let mut m = self.memtables.write().unwrap_or_else(PoisonError::into_inner);
        let fresh = Arc::new(Memtable::new(wal_number));
        let old = std::mem::replace(&mut m.active, fresh);
        m.immutable.push((old, last_seq));
        drop(m);
        self.work_bell.ring();
    }

    pub(crate) fn publish(&self, seq: u64) {
        debug_assert!(seq >= self.visible_seq.load(Ordering::Relaxed));
        self.visible_seq.store(seq, Ordering::SeqCst);
        if seq >= self.flush_wait_seq.load(Ordering::SeqCst) {
            self.work_bell.ring();
        }
    }

    /// The engine's counters with the read path's and the caches'.
    fn metrics(&self) -> Metrics {
        let mut m = self.counters.snapshot();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        m.data_block_reads = get(&self.read_stats.data_block_reads);
        m.bloom_checks = get(&self.read_stats.bloom_checks);
        m.bloom_negatives = get(&self.read_stats.bloom_negatives);
        m.table_bytes_read = get(&self.read_stats.bytes_read);
        if let Some(cache) = &self.block_cache {
            m.block_cache_hits = cache.hits();
            m.block_cache_misses = cache.misses();
        }
        let version = self.versions.current();
        for (level, files) in version.levels.iter().enumerate() {
            m.level_files[level] = files.len() as u64;
            m.level_bytes[level] = files.iter().map(|f| f.file_bytes).sum();
        }
        m
    }
}

impl commit::Host for DbInner {
    fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
    fn publish_queue(&self) -> &PublishQueue {
        &self.publish_queue
    }
    fn sync_bell(&self) -> &Arc<Doorbell> {
        &self.sync_bell
    }
    fn rt(&self) -> &dyn crate::runtime::Runtime {
        self.rt.as_ref()
    }
    fn options(&self) -> &Options {
        &self.options
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
    fn versions(&self) -> &VersionSet {
        &self.versions
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn check_not_poisoned(&self) -> Result<()> {
        DbInner::check_not_poisoned(self)
    }
    fn poison(&self, cause: &str) -> Error {
        DbInner::poison(self, cause)
    }
    fn publish(&self, seq: u64) {
        DbInner::publish(self, seq)
    }
    fn active_memtable(&self) -> Arc<Memtable> {
        DbInner::active_memtable(self)
    }
    fn memtable_count(&self) -> usize {
        DbInner::memtable_count(self)
    }
    fn install_memtable(&self, wal_number: u64, last_seq: u64) {
        DbInner::install_memtable(self, wal_number, last_seq)
    }
    fn changed(&self) -> &Notify {
        &self.changed
    }
    fn writers_stalled(&self) -> &AtomicU64 {
        &self.writers_stalled
    }
    fn work_bell(&self) -> &Doorbell {
        &self.work_bell
    }
}

impl crate::background::Host for DbInner {
    fn job_env(&self) -> JobEnv<'_> {
        DbInner::job_env(self)
    }
    fn check_not_poisoned(&self) -> Result<()> {
        DbInner::check_not_poisoned(self)
    }
    fn poison(&self, cause: &str) -> Error {
        DbInner::poison(self, cause)
    }
    fn background_work_wanted(&self) -> bool {
        DbInner::background_work_wanted(self)
    }
    fn range_requests(&self) -> &Mutex<Vec<crate::background::RangeRequest>> {
        &self.range_requests
    }
    fn work_bell(&self) -> &Arc<Doorbell> {
        &self.work_bell
    }
}

impl ReadState for DbInner {
    /// The oldest immutable memtable, if every write in it is published; otherwise arranges for
    /// publication to ring the background worker once they are.
    fn flush_candidate(&self) -> Option<FlushJob> {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        let (mem, last_seq) = m.immutable.first()?;
        let next_log =
            m.immutable.get(1).map_or(m.active.wal_number(), |(next, _)| next.wal_number());
        let job = FlushJob { mem: Arc::clone(mem), last_seq: *last_seq, next_log };
        drop(m);
        self.flush_wait_seq.store(job.last_seq, Ordering::SeqCst);
        // Checked after arming the ring, so a publication in between is not missed.
        if self.visible_seq.load(Ordering::SeqCst) < job.last_seq {
            return None;
        }
        self.flush_wait_seq.store(u64::MAX, Ordering::SeqCst);
        Some(job)
    }

    /// Also wakes writers stalled for room.
    fn install_version(&self, version: &Arc<Version>, flushed: Option<&Arc<Memtable>>) {
        {
            let mut m = self.memtables.write().unwrap_or_else(PoisonError::into_inner);
            m.version = Arc::clone(version);
            // A flushed memtable leaves in the same step its table arrives.
            if let Some(mem) = flushed {
                m.immutable.retain(|(held, _)| !Arc::ptr_eq(held, mem));
            }
        }
        self.changed.notify_all();
    }

    /// The sequence numbers live snapshots pin, ascending.
    fn pinned_snapshots(&self) -> Vec<u64> {
        self.snapshots.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        // The background tasks hold only weak references; this tells them to look and end.
        self.sync_bell.stop();
        self.work_bell.stop();
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
        await_tasks_finished(&rt.tasks_finished, 2);

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
    fn dropping_every_handle_ends_the_background_tasks_and_reopen_flushes_the_log() {
        let rt = Arc::new(MemRuntime::default());
        let db = open(&rt, Options::default().wal_preallocate_bytes(1 << 16));
        db.put(b"k", b"v", WriteOptions::synced()).unwrap();
        let handle = db.clone();
        drop(db);
        drop(handle);
        await_tasks_finished(&rt.tasks_finished, 2);
        let log = rt.file(Path::new("/db/000001.log"));
        assert!(log.len() > 1 << 16, "the log ends in preallocated zeros");

        let db = open(&rt, Options::default());
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(db.metrics().flush_bytes > 0, "the replayed log was flushed to a table");
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
        await_tasks_finished(&rt.tasks_finished, 2);
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
