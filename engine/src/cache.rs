//! The block cache: a sharded LRU of verified data block contents, keyed by (table file number,
//! block offset), bounded in bytes.
//!
//! Each shard is an [`Lru`] (a slab of nodes linked into a recency list, plus a `BTreeMap`
//! from key to slot), so a lookup or insert costs O(log n) and dropping all blocks of one table
//! is a range scan. Shards have their own mutex, held only for the map work, never
//! across an `.await`.
//!
//! Under a memory budget (see `memory.rs`) the capacity moves: the cache holds at most what the
//! budget leaves after the memtables, open tables and iterators, each shard an equal part of
//! that, and [`BlockCache::fit`] evicts down to it whenever another component grows.
//!
//! Invariant: each shard's usage (the sum of the lengths of the blocks it holds) never exceeds
//! its capacity (under a budget: its part of the budget's allowance when the operation ran)
//! after an operation returns, and the least recently used block is evicted first. The cache
//! only ever holds blocks whose checksum was verified, so a hit needs no second check. Usage
//! counts block bytes only, not the bookkeeping around them.

use crate::lru::Lru;
use crate::memory::{GivesWay, MemoryBudget};
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Most shards a cache is split into: enough that readers on a few cores rarely contend.
const SHARDS_MAX: usize = 16;
/// A cache is split into no shard smaller than this, so a small cache is not fragmented into
/// shards that each hold too few blocks for LRU to mean anything.
const SHARD_BYTES_MIN: usize = 256 << 10;

type Key = (u64, u64);

/// A sharded LRU cache of verified block contents.
pub(crate) struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    capacity_bytes: usize,
    /// The sum of the shards' usage, so checking whether the cache fits its budget takes no
    /// lock.
    usage: AtomicU64,
    /// The budget whose allowance bounds the cache, if any.
    budget: Option<Arc<MemoryBudget>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("shards", &self.shards.len())
            .field("capacity_bytes", &self.capacity_bytes)
            .field("usage_bytes", &self.usage_bytes())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

impl BlockCache {
    /// A cache of `capacity_bytes`; 0 caches nothing.
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        let shards = (capacity_bytes / SHARD_BYTES_MIN).clamp(1, SHARDS_MAX);
        Self::with_shards(capacity_bytes, shards)
    }

    /// A cache split into `shards` shards (at least one), the capacity divided evenly.
    pub(crate) fn with_shards(capacity_bytes: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let shard_capacity =
            |i: usize| capacity_bytes / shards + usize::from(i < capacity_bytes % shards);
        BlockCache {
            shards: (0..shards).map(|i| Mutex::new(Shard::new(shard_capacity(i)))).collect(),
            capacity_bytes,
            usage: AtomicU64::new(0),
            budget: None,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A cache bounded by what `budget` leaves (at most all of it), which it gives way to.
    pub(crate) fn within(budget: &Arc<MemoryBudget>) -> Arc<Self> {
        let capacity = usize::try_from(budget.limit().unwrap_or(0)).unwrap_or(usize::MAX);
        let mut cache = BlockCache::new(capacity);
        cache.budget = Some(Arc::clone(budget));
        let cache = Arc::new(cache);
        let weak: std::sync::Weak<dyn GivesWay> = Arc::downgrade(&cache) as _;
        budget.attach_cache(weak);
        cache
    }

    /// What the budget allows the cache now, if under a budget.
    fn allowance(&self) -> Option<u64> {
        self.budget.as_ref()?.cache_allowance()
    }

    /// Each shard's part of `allowance`.
    fn shard_part(&self, allowance: u64) -> usize {
        usize::try_from(allowance / self.shards.len() as u64).unwrap_or(usize::MAX)
    }

    /// Evicts the least recently used blocks of each shard past its part of the budget's
    /// allowance: called when another component grew. One atomic load when the cache fits.
    pub(crate) fn fit(&self) {
        let Some(allowance) = self.allowance() else { return };
        if self.usage.load(Ordering::Relaxed) <= allowance {
            return;
        }
        let part = self.shard_part(allowance);
        for shard in &self.shards {
            let freed = shard.lock().unwrap_or_else(PoisonError::into_inner).shrink_to(part);
            self.usage.fetch_sub(freed as u64, Ordering::Relaxed);
        }
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        // A fixed mix of both halves of the key (not std's hasher, whose seed is random), so
        // neighbouring blocks of one table spread over the shards.
        let mixed =
            (key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.1).wrapping_mul(0xff51_afd7_ed55_8ccd);
        let index = ((mixed >> 32) % self.shards.len() as u64) as usize;
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The block at `offset` of table `file_number`, marking it most recently used. Counts a
    /// hit or a miss.
    pub(crate) fn get(&self, file_number: u64, offset: u64) -> Option<Bytes> {
        let found = self.shard((file_number, offset)).get((file_number, offset));
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a verified block, evicting least recently used blocks to make room; returns
    /// whether it was cached. A block larger than its shard (or its part of the budget's
    /// allowance) is not.
    pub(crate) fn insert(&self, file_number: u64, offset: u64, block: Bytes) -> bool {
        let part = self.allowance().map(|a| self.shard_part(a));
        let mut shard = self.shard((file_number, offset));
        let capacity = part.map_or(shard.capacity, |p| p.min(shard.capacity));
        let before = shard.usage;
        let cached = shard.insert((file_number, offset), block, capacity);
        let after = shard.usage;
        drop(shard);
        if after >= before {
            self.usage.fetch_add((after - before) as u64, Ordering::Relaxed);
        } else {
            self.usage.fetch_sub((before - after) as u64, Ordering::Relaxed);
        }
        cached
    }

    /// Drops every block of a deleted table, so its memory goes to live tables.
    pub(crate) fn evict_file(&self, file_number: u64) {
        for shard in &self.shards {
            let freed =
                shard.lock().unwrap_or_else(PoisonError::into_inner).evict_file(file_number);
            self.usage.fetch_sub(freed as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub(crate) fn usage_bytes(&self) -> usize {
        self.usage.load(Ordering::Relaxed) as usize
    }

    #[cfg(test)]
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }
}

impl GivesWay for BlockCache {
    fn fit(&self) {
        BlockCache::fit(self);
    }
}

/// One LRU shard, bounded by the bytes of its blocks.
#[derive(Debug)]
struct Shard {
    capacity: usize,
    usage: usize,
    blocks: Lru<Key, Bytes>,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Shard { capacity, usage: 0, blocks: Lru::default() }
    }

    fn get(&mut self, key: Key) -> Option<Bytes> {
        self.blocks.get(key).cloned()
    }

    /// Inserts `block`, evicting down to `capacity` (at most the shard's own); returns whether
    /// it was cached.
    fn insert(&mut self, key: Key, block: Bytes, capacity: usize) -> bool {
        self.remove(key);
        if block.len() > capacity {
            self.shrink_to(capacity);
            return false;
        }
        self.shrink_to(capacity - block.len());
        self.usage += block.len();
        self.blocks.insert(key, block);
        debug_assert!(self.usage <= capacity);
        true
    }

    /// Evicts the least recently used blocks until at most `bytes` are held; returns the
    /// bytes freed.
    fn shrink_to(&mut self, bytes: usize) -> usize {
        let before = self.usage;
        while self.usage > bytes {
            let Some((_, oldest)) = self.blocks.pop_oldest() else { break };
            self.usage -= oldest.len();
        }
        before - self.usage
    }

    fn remove(&mut self, key: Key) {
        if let Some(block) = self.blocks.remove(key) {
            self.usage -= block.len();
        }
    }

    /// Drops every block of table `file_number`; returns the bytes freed.
    fn evict_file(&mut self, file_number: u64) -> usize {
        let before = self.usage;
        for key in self.blocks.keys_in((file_number, 0)..=(file_number, u64::MAX)) {
            self.remove(key);
        }
        before - self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn evicts_the_least_recently_used_block_first() {
        let cache = BlockCache::with_shards(300, 1);
        cache.insert(1, 0, block(100));
        cache.insert(1, 100, block(100));
        cache.insert(2, 0, block(100));
        assert!(cache.get(1, 0).is_some()); // now (1, 100) is the oldest
        cache.insert(3, 0, block(100));
        assert!(cache.get(1, 100).is_none());
        assert!(cache.get(1, 0).is_some());
        assert!(cache.get(2, 0).is_some());
        assert!(cache.get(3, 0).is_some());
        assert_eq!(cache.usage_bytes(), 300);
        // One big block pushes out the two oldest: (1, 0) and (2, 0).
        cache.insert(4, 0, block(150));
        assert_eq!((cache.get(1, 0), cache.get(2, 0)), (None, None));
        assert!(cache.get(3, 0).is_some() && cache.get(4, 0).is_some());
        assert_eq!(cache.usage_bytes(), 250);
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = BlockCache::new(1 << 20);
        assert_eq!(cache.get(1, 0), None);
        cache.insert(1, 0, block(10));
        assert_eq!(cache.get(1, 0), Some(block(10)));
        assert_eq!(cache.get(1, 0), Some(block(10)));
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
    }

    #[test]
    fn capacity_in_bytes_is_respected_across_shards() {
        let cache = BlockCache::with_shards(10_000, 4);
        for offset in 0..1000u64 {
            cache.insert(offset % 7, offset * 4096, block(64 + offset as usize % 300));
            assert!(cache.usage_bytes() <= cache.capacity_bytes());
        }
        assert!(cache.usage_bytes() > 5_000, "the cache fills up: {}", cache.usage_bytes());
        // A block larger than a shard is not cached; replacing a block does not double-count.
        cache.insert(9, 0, block(2_600));
        assert_eq!(cache.get(9, 0), None);
        let before = cache.usage_bytes();
        let (file, offset) = (0..1000u64).map(|o| (o % 7, o * 4096)).next_back().unwrap();
        let old = cache.get(file, offset).map_or(0, |b| b.len());
        cache.insert(file, offset, block(old));
        assert_eq!(cache.usage_bytes(), before);
    }

    #[test]
    fn under_a_budget_the_cache_holds_what_the_others_leave() {
        use crate::memory::Component;
        let budget = MemoryBudget::new(Some(4000));
        let cache = BlockCache::within(&budget);
        for offset in 0..100u64 {
            assert!(cache.insert(1, offset * 100, block(100)));
        }
        assert_eq!(cache.usage_bytes(), 4000);
        // Memtables growing push blocks out at once, the least recently used first.
        budget.add_memtables(2500);
        assert_eq!(cache.usage_bytes(), 1500);
        assert!(cache.get(1, 9900).is_some() && cache.get(1, 8400).is_none());
        // With nothing left, nothing is cached.
        let tables = budget.charge(Component::Tables, 1500);
        assert_eq!(cache.usage_bytes(), 0);
        assert!(!cache.insert(2, 0, block(1)));
        // Room handed back is taken again.
        drop(tables);
        budget.remove_memtables(2500);
        assert!(cache.insert(2, 0, block(3000)));
        assert_eq!(cache.usage_bytes(), 3000);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = BlockCache::new(0);
        cache.insert(1, 0, block(1));
        assert_eq!(cache.get(1, 0), None);
        assert_eq!(cache.usage_bytes(), 0);
    }

    #[test]
    fn evict_file_drops_every_block_of_one_table() {
        let cache = BlockCache::with_shards(1 << 20, 4);
        for file in 1..=3u64 {
            for offset in 0..50u64 {
                cache.insert(file, offset * 100, block(10));
            }
        }
        cache.evict_file(2);
        assert_eq!(cache.usage_bytes(), 1000);
        assert!((0..50u64).all(|o| cache.get(2, o * 100).is_none()));
        assert!((0..50u64).all(|o| cache.get(1, o * 100).is_some()));
        assert!((0..50u64).all(|o| cache.get(3, o * 100).is_some()));
        // Freed slots are reused, and the recency list still works after removals.
        for offset in 0..50u64 {
            cache.insert(4, offset * 100, block(10));
        }
        assert_eq!(cache.usage_bytes(), 1500);
    }

    #[test]
    fn lru_matches_a_simple_model() {
        // A Vec ordered oldest-first is an obviously correct LRU to compare against.
        let cache = BlockCache::with_shards(1000, 1);
        let mut model: Vec<(Key, usize)> = Vec::new();
        let mut x = 12345u64;
        for _ in 0..5000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = ((x >> 60) % 3, (x >> 40) % 16);
            let len = ((x >> 20) % 200) as usize + 1;
            let found = model.iter().position(|(k, _)| *k == key);
            if x.is_multiple_of(3) {
                let got = cache.get(key.0, key.1).map(|b| b.len());
                assert_eq!(got, found.map(|i| model[i].1));
                if let Some(i) = found {
                    let e = model.remove(i);
                    model.push(e);
                }
            } else {
                cache.insert(key.0, key.1, block(len));
                if let Some(i) = found {
                    model.remove(i);
                }
                while model.iter().map(|e| e.1).sum::<usize>() + len > 1000 {
                    model.remove(0);
                }
                model.push((key, len));
            }
            assert_eq!(cache.usage_bytes(), model.iter().map(|e| e.1).sum::<usize>());
        }
    }
}
