//! `Db`: open, write, read and close a database.
//!
//! Opening (`recovery`) recovers the table files from the MANIFEST, replays the newer WALs and
//! flushes them to tables, then starts a fresh WAL and memtable for new writes, the commit
//! pipeline's sync task and the background workers (all stopped by `close`, or when the last
//! handle is dropped). Writes go through the commit pipeline (`commit`); a full memtable is
//! retired and flushed in the background (`flush`). Reads consult the memtables newest first,
//! then the tables of the current version, at one sequence number. Both a blocking API and an
//! async one are offered: the blocking methods drive the async ones on the caller's thread.
//!
//! Invariants: `visible_seq` only grows, and every operation with a sequence number at or below
//! it is in a memtable or in a table of the current version. The memtables and the version are
//! swapped under one lock (a flush installs its table and drops its memtable in one step), so a
//! read always takes a matching pair: every write is in exactly one of them. The version is
//! changed only by the VersionSet (`crate::version_set`), which hands each new one to
//! `install_version` under its own lock.
//!
//! Here: the database's state and its write, flush and close API. The read path is in `read`,
//! snapshots in `snapshot`, and the narrow traits through which the commit pipeline, the
//! background worker and its jobs reach the database (never importing it) in `hosts`.

mod hosts;
mod read;
mod snapshot;

pub use snapshot::Snapshot;

use crate::batch::WriteBatch;
use crate::cache::BlockCache;
use crate::commit::{self, Barrier, LeaderState, Pipeline, PublishQueue};
use crate::error::{Error, Result};
use crate::job::JobEnv;
use crate::memory::MemoryBudget;
use crate::memtable::Memtable;
use crate::metrics::alerts::{Reading, Watch};
use crate::metrics::{Counters, Metrics, Timer};
use crate::options::{Options, WriteOptions};
use crate::rate_limit::RateLimiter;
use crate::runtime::{FileLock, JoinHandle, Phase, PhaseGuard, RuntimeRef};
use crate::signal::{Doorbell, Doorbells, Notify, Signal};
use crate::sstable::ReadStats;
use crate::table_cache::TableCache;
use crate::version::Version;
use crate::version_set::VersionSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

/// An open database. Cloning gives another handle to the same database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
    /// `inner` as the commit pipeline sees it, made once: writes then pass a reference.
    host: Arc<dyn commit::Host>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `host` is `inner` again.
        f.debug_struct("Db").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// What a read consults, changed only as a whole under one lock: the memtables (the active one
/// takes writes; the immutable ones, newest last, wait for flush) and the version of tables.
#[derive(Debug)]
struct Memtables {
    active: Arc<Memtable>,
    immutable: Vec<Retired>,
    /// The memtables (newest first) and the version that goes with them: what a read takes
    /// with one reference count (RocksDB's SuperVersion), rebuilt by `refresh` after each
    /// change.
    view: Arc<ReadView>,
}

/// What one read sees: the memtables, newest first, and the tables of the version that goes
/// with them.
#[derive(Debug)]
pub(crate) struct ReadView {
    pub memtables: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

impl Memtables {
    fn new(active: Arc<Memtable>, version: Arc<Version>) -> Self {
        let view = Arc::new(ReadView { memtables: vec![Arc::clone(&active)], version });
        Memtables { active, immutable: Vec::new(), view }
    }

    /// The version reads see.
    fn version(&self) -> &Arc<Version> {
        &self.view.version
    }

    /// Rebuilds the read view after a change, with `version`, returning the old one for the
    /// caller to drop after releasing the lock (it may hold the last reference to a flushed
    /// memtable).
    #[must_use]
    fn refresh(&mut self, version: Arc<Version>) -> Arc<ReadView> {
        let mut memtables = Vec::with_capacity(self.immutable.len() + 1);
        memtables.push(Arc::clone(&self.active));
        memtables.extend(self.immutable.iter().rev().map(|r| Arc::clone(&r.mem)));
        std::mem::replace(&mut self.view, Arc::new(ReadView { memtables, version }))
    }
}

/// A memtable retired from taking writes, waiting for its flush.
#[derive(Debug)]
struct Retired {
    mem: Arc<Memtable>,
    /// The last sequence number assigned to a write in it.
    last_seq: u64,
    /// Whether a flush has taken it.
    flushing: bool,
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
    /// Wake the background workers; stopping them ends the workers.
    pub(crate) work_bells: Doorbells,
    background_tasks: Mutex<Vec<JoinHandle>>,
    /// Shared by every compaction (`compaction_bytes_per_sec`).
    compaction_limiter: RateLimiter,
    /// Told when a flush frees a memtable, and when the database is poisoned.
    pub(crate) changed: Notify,
    /// Told when a background worker's cycle of jobs ends, when the database is poisoned and
    /// when it closes: what `wait_for_compactions` waits on. Apart from `changed`, whose
    /// listeners it would wake for nothing: installs come before a cycle's end.
    jobs_ended: Notify,
    pub(crate) dir: PathBuf,
    memtables: RwLock<Memtables>,
    /// Publication rings the background worker once the visible sequence number reaches this:
    /// a retired memtable can be flushed only once every write in it is published.
    flush_wait_seq: AtomicU64,
    /// Shared with iterators, which open deeper levels' tables as they walk.
    pub(crate) table_cache: Arc<TableCache>,
    pub(crate) block_cache: Option<Arc<BlockCache>>,
    /// What memtables, the block cache, open tables and iterators hold, and its bound.
    budget: Arc<MemoryBudget>,
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
    /// The alerts' state (`Options::alert_thresholds`).
    watch: Watch,
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
        let budget = MemoryBudget::new(r.options.memory_budget);
        let active = Arc::new(Memtable::within(r.wal.number(), &budget));
        let counters = Arc::new(r.counters);
        let compaction_limiter = RateLimiter::new(r.options.compaction_bytes_per_sec);
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
        let block_cache = match budget.limit() {
            Some(_) => Some(BlockCache::within(&budget)),
            None => (r.options.block_cache_bytes > 0)
                .then(|| Arc::new(BlockCache::new(r.options.block_cache_bytes))),
        };
        let table_cache = Arc::new(TableCache::new(
            Arc::clone(&r.rt),
            r.dir.clone(),
            r.options.open_tables_max,
            block_cache.clone(),
            Arc::clone(&read_stats),
            Arc::clone(&budget),
        ));
        let watch = Watch::new(r.options.alert_thresholds);
        let inner = DbInner {
            rt: r.rt,
            options: r.options,
            counters,
            versions,
            pipeline: Pipeline::new(state),
            publish_queue: PublishQueue::default(),
            sync_bell: Arc::default(),
            sync_task: Mutex::new(None),
            work_bells: Doorbells::default(),
            background_tasks: Mutex::new(Vec::new()),
            compaction_limiter,
            changed: Notify::default(),
            jobs_ended: Notify::default(),
            dir: r.dir,
            memtables: RwLock::new(Memtables::new(active, version)),
            flush_wait_seq: AtomicU64::new(u64::MAX),
            table_cache,
            block_cache,
            budget,
            read_stats,
            snapshots: Mutex::default(),
            range_requests: Mutex::default(),
            visible_seq: AtomicU64::new(r.last_seq),
            poisoned: OnceLock::new(),
            closed: AtomicBool::new(false),
            writers_stalled: AtomicU64::new(0),
            watch,
            lock: Mutex::new(Some(r.lock)),
        };
        let inner = Arc::new(inner);
        inner.read_disk_space();
        let host = Arc::clone(&inner) as Arc<dyn commit::Host>;
        let task = commit::sync_task::start(&host);
        *inner.sync_task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        let task =
            crate::background::start(&(Arc::clone(&inner) as Arc<dyn crate::background::Host>));
        *inner.background_tasks.lock().unwrap_or_else(PoisonError::into_inner) = task;
        Db { inner, host }
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
        let timer = Timer::start(self.inner.rt.as_ref(), &self.inner.counters.latency.put);
        let result = commit::commit(&self.host, batch, opts.sync, Barrier::None).await;
        let now = timer.stop();
        self.inner.check_alerts_if_due(now);
        result
    }

    /// Writes everything in the memtables to level-0 tables and waits until it is there: the
    /// active memtable is retired (if it holds anything) and every memtable retired before
    /// this call is flushed, its table attested in the MANIFEST (sealed). The WALs they
    /// replace are then deleted.
    pub fn flush(&self) -> Result<()> {
        crate::blocking::block_on(self.flush_async())
    }

    /// See [`Db::flush`].
    pub async fn flush_async(&self) -> Result<()> {
        self.inner.check_writable()?;
        commit::commit(&self.host, WriteBatch::new(), false, Barrier::Rotate).await?;
        let active_wal = self.inner.active_memtable().wal_number();
        // The newest memtable retired before the active one: its flush's edit, once sealed,
        // attests every older memtable's too (flushes install oldest first). A memtable leaves
        // the list at its install, one fsync before the seal, so the list alone is not enough.
        let Some(newest) = self.inner.newest_memtable_before(active_wal) else {
            return Ok(());
        };
        self.inner.work_bells.ring();
        loop {
            // Listening before checking: a flush that ends in between still wakes this call.
            let changed = self.inner.changed.listen();
            self.inner.check_writable()?;
            if self.inner.versions.sealed_log_number() > newest {
                return Ok(());
            }
            changed.await;
        }
    }

    /// Waits until the background has nothing left to do: no retired memtable waiting for its
    /// flush, no flush or compaction running, no `compact_range` pending, and no level due for
    /// a compaction. For benchmarks and tests that must measure or inspect a settled tree
    /// without polling. Writes that keep coming keep it waiting. Fails if the database is
    /// poisoned or closed meanwhile.
    pub fn wait_for_compactions(&self) -> Result<()> {
        crate::blocking::block_on(self.wait_for_compactions_async())
    }

    /// See [`Db::wait_for_compactions`].
    pub async fn wait_for_compactions_async(&self) -> Result<()> {
        // Once: the workers then find whatever is due, and each ringing wakes them all, which
        // would keep them active for as long as this call kept ringing.
        self.inner.work_bells.ring();
        loop {
            // Listening before checking: a cycle that ends in between still wakes this call.
            let ended = self.inner.jobs_ended.listen();
            self.inner.check_writable()?;
            if self.inner.background_idle() {
                return Ok(());
            }
            ended.await;
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

    /// Compacts every table holding keys in `[start, end]` (both inclusive) down the levels,
    /// dropping overwritten versions and tombstones no snapshot needs, then rewrites the
    /// deepest level's tables in the range that still hold such entries or are larger than
    /// `target_file_bytes`. The memtables are flushed first (as RocksDB and LevelDB do), so
    /// writes made before the call are covered. Waits for the work, done by the background
    /// workers.
    pub fn compact_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        crate::blocking::block_on(self.compact_range_async(start, end))
    }

    /// See [`Db::compact_range`].
    pub async fn compact_range_async(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.flush_async().await?;
        let done = Signal::new();
        let request = crate::background::RangeRequest::new(start, end, Arc::clone(&done));
        {
            // Checked under the lock `close` drains the requests under: a request is either
            // drained (and failed) by `close` or refused here, never left waiting.
            let mut requests =
                self.inner.range_requests.lock().unwrap_or_else(PoisonError::into_inner);
            self.inner.check_open()?;
            requests.push(request);
        }
        self.inner.work_bells.ring();
        done.wait().await
    }

    /// The sequence number of the newest write visible to reads. Never decreases.
    pub fn latest_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// A snapshot of the engine's counters, latencies, memory and alerts. If an alert check is
    /// due (`AlertThresholds::check_interval`), it runs first, and may log.
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
        let sealed = match commit::commit(&self.host, WriteBatch::new(), true, Barrier::Seal).await
        {
            Err(Error::Closed) => Ok(0),
            other => other,
        };
        // Every group was synced by the seal or failed, so the sync task has nothing left to do.
        self.inner.sync_bell.stop();
        let task = self.inner.sync_task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.join().await;
        }
        // The jobs running complete and no other starts (`background_work_wanted`); memtables
        // not yet flushed stay in their sealed WALs, which the next open replays.
        self.inner.work_bells.stop();
        let tasks = std::mem::take(
            &mut *self.inner.background_tasks.lock().unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            task.join().await;
        }
        // A `flush`, `compact_range` or `wait_for_compactions` waiting for the workers learns
        // they are gone.
        self.inner.changed.notify_all();
        self.inner.jobs_ended.notify_all();
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
            compaction_limiter: &self.compaction_limiter,
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
        self.jobs_ended.notify_all();
        Error::Poisoned(Arc::clone(cause))
    }

    /// The sequence number of the oldest snapshot held, if any.
    pub(crate) fn oldest_snapshot(&self) -> Option<u64> {
        self.snapshots.lock().unwrap_or_else(PoisonError::into_inner).keys().next().copied()
    }

    /// Whether no background work is waiting or running (see [`Db::wait_for_compactions`]).
    /// Every job runs inside a worker's active cycle, so no worker active means none running.
    fn background_idle(&self) -> bool {
        let active = self.counters.workers_active.load(Ordering::SeqCst);
        let requests = self.range_requests.lock().unwrap_or_else(PoisonError::into_inner).len();
        let retired = self.memtable_count() - 1;
        let oldest_snapshot = self.oldest_snapshot();
        active == 0
            && requests == 0
            && retired == 0
            && !crate::compaction::due(&self.versions.current(), &self.options, oldest_snapshot)
    }

    /// The WAL number of the newest retired memtable whose WAL is below `wal`, if one is held.
    fn newest_memtable_before(&self, wal: u64) -> Option<u64> {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        m.immutable.iter().map(|r| r.mem.wal_number()).filter(|&n| n < wal).max()
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
        let fresh = Arc::new(Memtable::within(wal_number, &self.budget));
        let old = std::mem::replace(&mut m.active, fresh);
        m.immutable.push(Retired { mem: old, last_seq, flushing: false });
        let version = Arc::clone(m.version());
        let old_view = m.refresh(version);
        drop(m);
        drop(old_view);
        self.work_bells.ring();
    }

    pub(crate) fn publish(&self, seq: u64) {
        debug_assert!(seq >= self.visible_seq.load(Ordering::Relaxed));
        self.visible_seq.store(seq, Ordering::SeqCst);
        if seq >= self.flush_wait_seq.load(Ordering::SeqCst) {
            self.work_bells.ring();
        }
    }

    /// The engine's counters with the read path's and the caches'.
    fn metrics(&self) -> Metrics {
        self.check_alerts_if_due(self.rt.now());
        let mut m = self.counters.snapshot();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        m.data_block_reads = get(&self.read_stats.data_block_reads);
        m.bloom_checks = get(&self.read_stats.bloom_checks);
        m.bloom_negatives = get(&self.read_stats.bloom_negatives);
        m.table_bytes_read = get(&self.read_stats.bytes_read);
        m.tables_open = get(&self.read_stats.tables_open);
        if let Some(cache) = &self.block_cache {
            m.block_cache_hits = cache.hits();
            m.block_cache_misses = cache.misses();
            m.block_cache_bytes = cache.usage_bytes() as u64;
        }
        let (flushes_queued, memtable_bytes) = self.memtables_held();
        m.flushes_queued = flushes_queued;
        m.memtable_bytes = memtable_bytes;
        m.table_memory_bytes = self.budget.tables();
        m.iterator_memory_bytes = self.budget.iterators();
        m.memory_bytes =
            m.memtable_bytes + m.block_cache_bytes + m.table_memory_bytes + m.iterator_memory_bytes;
        m.memory_budget = self.budget.limit().unwrap_or(0);
        m.range_compactions_queued = self.range_compactions_queued();
        (m.alerts, m.alerts_raised) = self.watch.status();
        let version = self.versions.current();
        for (level, files) in version.levels.iter().enumerate() {
            m.level_files[level] = files.len() as u64;
            m.level_bytes[level] = files.iter().map(|f| f.file_bytes).sum();
        }
        m.blob_files = version.blobs.len() as u64;
        m.blob_bytes = version.blobs.values().map(|b| b.file.file_bytes).sum();
        m.blob_garbage_bytes = version.blobs.values().map(|b| b.garbage_bytes).sum();
        m
    }
}

impl DbInner {
    /// Retired memtables not yet taken by a flush, and the bytes charged to every memtable
    /// held (the active one and the retired ones), read under one lock.
    fn memtables_held(&self) -> (u64, u64) {
        let mems = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        let queued = mems.immutable.iter().filter(|r| !r.flushing).count() as u64;
        let retired: usize = mems.immutable.iter().map(|r| r.mem.approximate_bytes()).sum();
        (queued, (mems.active.approximate_bytes() + retired) as u64)
    }

    /// `compact_range` calls waiting for the background.
    fn range_compactions_queued(&self) -> u64 {
        self.range_requests.lock().unwrap_or_else(PoisonError::into_inner).len() as u64
    }

    /// Checks the alert thresholds if a check interval has passed since the last check at
    /// `now` (the runtime's clock): one relaxed load otherwise.
    pub(crate) fn check_alerts_if_due(&self, now: std::time::Duration) {
        if !self.watch.claim(now) {
            return;
        }
        let (flushes_queued, memtable_bytes) = self.memtables_held();
        let block_cache_bytes = self.block_cache.as_ref().map_or(0, |c| c.usage_bytes() as u64);
        let others = self.budget.tables() + self.budget.iterators();
        let running = self.counters.flushes_running.load(Ordering::Relaxed)
            + self.counters.compactions_running.load(Ordering::Relaxed);
        self.watch.check(&Reading {
            puts: &self.counters.latency.put,
            memory_bytes: memtable_bytes + block_cache_bytes + others,
            memory_sized_for: self.options.memory_sized_for(),
            disk: self.watch.disk(),
            background_jobs: flushes_queued + self.range_compactions_queued() + running,
        });
    }

    /// Reads the size and free bytes of the file system holding the database, for the disk
    /// alert: from the background workers after each cycle of jobs (which is when the disk
    /// fills), and at open, never on the write path (a `statvfs` may block on a network file
    /// system).
    pub(crate) fn read_disk_space(&self) {
        let disk = match self.rt.fs().space(&self.dir) {
            Ok(space) => space.map(|s| (s.total_bytes, s.free_bytes)),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "no disk usage for alerts");
                None
            }
        };
        self.watch.set_disk(disk);
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        // The background tasks hold only weak references; this tells them to look and end.
        self.sync_bell.stop();
        self.work_bells.stop();
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
