//! The memory budget (`Options::memory_budget`): one bound over what the engine holds in
//! memory, and the counts behind `Metrics`' memory by component.
//!
//! Four things hold memory: the memtables (each entry charged its key, value and skiplist node),
//! the block cache, the open tables (their index and filter blocks) and the data blocks that
//! iterators hold outside the cache (a compaction's inputs, which never enter it). The budget
//! gives them one bound, as RocksDB does by charging memtables to the block cache:
//! - the memtables get at most half of it: each memtable is cut at `budget / (2 *
//!   memtables_max)` bytes if `memtable_bytes_max` is larger, so the ones held together stay
//!   within half (writers stall for a flush, as always, when all are full);
//! - the open tables get what the memtables and iterators leave: the table cache closes the
//!   least recently used beyond it (a table still being read stays open until its readers are
//!   done);
//! - the block cache gets whatever is left, at every moment: it shrinks (evicting the least
//!   recently used blocks) as soon as any other component grows, and grows back as they
//!   shrink.
//!
//! Invariant: with a budget, the block cache never holds more than the budget less what the
//! other three hold, once the call that changed any of them returns. What the others hold is
//! bounded as above except for blocks that readers keep alive (a value returned by `get`, a
//! block under a user's iterator), which is memory the caller chose to keep.
//!
//! Without a budget everything is still counted, for the metrics, and nothing is bounded but
//! by its own option.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// What a charge is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Component {
    /// An open table's index and filter blocks.
    Tables,
    /// A data block an iterator holds outside the block cache.
    Iterators,
}

/// The component that gives way when the others grow: the block cache. A trait, so that this
/// module need not import the cache, which imports it.
pub(crate) trait GivesWay: Send + Sync + fmt::Debug {
    /// Evicts what no longer fits in what the budget leaves it.
    fn fit(&self);
}

/// The budget and the bytes each component holds.
#[derive(Debug, Default)]
pub(crate) struct MemoryBudget {
    /// The bound; `None` for none.
    limit: Option<u64>,
    memtables: AtomicU64,
    tables: AtomicU64,
    iterators: AtomicU64,
    /// The cache that gives way; weak, as the cache holds the budget.
    cache: OnceLock<Weak<dyn GivesWay>>,
}

impl MemoryBudget {
    pub(crate) fn new(limit: Option<u64>) -> Arc<Self> {
        Arc::new(MemoryBudget { limit, ..MemoryBudget::default() })
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Makes `cache` the component that gives way to the others.
    pub(crate) fn attach_cache(&self, cache: Weak<dyn GivesWay>) {
        let _ = self.cache.set(cache);
    }

    pub(crate) fn memtables(&self) -> u64 {
        self.memtables.load(Ordering::Relaxed)
    }

    pub(crate) fn tables(&self) -> u64 {
        self.tables.load(Ordering::Relaxed)
    }

    pub(crate) fn iterators(&self) -> u64 {
        self.iterators.load(Ordering::Relaxed)
    }

    /// What every component but the block cache holds.
    pub(crate) fn outside_cache(&self) -> u64 {
        self.memtables() + self.tables() + self.iterators()
    }

    /// What the block cache may hold now: the budget less the other components (`None`
    /// without a budget).
    pub(crate) fn cache_allowance(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.outside_cache()))
    }

    /// What open tables may hold now: the budget less the memtables and iterators.
    pub(crate) fn tables_allowance(&self) -> Option<u64> {
        let others = self.memtables() + self.iterators();
        self.limit.map(|limit| limit.saturating_sub(others))
    }

    /// Counts `bytes` more held by memtables (entries applied), shrinking the cache to fit.
    pub(crate) fn add_memtables(&self, bytes: u64) {
        self.memtables.fetch_add(bytes, Ordering::Relaxed);
        self.fit_cache();
    }

    /// Counts `bytes` fewer held by memtables (a memtable dropped after its flush).
    pub(crate) fn remove_memtables(&self, bytes: u64) {
        self.memtables.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Charges `bytes` to `component` until the returned charge is dropped, shrinking the
    /// cache to fit.
    pub(crate) fn charge(self: &Arc<Self>, component: Component, bytes: u64) -> Charge {
        self.counter(component).fetch_add(bytes, Ordering::Relaxed);
        self.fit_cache();
        Charge { budget: Arc::clone(self), component, bytes }
    }

    fn counter(&self, component: Component) -> &AtomicU64 {
        match component {
            Component::Tables => &self.tables,
            Component::Iterators => &self.iterators,
        }
    }

    /// Evicts from the block cache what no longer fits: one atomic load when it fits.
    fn fit_cache(&self) {
        if self.limit.is_none() {
            return;
        }
        if let Some(cache) = self.cache.get().and_then(Weak::upgrade) {
            cache.fit();
        }
    }
}

/// Bytes charged to a component for as long as this lives.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<MemoryBudget>,
    component: Component,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.counter(self.component).fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_gets_what_the_others_leave() {
        let budget = MemoryBudget::new(Some(1000));
        assert_eq!(budget.cache_allowance(), Some(1000));
        budget.add_memtables(300);
        let table = budget.charge(Component::Tables, 200);
        let block = budget.charge(Component::Iterators, 100);
        assert_eq!(budget.cache_allowance(), Some(400));
        assert_eq!(budget.tables_allowance(), Some(600));
        drop(block);
        budget.remove_memtables(300);
        assert_eq!(budget.cache_allowance(), Some(800));
        drop(table);
        assert_eq!((budget.tables(), budget.iterators(), budget.memtables()), (0, 0, 0));
        // Past the budget, nothing is left, never less than nothing.
        budget.add_memtables(5000);
        assert_eq!(budget.cache_allowance(), Some(0));
        assert_eq!(MemoryBudget::new(None).cache_allowance(), None);
    }
}
