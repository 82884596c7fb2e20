//! The narrow faces the database shows the subsystems below it: the commit pipeline's
//! [`commit::Host`], the background workers' [`background::Host`] and the jobs' [`ReadState`].
//! They are what keeps those modules from importing this one.

use super::DbInner;
use crate::background::{self, RangeRequest};
use crate::commit::{self, Pipeline, PublishQueue};
use crate::error::{Error, Result};
use crate::job::{FlushJob, JobEnv, ReadState};
use crate::memtable::Memtable;
use crate::metrics::Counters;
use crate::options::Options;
use crate::signal::{Doorbell, Doorbells, Notify};
use crate::version::Version;
use crate::version_set::VersionSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
    fn runtime(&self) -> &crate::runtime::RuntimeRef {
        &self.rt
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
    fn work_bells(&self) -> &Doorbells {
        &self.work_bells
    }
}

impl background::Host for DbInner {
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
    fn job_ended(&self) {
        self.read_disk_space();
        self.jobs_ended.notify_all();
    }
    fn range_requests(&self) -> &Mutex<Vec<RangeRequest>> {
        &self.range_requests
    }
    fn work_bells(&self) -> &Doorbells {
        &self.work_bells
    }
}

impl ReadState for DbInner {
    /// Otherwise arranges for publication to ring the background workers once they are.
    fn flush_candidate(&self) -> Option<FlushJob> {
        let mut m = self.memtables.write().unwrap_or_else(PoisonError::into_inner);
        let at = m.immutable.iter().position(|r| !r.flushing)?;
        let next_log =
            m.immutable.get(at + 1).map_or(m.active.wal_number(), |r| r.mem.wal_number());
        let r = &m.immutable[at];
        let job = FlushJob { mem: Arc::clone(&r.mem), last_seq: r.last_seq, next_log };
        self.flush_wait_seq.store(job.last_seq, Ordering::SeqCst);
        // Checked after arming the ring, so a publication in between is not missed.
        if self.visible_seq.load(Ordering::SeqCst) < job.last_seq {
            return None;
        }
        self.flush_wait_seq.store(u64::MAX, Ordering::SeqCst);
        m.immutable[at].flushing = true;
        Some(job)
    }

    fn is_oldest(&self, mem: &Arc<Memtable>) -> bool {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        m.immutable.first().is_some_and(|r| Arc::ptr_eq(&r.mem, mem))
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }

    fn check_not_poisoned(&self) -> Result<()> {
        DbInner::check_not_poisoned(self)
    }

    /// Also wakes writers stalled for room.
    fn install_version(&self, version: &Arc<Version>, flushed: Option<&Arc<Memtable>>) {
        let old_view = {
            let mut m = self.memtables.write().unwrap_or_else(PoisonError::into_inner);
            // A flushed memtable leaves in the same step its table arrives.
            if let Some(mem) = flushed {
                m.immutable.retain(|r| !Arc::ptr_eq(&r.mem, mem));
            }
            m.refresh(Arc::clone(version))
        };
        drop(old_view);
        self.changed.notify_all();
    }

    #[cfg(feature = "invariants")]
    fn oldest_wal(&self) -> u64 {
        let m = self.memtables.read().unwrap_or_else(PoisonError::into_inner);
        m.immutable.first().map_or(&m.active, |r| &r.mem).wal_number()
    }

    /// The sequence numbers live snapshots pin, ascending.
    fn pinned_snapshots(&self) -> Vec<u64> {
        self.snapshots.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    fn oldest_snapshot(&self) -> Option<u64> {
        DbInner::oldest_snapshot(self)
    }
}
