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
}
