//! Counters users can read: what the engine did, cumulatively since open, how long it took
//! (latency histograms), how much memory it holds, and alerts when a threshold is passed.
//!
//! Counters are relaxed atomics: each is exact, but a snapshot taken while writes run may mix
//! values from slightly different moments.

pub(crate) mod alerts;
mod latency;
mod prometheus;

pub use alerts::{AlertThresholds, Alerts};
pub use latency::Latency;
pub(crate) use latency::{sampled, Histogram, Sampled};

use crate::runtime::Runtime;
use crate::version::LEVELS;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The latency histograms, one per kind of work timed.
#[derive(Debug)]
pub(crate) struct Latencies {
    pub put: Histogram,
    pub get: Histogram,
    pub commit: Histogram,
    pub wal_sync: Histogram,
    pub manifest_sync: Histogram,
    pub flush: Histogram,
    pub compaction: Histogram,
    pub write_pause: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        // Puts and gets come from every user thread; the rest from one task at a time, or a
        // few background workers.
        Latencies {
            put: Histogram::new(latency::SHARDS_HOT),
            get: Histogram::new(latency::SHARDS_HOT),
            commit: Histogram::new(1),
            wal_sync: Histogram::new(1),
            manifest_sync: Histogram::new(1),
            flush: Histogram::new(1),
            compaction: Histogram::new(1),
            write_pause: Histogram::new(1),
        }
    }
}

/// Times one piece of work on the runtime's clock and records it into a histogram when done.
pub(crate) struct Timer<'a> {
    rt: &'a dyn Runtime,
    into: &'a Histogram,
    since: Duration,
}

impl<'a> Timer<'a> {
    pub(crate) fn start(rt: &'a dyn Runtime, into: &'a Histogram) -> Self {
        Timer { rt, into, since: rt.now() }
    }

    /// Records the time since the start, and returns the clock's reading at the stop.
    pub(crate) fn stop(self) -> Duration {
        let now = self.rt.now();
        self.into.record(now.saturating_sub(self.since));
        now
    }
}

/// Where an fsync is counted and timed.
#[derive(Clone, Copy)]
pub(crate) struct SyncMeter<'a> {
    pub count: &'a AtomicU64,
    pub latency: &'a Histogram,
    pub rt: &'a dyn Runtime,
}

impl<'a> SyncMeter<'a> {
    /// The WAL's fsyncs.
    pub(crate) fn wal(counters: &'a Counters, rt: &'a dyn Runtime) -> Self {
        SyncMeter { count: &counters.wal_syncs, latency: &counters.latency.wal_sync, rt }
    }

    /// The MANIFEST's fsyncs.
    pub(crate) fn manifest(counters: &'a Counters, rt: &'a dyn Runtime) -> Self {
        SyncMeter { count: &counters.manifest_syncs, latency: &counters.latency.manifest_sync, rt }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub commit_groups: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub memtable_rotations: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_bytes: AtomicU64,
    pub manifest_syncs: AtomicU64,
    pub write_stalls: AtomicU64,
    pub write_stall_us: AtomicU64,
    pub wal_rotation_us: AtomicU64,
    pub commit_window_waits: AtomicU64,
    pub commit_window_us: AtomicU64,
    pub write_pause_max_us: AtomicU64,
    pub memtable_wait_max_us: AtomicU64,
    pub level0_stop_max_us: AtomicU64,
    pub wal_rotation_max_us: AtomicU64,
    pub flushes_running: AtomicU64,
    pub compactions_running: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    /// Bytes of blob files written (by flushes; `Options::min_blob_size`).
    pub blob_bytes_written: AtomicU64,
    /// The most flushes, compactions, and background jobs of either kind, that ran at once.
    pub flushes_running_max: AtomicU64,
    pub compactions_running_max: AtomicU64,
    pub jobs_running_max: AtomicU64,
    pub compaction_rate_limited_us: AtomicU64,
    /// Background workers in a cycle of jobs (from waking with work to their last deletion
    /// pass): not a metric, but what `wait_for_compactions` waits on.
    pub workers_active: AtomicU64,
    /// Key and value bytes of the operations committed (what write amplification divides by).
    pub user_bytes: AtomicU64,
    /// Bytes appended to MANIFESTs.
    pub manifest_bytes: AtomicU64,
    /// Table bytes written into each level, by flushes (level 0) and compactions.
    pub level_bytes_written: [AtomicU64; LEVELS],
    pub latency: Latencies,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            batches: get(&self.batches),
            commit_groups: get(&self.commit_groups),
            wal_bytes: get(&self.wal_bytes),
            wal_syncs: get(&self.wal_syncs),
            memtable_rotations: get(&self.memtable_rotations),
            flushes: get(&self.flushes),
            flush_bytes: get(&self.flush_bytes),
            manifest_syncs: get(&self.manifest_syncs),
            write_stalls: get(&self.write_stalls),
            write_stall_us: get(&self.write_stall_us),
            wal_rotation_us: get(&self.wal_rotation_us),
            commit_window_waits: get(&self.commit_window_waits),
            commit_window_us: get(&self.commit_window_us),
            write_pause_max_us: get(&self.write_pause_max_us),
            memtable_wait_max_us: get(&self.memtable_wait_max_us),
            level0_stop_max_us: get(&self.level0_stop_max_us),
            wal_rotation_max_us: get(&self.wal_rotation_max_us),
            flushes_running: get(&self.flushes_running),
            compactions_running: get(&self.compactions_running),
            compactions: get(&self.compactions),
            compaction_bytes_read: get(&self.compaction_bytes_read),
            compaction_bytes_written: get(&self.compaction_bytes_written),
            blob_bytes_written: get(&self.blob_bytes_written),
            blob_files: 0,
            blob_bytes: 0,
            blob_garbage_bytes: 0,
            flushes_running_max: get(&self.flushes_running_max),
            compactions_running_max: get(&self.compactions_running_max),
            background_jobs_running_max: get(&self.jobs_running_max),
            compaction_rate_limited_us: get(&self.compaction_rate_limited_us),
            user_bytes: get(&self.user_bytes),
            manifest_bytes: get(&self.manifest_bytes),
            level_bytes_written: std::array::from_fn(|i| get(&self.level_bytes_written[i])),
            put_latency: self.latency.put.summary(),
            get_latency: self.latency.get.summary(),
            commit_latency: self.latency.commit.summary(),
            wal_sync_latency: self.latency.wal_sync.summary(),
            manifest_sync_latency: self.latency.manifest_sync.summary(),
            flush_latency: self.latency.flush.summary(),
            compaction_latency: self.latency.compaction.summary(),
            write_pause_latency: self.latency.write_pause.summary(),
            memtable_bytes: 0,
            table_memory_bytes: 0,
            iterator_memory_bytes: 0,
            memory_bytes: 0,
            memory_budget: 0,
            range_compactions_queued: 0,
            alerts: Alerts::default(),
            alerts_raised: 0,
            flushes_queued: 0,
            level_files: [0; 7],
            level_bytes: [0; 7],
            block_cache_hits: 0,
            block_cache_misses: 0,
            data_block_reads: 0,
            bloom_checks: 0,
            bloom_negatives: 0,
            table_bytes_read: 0,
            tables_open: 0,
            block_cache_bytes: 0,
        }
    }
}

/// A snapshot of the engine's counters, latencies, memory and alerts. `Db::metrics` takes one;
/// [`Metrics::prometheus`] renders it in Prometheus' text format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Write batches committed.
    pub batches: u64,
    /// Commit groups: each is one WAL append (and at most one fsync) for one or more batches.
    pub commit_groups: u64,
    /// Bytes appended to WALs.
    pub wal_bytes: u64,
    /// WAL fsyncs.
    pub wal_syncs: u64,
    /// Memtables retired because they were full.
    pub memtable_rotations: u64,
    /// Memtables written to level-0 tables, and the bytes of those tables.
    pub flushes: u64,
    pub flush_bytes: u64,
    /// MANIFEST fsyncs.
    pub manifest_syncs: u64,
    /// Times writes stopped to wait for a flush, and the time they waited in all, in µs.
    pub write_stalls: u64,
    pub write_stall_us: u64,
    /// Time writers waited while full WALs were retired, in µs: each rotation's own work
    /// (writing out the old log's buffer, swapping the memtable) and, for writes that needed
    /// the new log on disk before the sync task had finished the old one (a synced write, or
    /// 4 MiB of records waiting), that last fsync; `wal_bytes_per_sync` keeps it short.
    pub wal_rotation_us: u64,
    /// Times the adaptive commit window held an fsync back for more synced writers to join it,
    /// and the time it held them in all, in µs (`Options::adaptive_commit_window`).
    pub commit_window_waits: u64,
    pub commit_window_us: u64,
    /// The longest single time writers were held: a stall, a level-0 slowdown or a WAL
    /// rotation, in µs.
    pub write_pause_max_us: u64,
    /// The longest of each kind of pause, in µs: writers waiting for a flush to free a
    /// memtable (`memtables_max` held), for level 0 to fall below `l0_stop_files`, and for a
    /// full WAL to be retired. (A level-0 slowdown is one short sleep.)
    pub memtable_wait_max_us: u64,
    pub level0_stop_max_us: u64,
    pub wal_rotation_max_us: u64,
    /// Flushes and compactions running now, and the most that ran at once (each pool is
    /// bounded by `max_background_flushes` and `max_background_compactions`).
    pub flushes_running: u64,
    pub compactions_running: u64,
    pub flushes_running_max: u64,
    pub compactions_running_max: u64,
    /// The most flushes and compactions together that ran at once.
    pub background_jobs_running_max: u64,
    /// Retired memtables waiting for a flush to start.
    pub flushes_queued: u64,
    /// Time compactions waited for the `compaction_bytes_per_sec` limit, in µs.
    pub compaction_rate_limited_us: u64,
    /// Compactions done, and the table bytes they read and wrote. Write amplification is
    /// `(flush_bytes + compaction_bytes_written) / bytes the user wrote`.
    pub compactions: u64,
    pub compaction_bytes_read: u64,
    pub compaction_bytes_written: u64,
    /// Bytes of blob files written since open (`Options::min_blob_size`); they count in write
    /// amplification.
    pub blob_bytes_written: u64,
    /// Blob files in the current version, their bytes, and the bytes of their records that no
    /// table needs any more (reclaimed when a file is all garbage).
    pub blob_files: u64,
    pub blob_bytes: u64,
    pub blob_garbage_bytes: u64,
    /// Tables and their bytes per level, L0 first, in the current version.
    pub level_files: [u64; 7],
    pub level_bytes: [u64; 7],
    /// Block cache lookups that found the block, and that did not.
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    /// Bytes of blocks the block cache holds now (compactions read around it).
    pub block_cache_bytes: u64,
    /// Data blocks read from table files.
    pub data_block_reads: u64,
    /// Point lookups that consulted a table's bloom filter, and those it answered "absent".
    pub bloom_checks: u64,
    pub bloom_negatives: u64,
    /// Bytes read from table files.
    pub table_bytes_read: u64,
    /// Tables open now, held by the table cache (at most `open_tables_max`) or by iterators
    /// (one per level below 0 at a time, and each level-0 table).
    pub tables_open: u64,
    /// Key and value bytes of every operation committed since open: write amplification is
    /// `(flush_bytes + compaction_bytes_written) / user_bytes` ([`Metrics::write_amplification`]).
    /// Writes replayed from the WAL at open count in `flush_bytes` when flushed, not here.
    pub user_bytes: u64,
    /// Bytes appended to MANIFESTs.
    pub manifest_bytes: u64,
    /// Table bytes written into each level since open, L0 first: by flushes into level 0, by
    /// compactions into their output level.
    pub level_bytes_written: [u64; 7],
    /// Each `put`, `delete`, `write` and `sync_wal` call, from its start to its return (for a
    /// synced write, its fsync included).
    pub put_latency: Latency,
    /// Point reads (`get`, and `get` on a snapshot), sampled: each thread times one read in
    /// eight of those it makes (in any database), so `count` is about an eighth of the reads.
    pub get_latency: Latency,
    /// Commit groups' leader work, sampled as gets are: waiting out a level-0 slowdown or
    /// stall, rotating a full WAL (its last fsync included), writing the group to the WAL
    /// (and, at close, the seal's fsync) and applying it to the memtable. The fsync a synced
    /// write then waits for is in `wal_sync_latency`.
    pub commit_latency: Latency,
    /// Each WAL fsync, and each MANIFEST fsync.
    pub wal_sync_latency: Latency,
    pub manifest_sync_latency: Latency,
    /// Each flush of a memtable to a level-0 table, and each compaction, start to install.
    pub flush_latency: Latency,
    pub compaction_latency: Latency,
    /// Each time writers were held (a stall, a level-0 slowdown or a WAL rotation):
    /// `write_pause_max_us` is its maximum.
    pub write_pause_latency: Latency,
    /// Memory by component, in bytes: the memtables (active and retired, as charged against
    /// `memtable_bytes_max`), the open tables (their index and filter blocks), the data blocks
    /// iterators hold outside the block cache (compaction inputs), and in all (these three and
    /// `block_cache_bytes`).
    pub memtable_bytes: u64,
    pub table_memory_bytes: u64,
    pub iterator_memory_bytes: u64,
    pub memory_bytes: u64,
    /// `Options::memory_budget`, 0 for none.
    pub memory_budget: u64,
    /// `compact_range` calls waiting for the background.
    pub range_compactions_queued: u64,
    /// The alerts on now ([`AlertThresholds`]), and how many times one was raised since open.
    pub alerts: Alerts,
    pub alerts_raised: u64,
}

impl Metrics {
    /// Table and blob file bytes written (by flushes and compactions) per byte the user wrote;
    /// 0 before the first write.
    pub fn write_amplification(&self) -> f64 {
        let written = self.flush_bytes + self.compaction_bytes_written + self.blob_bytes_written;
        ratio(written, self.user_bytes)
    }

    /// Bytes of blob files per byte of their records that some table still points to: 1.0
    /// when no blob file holds garbage (or there are none), rising as overwritten and deleted
    /// values wait in files not yet all garbage.
    pub fn blob_space_amplification(&self) -> f64 {
        let live = self.blob_bytes.saturating_sub(self.blob_garbage_bytes);
        if live == 0 {
            return 1.0;
        }
        self.blob_bytes as f64 / live as f64
    }

    /// The share of write amplification due to each level: table bytes written into it per
    /// byte the user wrote. The levels add up to [`Metrics::write_amplification`] less the
    /// share of blob files.
    pub fn level_write_amplification(&self) -> [f64; 7] {
        std::array::from_fn(|level| ratio(self.level_bytes_written[level], self.user_bytes))
    }

    /// Background jobs waiting: retired memtables not yet being flushed, and `compact_range`
    /// calls not yet taken up.
    pub fn background_jobs_queued(&self) -> u64 {
        self.flushes_queued + self.range_compactions_queued
    }

    /// Background jobs running now.
    pub fn background_jobs_running(&self) -> u64 {
        self.flushes_running + self.compactions_running
    }

    /// Block-cache lookups that found their block, as a share of all lookups (0 with none).
    pub fn block_cache_hit_rate(&self) -> f64 {
        ratio(self.block_cache_hits, self.block_cache_hits + self.block_cache_misses)
    }

    /// Bloom-filter checks that answered "absent" (each one a table read saved), as a share of
    /// all checks (0 with none).
    pub fn bloom_useful_rate(&self) -> f64 {
        ratio(self.bloom_negatives, self.bloom_checks)
    }

    /// The metrics in Prometheus' text exposition format (version 0.0.4), each name prefixed
    /// `jadedb_`: counters end in `_total`, latencies are summaries in seconds.
    pub fn prometheus(&self) -> String {
        prometheus::render(self)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Counts a background job as running for as long as it lives, however it ends, and keeps
/// the high-water marks of its pool and of both pools together.
pub(crate) struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    /// A flush starts.
    pub(crate) fn flush(counters: &'a Counters) -> Self {
        Self::start(counters, &counters.flushes_running, &counters.flushes_running_max)
    }

    /// A compaction starts.
    pub(crate) fn compaction(counters: &'a Counters) -> Self {
        let (gauge, max) = (&counters.compactions_running, &counters.compactions_running_max);
        Self::start(counters, gauge, max)
    }

    fn start(counters: &'a Counters, gauge: &'a AtomicU64, max: &AtomicU64) -> Self {
        let now = gauge.fetch_add(1, Ordering::Relaxed) + 1;
        max.fetch_max(now, Ordering::Relaxed);
        let jobs = counters.flushes_running.load(Ordering::Relaxed)
            + counters.compactions_running.load(Ordering::Relaxed);
        counters.jobs_running_max.fetch_max(jobs, Ordering::Relaxed);
        Running(gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
