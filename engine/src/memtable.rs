//! The memtable: recent writes in a lock-free ordered map, readable while being written.
//!
//! Entries are ordered by user key ascending, then sequence number descending, so the newest
//! version of a key visible at a read sequence number is the first entry at or after
//! `(key, read_seq)`. Invariant: every entry's sequence number is at most the writer's last
//! assigned one; readers filter by their own read sequence number, so entries of a group that is
//! not yet published are invisible even though they are already in the map.

use crate::batch::{for_each_op_borrowed, BatchOp};
use crate::memory::MemoryBudget;
use bytes::{Bytes, BytesMut};
use crossbeam_skiplist::SkipMap;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

/// The largest sequence number: tables keep sequence numbers in 56 bits.
pub(crate) const SEQ_MAX: u64 = (1 << 56) - 1;

/// Bytes charged per entry on top of its key and value (which the arena holds), for its
/// skiplist node as the allocator sees it: the entry (one handle on key and value together),
/// the node's reference count and height, its tower of links (two on average:
/// crossbeam-skiplist draws a height of `h` with probability 2^-h), and the allocator's header.
/// 88 bytes on 64-bit targets, about what glibc hands out for the nodes of the heights drawn.
/// Charging the real cost keeps a memtable's memory within `memtable_bytes_max`.
const ENTRY_OVERHEAD_BYTES: usize = std::mem::size_of::<Entry>()
    + std::mem::size_of::<usize>()
    + 2 * std::mem::size_of::<usize>()
    + std::mem::size_of::<usize>();

/// One version as the skiplist holds it: the key and the value side by side in one handle on
/// the arena, so a node carries one `Bytes` (32 bytes) where a key and a value apart took two
/// and an `Option` (an entry is about a tenth smaller, and a memtable of a given size holds
/// that many more). Ordered as [`InternalKey`].
#[derive(Debug)]
struct Entry {
    prefix: u64,
    /// The user key, then the value (empty for a tombstone).
    kv: Bytes,
    seq: u64,
    key_len: u32,
    tombstone: bool,
}

impl Entry {
    fn new(kv: Bytes, key_len: usize, seq: u64, tombstone: bool) -> Self {
        // Keys are at most KEY_BYTES_MAX, far below u32::MAX.
        let key_len = key_len as u32;
        Entry { prefix: prefix_of(&kv[..key_len as usize]), kv, seq, key_len, tombstone }
    }

    /// The entry as the rest of the engine sees it: its key and its value, sharing the arena.
    fn split(&self) -> (InternalKey, Slot) {
        let key_len = self.key_len as usize;
        let user_key = self.kv.slice(..key_len);
        let key = InternalKey { prefix: self.prefix, user_key, seq: self.seq };
        (key, self.slot())
    }

    fn slot(&self) -> Slot {
        (!self.tombstone).then(|| self.kv.slice(self.key_len as usize..))
    }
}

/// A key in the memtable: user key plus the sequence number of the write, ordered by user key
/// and then newest first.
///
/// It also holds the user key's first 8 bytes as a big-endian integer (zero-padded), compared
/// first: a skiplist search compares the probe with a node's key at every step, and most steps
/// are then decided by the node alone, without following the key's pointer to its bytes (a
/// second cache miss) or calling `memcmp`. Padding with zeros keeps the order: two keys whose
/// padded prefixes differ differ there in a real byte, or one is a prefix of the other with a
/// nonzero byte where the shorter one ends, which orders them the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InternalKey {
    prefix: u64,
    pub user_key: Bytes,
    pub seq: u64,
}

impl InternalKey {
    pub(crate) fn new(user_key: Bytes, seq: u64) -> Self {
        InternalKey { prefix: prefix_of(&user_key), user_key, seq }
    }
}

fn prefix_of(key: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = key.len().min(8);
    first[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(first)
}

/// What the memtable's order compares: implemented by stored keys and by a borrowed probe, so
/// a point read searches without copying its key into a `Bytes`.
pub(crate) trait KeyView {
    fn prefix(&self) -> u64;
    fn user_key(&self) -> &[u8];
    fn seq(&self) -> u64;
}

impl KeyView for InternalKey {
    fn prefix(&self) -> u64 {
        self.prefix
    }
    fn user_key(&self) -> &[u8] {
        &self.user_key
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// A read's search key, borrowing the caller's bytes.
struct Probe<'a> {
    prefix: u64,
    user_key: &'a [u8],
    seq: u64,
}

impl KeyView for Probe<'_> {
    fn prefix(&self) -> u64 {
        self.prefix
    }
    fn user_key(&self) -> &[u8] {
        self.user_key
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

fn compare(a: &(impl KeyView + ?Sized), b: &(impl KeyView + ?Sized)) -> Ordering {
    a.prefix()
        .cmp(&b.prefix())
        .then_with(|| a.user_key().cmp(b.user_key()))
        .then_with(|| b.seq().cmp(&a.seq()))
}

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl KeyView for Entry {
    fn prefix(&self) -> u64 {
        self.prefix
    }
    fn user_key(&self) -> &[u8] {
        &self.kv[..self.key_len as usize]
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for Entry {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for dyn KeyView + '_ {}

/// A value or a tombstone.
pub(crate) type Slot = Option<Bytes>;

/// One memtable, tied to the WAL that holds the same writes.
#[derive(Debug)]
pub(crate) struct Memtable {
    map: SkipMap<Entry, ()>,
    bytes: AtomicUsize,
    wal_number: u64,
    /// Where committed keys and values are copied (see [`Arena`]).
    arena: Mutex<Arena>,
    /// The memory budget its bytes are counted in, from the first entry until it is dropped.
    budget: Option<Arc<MemoryBudget>>,
}

impl Drop for Memtable {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.remove_memtables(*self.bytes.get_mut() as u64);
        }
    }
}

/// Bytes of each block the arena hands keys and values out of. Below glibc's default mmap
/// threshold (128 KiB), so blocks come from the heap and are reused after a flush.
const ARENA_BLOCK_BYTES: usize = 64 << 10;

/// Batches whose keys and values take more than this get an allocation of their own: a block
/// is abandoned when the next batch does not fit in what is left of it, so this bounds the
/// waste to a sixteenth of the block.
const ARENA_SHARE_MAX: usize = ARENA_BLOCK_BYTES / 16;

/// The memtable's keys and values, copied into large shared blocks as a group is applied.
///
/// Without it, each entry would keep its batch's encoded buffer alive (and a shared header
/// for it): two allocations per put that live as long as the memtable, all freed at once when
/// it is flushed, from the flush thread, into the writers' heap. With it the batch is freed
/// as soon as it is applied (its memory reused by the next one, still in cache), and a 64 MiB
/// memtable's keys and values are about a thousand blocks. Entries share their block through
/// `Bytes` (one reference count per block), so readers and flushes hold values as before; a
/// value a caller keeps keeps its block (64 KiB) allocated, as a value read from a table keeps
/// its data block.
#[derive(Debug, Default)]
struct Arena {
    block: BytesMut,
}

impl Arena {
    /// Room for `bytes` of keys and values, empty with exactly that capacity: split off the
    /// current block (a new block if it does not fit), or an allocation of its own for more
    /// than `ARENA_SHARE_MAX`. Taken under the arena's lock; filled outside it.
    fn reserve(&mut self, bytes: usize) -> BytesMut {
        if bytes > ARENA_SHARE_MAX {
            return BytesMut::with_capacity(bytes);
        }
        if self.block.capacity() < bytes {
            self.block = BytesMut::with_capacity(ARENA_BLOCK_BYTES);
        }
        // The block is always empty (pieces leave at once), so this splits its capacity: the
        // piece and the rest share the block's one allocation.
        let rest = self.block.split_off(bytes);
        std::mem::replace(&mut self.block, rest)
    }
}

/// Copies `key` and then `value` into `room`, which has the capacity for them (so nothing
/// reallocates), and returns the copy, sharing `room`'s allocation.
fn copy_into(room: &mut BytesMut, key: &[u8], value: &[u8]) -> Bytes {
    debug_assert!(room.capacity() - room.len() >= key.len() + value.len());
    room.extend_from_slice(key);
    room.extend_from_slice(value);
    room.split_to(key.len() + value.len()).freeze()
}

impl Memtable {
    pub(crate) fn new(wal_number: u64) -> Self {
        Self::with_budget(wal_number, None)
    }

    /// A memtable whose bytes count in `budget` (see `memory.rs`).
    pub(crate) fn within(wal_number: u64, budget: &Arc<MemoryBudget>) -> Self {
        Self::with_budget(wal_number, Some(Arc::clone(budget)))
    }

    fn with_budget(wal_number: u64, budget: Option<Arc<MemoryBudget>>) -> Self {
        let (map, bytes, arena) = (SkipMap::new(), AtomicUsize::new(0), Mutex::default());
        Memtable { map, bytes, wal_number, arena, budget }
    }

    /// Applies the `count` operations encoded in `rep` (a committed batch), numbered from
    /// `first_seq`, copying their keys and values into the memtable's arena. Returns the key
    /// and value bytes applied, or `None` (and applies nothing) if `rep` is malformed.
    pub(crate) fn apply_encoded(&self, first_seq: u64, rep: &[u8], count: u32) -> Option<usize> {
        let mut user_bytes = 0;
        let well_formed = for_each_op_borrowed(rep, count, |key, value| {
            user_bytes += key.len() + value.map_or(0, <[u8]>::len);
        });
        if !well_formed {
            return None;
        }
        // The lock covers only the reservation: leaders applying groups to the same memtable
        // at once insert side by side.
        let mut room =
            self.arena.lock().unwrap_or_else(PoisonError::into_inner).reserve(user_bytes);
        let mut seq = first_seq;
        let mut charged = 0;
        for_each_op_borrowed(rep, count, |key, value| {
            let kv = copy_into(&mut room, key, value.unwrap_or_default());
            charged += self.insert_uncharged(Entry::new(kv, key.len(), seq, value.is_none()));
            seq += 1;
        });
        // Charged once per batch: the counters are shared by concurrent leaders.
        self.charge(charged);
        Some(user_bytes)
    }

    /// The WAL whose writes this memtable holds; it may be deleted once the memtable is flushed.
    pub(crate) fn wal_number(&self) -> u64 {
        self.wal_number
    }

    /// Applies one operation of a batch, with sequence number `seq`.
    pub(crate) fn apply(&self, seq: u64, op: BatchOp) {
        match op {
            BatchOp::Put(key, value) => self.insert(&key, seq, Some(&value)),
            BatchOp::Delete(key) => self.insert(&key, seq, None),
        }
    }

    /// Applies a batch's operations, numbered from `first_seq`.
    pub(crate) fn apply_all(&self, first_seq: u64, ops: Vec<BatchOp>) {
        for (op, seq) in ops.into_iter().zip(first_seq..) {
            self.apply(seq, op);
        }
    }

    /// Approximate memory held, in bytes.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    /// Inserts one version (`value` `None` for a tombstone), copying it into the arena.
    /// Sequence numbers are unique, so nothing is overwritten.
    pub(crate) fn insert(&self, key: &[u8], seq: u64, value: Option<&[u8]>) {
        let value_bytes = value.unwrap_or_default();
        let bytes = key.len() + value_bytes.len();
        let mut room = self.arena.lock().unwrap_or_else(PoisonError::into_inner).reserve(bytes);
        let kv = copy_into(&mut room, key, value_bytes);
        let charged = self.insert_uncharged(Entry::new(kv, key.len(), seq, value.is_none()));
        self.charge(charged);
    }

    /// Inserts one version and returns what it is to be charged, without charging it.
    fn insert_uncharged(&self, entry: Entry) -> usize {
        let charge = entry.kv.len() + ENTRY_OVERHEAD_BYTES;
        self.map.insert(entry, ());
        charge
    }

    fn charge(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
        if let Some(budget) = &self.budget {
            budget.add_memtables(bytes as u64);
        }
    }

    /// The newest version of `key` with a sequence number at most `read_seq`: `None` if the
    /// memtable has none, `Some(None)` if it is a tombstone.
    pub(crate) fn get(&self, key: &[u8], read_seq: u64) -> Option<Slot> {
        // An empty memtable (the usual one just after a flush) answers without the search,
        // whose epoch pin alone was a seventh of an absent key's get. Sound: the skiplist
        // counts an entry before linking it, and every entry a read may see was inserted
        // before the read's sequence number was published.
        if self.map.is_empty() {
            return None;
        }
        let probe = Probe { prefix: prefix_of(key), user_key: key, seq: read_seq };
        let entry = self.map.lower_bound(Bound::Included(&probe as &dyn KeyView))?;
        (entry.key().user_key() == key).then(|| entry.key().slot())
    }

    /// Whether the memtable holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many entries the memtable holds.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Replaces `out` with the next at most `max` entries in internal order after `after` (from
    /// the first if `None`): what a flush writes, a chunk at a time, so that it holds no copy of
    /// the whole memtable and no iterator across its writes' awaits.
    pub(crate) fn entries_after(
        &self,
        after: Option<&InternalKey>,
        max: usize,
        out: &mut Vec<(InternalKey, Slot)>,
    ) {
        out.clear();
        let start = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k as &dyn KeyView));
        let range = self.map.range::<dyn KeyView, _>((start, Bound::Unbounded));
        out.extend(range.take(max).map(|e| e.key().split()));
    }

    /// The first entry after `bound` (`forward`) or the last one before it, cloned out.
    pub(crate) fn neighbour(
        &self,
        bound: Bound<&InternalKey>,
        forward: bool,
    ) -> Option<(InternalKey, Slot)> {
        let bound = bound.map(|k| k as &dyn KeyView);
        let entry =
            if forward { self.map.lower_bound(bound) } else { self.map.upper_bound(bound) }?;
        Some(entry.key().split())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Keys short and long, with zero bytes where padding would be: what could fool the prefix.
    fn keys() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..12)
    }

    #[test]
    fn encoded_batches_are_copied_into_the_arena_and_read_back() {
        let mem = Memtable::new(1);
        let mut batch = crate::WriteBatch::new();
        let big = vec![9u8; ARENA_BLOCK_BYTES];
        for i in 0..2000u32 {
            // Enough to fill several blocks, with a value too large for one in the middle.
            let value = if i == 1000 { big.clone() } else { i.to_be_bytes().repeat(5) };
            batch.put(&i.to_be_bytes(), &value).unwrap();
        }
        batch.delete(&7u32.to_be_bytes()).unwrap();
        let applied = mem.apply_encoded(1, batch.rep(), batch.count());
        assert_eq!(applied, Some(2000 * 4 + 1999 * 20 + big.len() + 4));
        drop(batch);
        for i in 0..2000u32 {
            let got = mem.get(&i.to_be_bytes(), SEQ_MAX).expect("present");
            let want = if i == 7 {
                None
            } else if i == 1000 {
                Some(big.clone())
            } else {
                Some(i.to_be_bytes().repeat(5))
            };
            assert_eq!(got.as_deref(), want.as_deref(), "key {i}");
        }
        // A damaged encoding is refused.
        let mut bad = crate::WriteBatch::new();
        bad.put(b"k", b"v").unwrap();
        let rep = bad.rep();
        assert_eq!(mem.apply_encoded(5000, &rep[..rep.len() - 1], 1), None);
    }

    proptest! {
        #[test]
        fn the_prefix_keeps_the_order_of_user_keys_then_newest_first(
            a in keys(), b in keys(), sa in 0u64..4, sb in 0u64..4,
        ) {
            let want = a.cmp(&b).then(sb.cmp(&sa));
            let (ka, kb) = (InternalKey::new(Bytes::from(a.clone()), sa), InternalKey::new(Bytes::from(b.clone()), sb));
            prop_assert_eq!(ka.cmp(&kb), want);
            let probe = Probe { prefix: prefix_of(&a), user_key: &a, seq: sa };
            prop_assert_eq!(compare(&probe, &kb), want);
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn reads_see_the_newest_version_at_their_sequence() {
        let m = Memtable::new(1);
        m.insert(b"k", 1, Some(b"v1"));
        m.insert(b"k", 3, Some(b"v3"));
        m.insert(b"k", 5, None);
        m.insert(b"ka", 2, Some(b"other"));
        assert_eq!(m.get(b"k", 0), None);
        assert_eq!(m.get(b"k", 1), Some(Some(b("v1"))));
        assert_eq!(m.get(b"k", 4), Some(Some(b("v3"))));
        assert_eq!(m.get(b"k", 9), Some(None));
        assert_eq!(m.get(b"j", 9), None);
        assert_eq!(m.get(b"ka", 1), None);
        // An empty value is a value, not a tombstone.
        m.insert(b"e", 6, Some(b""));
        m.insert(b"e", 7, None);
        assert_eq!(m.get(b"e", 6), Some(Some(Bytes::new())));
        assert_eq!(m.get(b"e", 7), Some(None));
    }

    #[test]
    fn an_entry_costs_one_handle_on_key_and_value() {
        assert_eq!(ENTRY_OVERHEAD_BYTES, 88);
    }

    #[test]
    fn entries_and_neighbours_follow_internal_order() {
        let m = Memtable::new(1);
        for (k, s) in [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("d", 5), ("c", 6)] {
            m.insert(k.as_bytes(), s, Some(format!("{k}{s}").as_bytes()));
        }
        assert!(m.approximate_bytes() > 0);
        let mut entries = Vec::new();
        m.entries_after(None, usize::MAX, &mut entries);
        assert_eq!(entries.iter().map(|e| e.0.seq).collect::<Vec<_>>(), [2, 3, 1, 6, 4, 5]);
        // A flush's next chunk resumes after the last entry of the one before.
        let after = entries[1].0.clone();
        m.entries_after(Some(&after), 2, &mut entries);
        assert_eq!(entries.iter().map(|e| e.0.seq).collect::<Vec<_>>(), [1, 6]);
        let probe = InternalKey::new(b("b"), 2);
        let after = m.neighbour(Bound::Included(&probe), true).unwrap();
        assert_eq!((after.0.user_key, after.0.seq), (b("b"), 1));
        let before = m.neighbour(Bound::Excluded(&probe), false).unwrap();
        assert_eq!((before.0.user_key, before.0.seq), (b("b"), 3));
        assert_eq!(m.neighbour(Bound::Unbounded, false).unwrap().0.seq, 5);
    }
}
