//! A least-recently-used map: a slab of nodes linked into a recency list by index (no
//! `unsafe`), plus a `BTreeMap` from key to slot. A lookup costs one map search and relinks
//! one node in O(1); the least recently used entry is found in O(1). Shared by the block cache
//! (one per shard) and the table cache.
//!
//! Invariant: `slots` and the recency list hold the same entries; the list runs from the most
//! recently used (`newest`) to the least (`oldest`).

use std::collections::BTreeMap;
use std::ops::RangeBounds;

/// Marks the absence of a link in the recency list.
const NIL: usize = usize::MAX;

/// One node of the slab: an entry and its neighbours in recency order.
#[derive(Debug)]
struct Node<K, V> {
    key: K,
    /// `None` while the slot is free.
    value: Option<V>,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// Entries by key, in order of last use.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    slots: BTreeMap<K, usize>,
    nodes: Vec<Node<K, V>>,
    /// Slots of `nodes` that hold no entry, for reuse.
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru {
            slots: BTreeMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }
}

impl<K: Ord + Copy, V> Lru<K, V> {
    /// How many entries are held.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: K) -> bool {
        self.slots.contains_key(&key)
    }

    /// The value of `key`, which becomes the most recently used.
    pub(crate) fn get(&mut self, key: K) -> Option<&V> {
        let slot = *self.slots.get(&key)?;
        self.unlink(slot);
        self.push_newest(slot);
        self.nodes[slot].value.as_ref()
    }

    /// Adds `key` as the most recently used, replacing (and returning) any value it had.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.remove(key);
        let node = Node { key, value: Some(value), newer: NIL, older: NIL };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.nodes[slot] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.slots.insert(key, slot);
        self.push_newest(slot);
        old
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: K) -> Option<V> {
        let slot = self.slots.remove(&key)?;
        self.unlink(slot);
        self.free.push(slot);
        self.nodes[slot].value.take()
    }

    /// Removes the least recently used entry.
    pub(crate) fn pop_oldest(&mut self) -> Option<(K, V)> {
        if self.oldest == NIL {
            return None;
        }
        let key = self.nodes[self.oldest].key;
        self.remove(key).map(|value| (key, value))
    }

    /// The keys held in `range`, in key order.
    pub(crate) fn keys_in(&self, range: impl RangeBounds<K>) -> Vec<K> {
        self.slots.range(range).map(|(k, _)| *k).collect()
    }

    fn unlink(&mut self, slot: usize) {
        let (newer, older) = (self.nodes[slot].newer, self.nodes[slot].older);
        match newer {
            NIL => self.newest = older,
            n => self.nodes[n].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.nodes[o].newer = newer,
        }
    }

    fn push_newest(&mut self, slot: usize) {
        self.nodes[slot].newer = NIL;
        self.nodes[slot].older = self.newest;
        match self.newest {
            NIL => self.oldest = slot,
            n => self.nodes[n].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut lru = Lru::default();
        for k in 1..=3u64 {
            assert_eq!(lru.insert(k, k * 10), None);
        }
        assert_eq!(lru.get(1), Some(&10)); // 2 is now the oldest
        assert_eq!(lru.pop_oldest(), Some((2, 20)));
        assert_eq!(lru.insert(3, 31), Some(30)); // 1 is now the oldest
        assert_eq!(lru.pop_oldest(), Some((1, 10)));
        assert_eq!(lru.remove(3), Some(31));
        assert_eq!((lru.len(), lru.pop_oldest()), (0, None));
        lru.insert(4, 40);
        assert_eq!((lru.len(), lru.keys_in(..)), (1, vec![4]), "a freed slot is reused");
    }
}
