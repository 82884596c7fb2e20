//! Blocks: the unit in which a table is read, cached and checksummed.
//!
//! A block's contents are entries, each `shared u32 | unshared u32 | value_len u32 | key suffix
//! | value`, whose key shares `shared` bytes with the previous entry's key, except at restart
//! points where it is stored whole; then the restart offsets (u32 each) and their count (u32).
//! On disk every block is followed by a trailer: its type (1 byte) and the crc32 of contents and
//! type (4 bytes).
//!
//! Invariant: a [`Block`] exists only for contents whose restart array is well formed (the
//! first restart is 0, offsets strictly increase and lie inside the entry area), and a
//! [`BlockIter`] only yields entries that lie wholly inside the entry area and whose key carries
//! a valid trailer. Anything else is [`Malformed`], never a panic; every scan moves forward by
//! at least one entry header per step, so none can loop forever.

use super::key;
use crate::error::Error;
use bytes::Bytes;
use std::cmp::Ordering;
use std::fmt;
use std::path::Path;

/// Size of the trailer after every block: type byte and crc32.
pub(crate) const BLOCK_TRAILER_BYTES: usize = 5;
/// Size of an entry's three length fields.
const ENTRY_HEADER_BYTES: usize = 12;

/// What a block holds; recorded in its trailer so a handle that points at the wrong block is
/// caught even when the checksum matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockType {
    Data = 1,
    Index = 2,
    Filter = 3,
    Properties = 4,
}

impl BlockType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            BlockType::Data => "data block",
            BlockType::Index => "index block",
            BlockType::Filter => "filter block",
            BlockType::Properties => "properties block",
        }
    }
}

/// Why bytes could not be decoded. The table layer turns it into a `Corruption` error naming
/// the file and the block's offset, which decoders of a lone block do not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

impl Malformed {
    /// The corruption error for this problem in the block of type `what` at `offset` of `path`.
    pub(crate) fn at(self, path: &Path, offset: u64, what: &str) -> Error {
        Error::corruption(path, offset, format!("{what}: {}", self.0))
    }
}

/// Appends the trailer for `contents` (already in `out`) of type `block_type`.
pub(crate) fn seal(out: &mut Vec<u8>, contents_start: usize, block_type: BlockType) {
    out.push(block_type as u8);
    let crc = crc32fast::hash(&out[contents_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the trailer of `raw` (contents then trailer) and returns the contents.
pub(crate) fn unseal(raw: Bytes, expected: BlockType) -> Result<Bytes, Malformed> {
    let Some(contents_len) = raw.len().checked_sub(BLOCK_TRAILER_BYTES) else {
        return Err(Malformed("shorter than its trailer"));
    };
    let stored = u32::from_le_bytes(u32_bytes(&raw, contents_len + 1).ok_or(Malformed("short"))?);
    if crc32fast::hash(&raw[..=contents_len]) != stored {
        return Err(Malformed("checksum mismatch"));
    }
    if raw[contents_len] != expected as u8 {
        return Err(Malformed("unexpected block type"));
    }
    Ok(raw.slice(..contents_len))
}

fn u32_bytes(data: &[u8], at: usize) -> Option<[u8; 4]> {
    data.get(at..at.checked_add(4)?)?.try_into().ok()
}

fn u32_at(data: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(u32_bytes(data, at)?) as usize)
}

/// Builds one block's contents.
#[derive(Debug)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    restart_interval: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    pub(crate) fn new(restart_interval: usize) -> Self {
        Self::with_capacity(restart_interval, 0)
    }

    /// A builder whose buffer holds `bytes` before it grows.
    pub(crate) fn with_capacity(restart_interval: usize, bytes: usize) -> Self {
        BlockBuilder {
            buf: Vec::with_capacity(bytes),
            restarts: vec![0],
            since_restart: 0,
            restart_interval: restart_interval.max(1),
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Appends an entry; `key` must sort after the previous one (the writer checks). The caller
    /// keeps the block below `BLOCK_BYTES_MAX`, so offsets fit their 4 bytes.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.since_restart < self.restart_interval {
            self.last_key.iter().zip(key).take_while(|(a, b)| a == b).count()
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        };
        self.buf.extend_from_slice(&(shared as u32).to_le_bytes());
        self.buf.extend_from_slice(&((key.len() - shared) as u32).to_le_bytes());
        self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.since_restart += 1;
        self.entries += 1;
    }

    /// Size of the contents if the block were finished now.
    pub(crate) fn size_estimate(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Appends the finished contents and the trailer to `out` and returns how many bytes that
    /// was; the builder starts a new block, keeping its buffers (one builder serves a whole
    /// table without allocating again once its buffers have grown).
    pub(crate) fn finish_sealed_into(&mut self, block_type: BlockType, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&self.buf);
        for restart in &self.restarts {
            out.extend_from_slice(&restart.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        seal(out, start, block_type);
        self.buf.clear();
        self.restarts.clear();
        self.restarts.push(0);
        self.since_restart = 0;
        self.last_key.clear();
        self.entries = 0;
        out.len() - start
    }

    /// The finished contents followed by the trailer; the builder starts a new block.
    pub(crate) fn finish_sealed(&mut self, block_type: BlockType) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for restart in &self.restarts {
            out.extend_from_slice(&restart.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        seal(&mut out, 0, block_type);
        *self = BlockBuilder::new(self.restart_interval);
        out
    }
}

/// Verified contents of one block, with its restart array checked.
#[derive(Clone)]
pub(crate) struct Block {
    data: Bytes,
    /// Where the entries end and the restart array begins.
    restarts_at: usize,
    restart_count: usize,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("bytes", &self.data.len())
            .field("restarts", &self.restart_count)
            .finish()
    }
}

impl Block {
    /// Checks the restart array of `data` (contents without trailer).
    pub(crate) fn new(data: Bytes) -> Result<Self, Malformed> {
        let count_at =
            data.len().checked_sub(4).ok_or(Malformed("shorter than its restart count"))?;
        let count = u32_at(&data, count_at).ok_or(Malformed("short"))?;
        if count == 0 {
            return Err(Malformed("no restart points"));
        }
        let restarts_at = count
            .checked_mul(4)
            .and_then(|bytes| count_at.checked_sub(bytes))
            .ok_or(Malformed("restart array larger than the block"))?;
        if restarts_at == 0 {
            return Err(Malformed("no entries"));
        }
        let block = Block { data, restarts_at, restart_count: count };
        block.check_restarts()?;
        Ok(block)
    }

    /// The bytes the block holds.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    fn check_restarts(&self) -> Result<(), Malformed> {
        if self.restart(0) != 0 {
            return Err(Malformed("first restart point is not at offset 0"));
        }
        for i in 1..self.restart_count {
            if self.restart(i) <= self.restart(i - 1) || self.restart(i) >= self.restarts_at {
                return Err(Malformed("restart points out of order or past the entries"));
            }
        }
        Ok(())
    }

    /// Offset of restart point `i` (< `restart_count`, checked by `new`).
    fn restart(&self, i: usize) -> usize {
        u32_at(&self.data, self.restarts_at + 4 * i).unwrap_or(0)
    }
}

/// A cursor over the entries of one block, both directions.
#[derive(Debug)]
pub(crate) struct BlockIter {
    block: Block,
    /// Offset of the current entry; `restarts_at` when not valid.
    current: usize,
    /// Offset just past the current entry.
    next_at: usize,
    /// The last restart point at or before `current`.
    restart_index: usize,
    key: Vec<u8>,
    value_at: usize,
    value_len: usize,
    /// Data blocks store tombstones without a value; index entries carry a handle whatever
    /// the kind in their key.
    tombstones_are_empty: bool,
}

impl BlockIter {
    /// A cursor over `block`, which holds entries of type `block_type` (data or index).
    pub(crate) fn new(block: Block, block_type: BlockType) -> Self {
        let end = block.restarts_at;
        BlockIter {
            tombstones_are_empty: block_type == BlockType::Data,
            block,
            current: end,
            next_at: end,
            restart_index: 0,
            key: Vec::new(),
            value_at: 0,
            value_len: 0,
        }
    }

    pub(crate) fn valid(&self) -> bool {
        self.current < self.block.restarts_at
    }

    pub(crate) fn user_key(&self) -> &[u8] {
        key::parts(&self.key).0
    }

    pub(crate) fn seq(&self) -> u64 {
        key::parts(&self.key).1
    }

    pub(crate) fn is_tombstone(&self) -> bool {
        key::parts(&self.key).2 == key::KIND_TOMBSTONE
    }

    /// Whether the value is a pointer into a blob file.
    pub(crate) fn is_blob(&self) -> bool {
        key::parts(&self.key).2 == key::KIND_BLOB
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.block.data[self.value_at..self.value_at + self.value_len]
    }

    /// The current value without copying: a slice of the block.
    pub(crate) fn value_bytes(&self) -> Bytes {
        self.block.data.slice(self.value_at..self.value_at + self.value_len)
    }

    fn invalidate(&mut self) {
        self.current = self.block.restarts_at;
        self.next_at = self.block.restarts_at;
        self.key.clear();
    }

    fn seek_to_restart(&mut self, index: usize) {
        self.key.clear();
        self.restart_index = index;
        self.next_at = self.block.restart(index);
    }

    pub(crate) fn seek_to_first(&mut self) -> Result<(), Malformed> {
        self.seek_to_restart(0);
        self.parse_next()
    }

    pub(crate) fn seek_to_last(&mut self) -> Result<(), Malformed> {
        self.seek_to_restart(self.block.restart_count - 1);
        self.parse_next()?;
        while self.valid() && self.next_at < self.block.restarts_at {
            self.parse_next()?;
        }
        Ok(())
    }

    /// Positions at the first entry at or after `(user_key, seq)` in internal order, or makes
    /// the iterator invalid if there is none.
    pub(crate) fn seek(&mut self, user_key: &[u8], seq: u64) -> Result<(), Malformed> {
        // Binary search for the last restart point whose key is before the target.
        let (mut left, mut right) = (0, self.block.restart_count - 1);
        while left < right {
            let mid = left + (right - left).div_ceil(2);
            let (mid_user, mid_seq) = self.key_at_restart(mid)?;
            if key::compare(mid_user, mid_seq, user_key, seq) == Ordering::Less {
                left = mid;
            } else {
                right = mid - 1;
            }
        }
        self.seek_to_restart(left);
        loop {
            self.parse_next()?;
            if !self.valid() || key::compare_encoded(&self.key, user_key, seq) != Ordering::Less {
                return Ok(());
            }
        }
    }

    pub(crate) fn next(&mut self) -> Result<(), Malformed> {
        if !self.valid() {
            return Ok(());
        }
        self.parse_next()
    }

    /// Steps back one entry: rescans from the restart point before the current entry, because
    /// prefix-compressed keys can only be decoded forwards.
    pub(crate) fn prev(&mut self) -> Result<(), Malformed> {
        if !self.valid() {
            return Ok(());
        }
        let original = self.current;
        let mut index = self.restart_index;
        while self.block.restart(index) >= original {
            if index == 0 {
                self.invalidate();
                return Ok(());
            }
            index -= 1;
        }
        self.seek_to_restart(index);
        loop {
            self.parse_next()?;
            if self.next_at == original {
                return Ok(());
            }
            if !self.valid() || self.next_at > original {
                self.invalidate();
                return Err(Malformed("an entry overlaps the next one"));
            }
        }
    }

    /// The key stored whole at restart point `index`.
    fn key_at_restart(&self, index: usize) -> Result<(&[u8], u64), Malformed> {
        let at = self.block.restart(index);
        let header = self.header_at(at)?;
        if header.shared != 0 {
            return Err(Malformed("a restart point has a shared key prefix"));
        }
        let key = &self.block.data[at + ENTRY_HEADER_BYTES..header.key_end];
        let (user, seq, _) = key::decode(key).ok_or(Malformed("bad internal key"))?;
        Ok((user, seq))
    }

    fn parse_next(&mut self) -> Result<(), Malformed> {
        let result = self.parse_next_entry();
        if result.is_err() {
            self.invalidate();
        }
        result
    }

    fn parse_next_entry(&mut self) -> Result<(), Malformed> {
        self.current = self.next_at;
        if self.current >= self.block.restarts_at {
            self.invalidate();
            return Ok(());
        }
        while self.restart_index + 1 < self.block.restart_count
            && self.block.restart(self.restart_index + 1) <= self.current
        {
            self.restart_index += 1;
        }
        let at = self.current;
        let header = self.header_at(at)?;
        let at_restart = self.block.restart(self.restart_index) == at;
        if header.shared > self.key.len() || (at_restart && header.shared != 0) {
            return Err(Malformed("bad shared key prefix"));
        }
        self.key.truncate(header.shared);
        self.key.extend_from_slice(&self.block.data[at + ENTRY_HEADER_BYTES..header.key_end]);
        let (_, _, kind) = key::decode(&self.key).ok_or(Malformed("bad internal key"))?;
        if self.tombstones_are_empty && kind == key::KIND_TOMBSTONE && header.value_len != 0 {
            return Err(Malformed("a tombstone carries a value"));
        }
        self.value_at = header.key_end;
        self.value_len = header.value_len;
        self.next_at = header.key_end + header.value_len;
        Ok(())
    }

    /// Reads and bounds-checks the entry header at `at`.
    fn header_at(&self, at: usize) -> Result<EntryHeader, Malformed> {
        let end = self.block.restarts_at;
        let field = |i: usize| u32_at(&self.block.data[..end], at + 4 * i);
        let (Some(shared), Some(unshared), Some(value_len)) = (field(0), field(1), field(2)) else {
            return Err(Malformed("entry header runs past the entries"));
        };
        let key_end = (at + ENTRY_HEADER_BYTES).checked_add(unshared);
        match key_end.and_then(|k| k.checked_add(value_len)) {
            Some(entry_end) if entry_end <= end => {
                Ok(EntryHeader { shared, key_end: entry_end - value_len, value_len })
            }
            _ => Err(Malformed("entry runs past the entries")),
        }
    }
}

struct EntryHeader {
    shared: usize,
    /// Offset just past the key suffix (where the value starts).
    key_end: usize,
    value_len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, u64, Option<&str>)], restart_interval: usize) -> Block {
        let mut b = BlockBuilder::new(restart_interval);
        let mut k = Vec::new();
        for &(user, seq, value) in entries {
            k.clear();
            key::encode(&mut k, user.as_bytes(), seq, key::kind_of(value.map(str::as_bytes)));
            b.add(&k, value.unwrap_or("").as_bytes());
        }
        let sealed = Bytes::from(b.finish_sealed(BlockType::Data));
        Block::new(unseal(sealed, BlockType::Data).unwrap()).unwrap()
    }

    fn entries() -> Vec<(&'static str, u64, Option<&'static str>)> {
        vec![
            ("a", 9, Some("1")),
            ("a", 3, None),
            ("ab", 5, Some("22")),
            ("abc", 7, Some("333")),
            ("b", 1, None),
            ("bcd", 4, Some("")),
        ]
    }

    #[test]
    fn iterates_both_ways_at_every_restart_interval() {
        for interval in 1..8 {
            let block = build(&entries(), interval);
            let mut it = BlockIter::new(block, BlockType::Data);
            it.seek_to_first().unwrap();
            let mut forward = Vec::new();
            while it.valid() {
                forward.push((it.user_key().to_vec(), it.seq(), it.is_tombstone()));
                it.next().unwrap();
            }
            assert_eq!(forward.len(), 6);
            assert_eq!(forward[1], (b"a".to_vec(), 3, true));
            it.seek_to_last().unwrap();
            let mut backward = Vec::new();
            while it.valid() {
                backward.push((it.user_key().to_vec(), it.seq(), it.is_tombstone()));
                it.prev().unwrap();
            }
            backward.reverse();
            assert_eq!(forward, backward, "interval {interval}");
        }
    }

    #[test]
    fn seek_lands_on_the_first_entry_at_or_after_the_target() {
        let mut it = BlockIter::new(build(&entries(), 2), BlockType::Data);
        it.seek(b"a", 5).unwrap();
        assert_eq!((it.user_key(), it.seq()), (&b"a"[..], 3));
        it.seek(b"abc", 7).unwrap();
        assert_eq!((it.user_key(), it.seq(), it.value()), (&b"abc"[..], 7, &b"333"[..]));
        it.seek(b"abc", 6).unwrap();
        assert_eq!(it.user_key(), b"b");
        it.seek(b"c", u64::MAX).unwrap();
        assert!(!it.valid());
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut b = BlockBuilder::new(4);
        b.add(&[b'k', 1, 0, 0, 0, 0, 0, 0, 0], b"v");
        let sealed = b.finish_sealed(BlockType::Index);
        assert!(unseal(Bytes::from(sealed.clone()), BlockType::Data).is_err());
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(unseal(Bytes::from(bad), BlockType::Index).is_err(), "bit {bit}");
        }
    }
}
