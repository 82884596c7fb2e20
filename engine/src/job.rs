//! What flush and compaction work with: the VersionSet, the table cache, the options and
//! counters, and the little they need of the database's read state behind a narrow trait, so
//! that neither imports the database.

use crate::error::Result;
use crate::memtable::Memtable;
use crate::metrics::Counters;
use crate::options::Options;
use crate::rate_limit::RateLimiter;
use crate::runtime::Runtime;
use crate::signal::Notify;
use crate::table_cache::TableCache;
use crate::version::Version;
use crate::version_set::VersionSet;
use std::path::Path;
use std::sync::Arc;

/// Everything a background job touches.
pub(crate) struct JobEnv<'a> {
    pub rt: &'a dyn Runtime,
    pub dir: &'a Path,
    pub options: &'a Options,
    pub counters: &'a Counters,
    pub versions: &'a VersionSet,
    pub table_cache: &'a TableCache,
    /// Shared by every compaction: their writes together stay under the limit.
    pub compaction_limiter: &'a RateLimiter,
    pub reads: &'a dyn ReadState,
}

/// What jobs need of the state reads consult: the memtables and the version, swapped together.
pub(crate) trait ReadState: Send + Sync {
    /// The oldest immutable memtable no flush has taken, if every write in it is published
    /// (otherwise the background workers are rung once they are), now taken.
    fn flush_candidate(&self) -> Option<FlushJob>;

    /// Whether `mem` is the oldest immutable memtable: every older one is flushed and gone.
    fn is_oldest(&self, mem: &Arc<Memtable>) -> bool;

    /// Told when a version is installed (a flush's among them), and when the database is
    /// poisoned.
    fn changed(&self) -> &Notify;

    fn check_not_poisoned(&self) -> Result<()>;

    /// Makes `version` what reads consult, dropping the memtable whose flush it records (if
    /// any) in the same step: the `install` of every [`VersionSet::log_and_apply`].
    fn install_version(&self, version: &Arc<Version>, flushed: Option<&Arc<Memtable>>);

    /// The sequence numbers live snapshots pin, ascending.
    fn pinned_snapshots(&self) -> Vec<u64>;

    /// The oldest of them, if any.
    fn oldest_snapshot(&self) -> Option<u64>;

    /// The WAL of the oldest memtable not yet flushed (the active one if none waits): for the
    /// structure checker.
    #[cfg(feature = "invariants")]
    fn oldest_wal(&self) -> u64;
}

/// An immutable memtable ready to flush.
#[derive(Debug)]
pub(crate) struct FlushJob {
    pub mem: Arc<Memtable>,
    /// The last sequence number assigned to a write of `mem`.
    pub last_seq: u64,
    /// The WAL of the next memtable: the oldest log still needed once `mem` is flushed.
    pub next_log: u64,
}
