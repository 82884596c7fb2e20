//! Counters users can read: what the engine did, cumulatively since open.
//!
//! Counters are relaxed atomics: each is exact, but a snapshot taken while writes run may mix
//! values from slightly different moments.

use std::sync::atomic::{AtomicU64, Ordering};

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
    pub write_pause_max_us: AtomicU64,
    pub flushes_running: AtomicU64,
    pub compactions_running: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    /// The most flushes, compactions, and background jobs of either kind, that ran at once.
    pub flushes_running_max: AtomicU64,
    pub compactions_running_max: AtomicU64,
    pub jobs_running_max: AtomicU64,
    pub compaction_rate_limited_us: AtomicU64,
    /// Background workers in a cycle of jobs (from waking with work to their last deletion
    /// pass): not a metric, but what `wait_for_compactions` waits on.
    pub workers_active: AtomicU64,
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
            write_pause_max_us: get(&self.write_pause_max_us),
            flushes_running: get(&self.flushes_running),
            compactions_running: get(&self.compactions_running),
            compactions: get(&self.compactions),
            compaction_bytes_read: get(&self.compaction_bytes_read),
            compaction_bytes_written: get(&self.compaction_bytes_written),
            flushes_running_max: get(&self.flushes_running_max),
            compactions_running_max: get(&self.compactions_running_max),
            background_jobs_running_max: get(&self.jobs_running_max),
            compaction_rate_limited_us: get(&self.compaction_rate_limited_us),
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

/// A snapshot of the engine's counters.
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
    /// Time writers waited while full WALs were retired (each one's last fsync and the new
    /// log's creation), in µs; `wal_bytes_per_sync` keeps each short.
    pub wal_rotation_us: u64,
    /// The longest single time writers were held: a stall, a level-0 slowdown or a WAL
    /// rotation, in µs.
    pub write_pause_max_us: u64,
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
