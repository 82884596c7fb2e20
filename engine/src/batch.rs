//! `WriteBatch`: a group of puts and deletes applied atomically.
//!
//! The batch keeps its operations already encoded in the WAL payload format (see
//! `docs/format.md`), so committing it copies bytes once into the WAL buffer and the memtable
//! slices keys and values out of one shared allocation. Invariant: `rep` holds exactly `count`
//! well-formed operations, each within the size limits.

use crate::error::{Error, Result};
use bytes::Bytes;
use std::ops::Range;

/// The largest key the engine stores, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// The largest value the engine stores, in bytes.
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The largest encoded batch, in bytes; a WAL record must fit a `u32` length with room to spare.
pub const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

const _: () = assert!(BATCH_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + 9 < BATCH_BYTES_MAX);

/// Operation tags in the encoded batch.
pub(crate) const TAG_DELETE: u8 = 0;
pub(crate) const TAG_PUT: u8 = 1;

/// An atomic group of writes: after a crash, all of it is recovered or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
}

/// One decoded operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Bytes, Bytes),
    /// Remove `key`.
    Delete(Bytes),
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<&mut Self> {
        check_key(key)?;
        if value.len() > VALUE_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds the maximum of {VALUE_BYTES_MAX}",
                value.len()
            )));
        }
        self.reserve(1 + 8 + key.len() + value.len())?;
        self.rep.push(TAG_PUT);
        push_bytes(&mut self.rep, key);
        push_bytes(&mut self.rep, value);
        self.count += 1;
        Ok(self)
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<&mut Self> {
        check_key(key)?;
        self.reserve(1 + 4 + key.len())?;
        self.rep.push(TAG_DELETE);
        push_bytes(&mut self.rep, key);
        self.count += 1;
        Ok(self)
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.rep.len()
    }

    /// Removes every operation, keeping the allocation for reuse.
    pub fn clear(&mut self) {
        self.rep.clear();
        self.count = 0;
    }

    pub(crate) fn rep(&self) -> &[u8] {
        &self.rep
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Checks the size limit and makes room for `extra` bytes at once: a one-operation batch
    /// then costs one allocation rather than one per growth step.
    fn reserve(&mut self, extra: usize) -> Result<()> {
        if self.rep.len() + extra > BATCH_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "batch would exceed the maximum of {BATCH_BYTES_MAX} bytes"
            )));
        }
        self.rep.reserve(extra);
        Ok(())
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "key of {} bytes exceeds the maximum of {KEY_BYTES_MAX}",
            key.len()
        )));
    }
    Ok(())
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by the checks above, so they fit a u32.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Decodes `count` operations from an encoded batch held in `rep`. Returns `None` if the bytes
/// are malformed: callers turn that into a `Corruption` error naming the file and offset.
pub(crate) fn decode_ops(rep: &Bytes, count: u32) -> Option<Vec<BatchOp>> {
    let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
    for_each_op(rep, count, |op| ops.push(op)).then_some(ops)
}

/// Passes each of the `count` operations encoded in `rep` to `f`, without collecting them.
/// Returns whether `rep` was well-formed; if not, `f` has seen the operations before the
/// damage, so callers that cannot trust `rep` use [`decode_ops`] instead.
pub(crate) fn for_each_op(rep: &Bytes, count: u32, mut f: impl FnMut(BatchOp)) -> bool {
    for_each_op_range(rep, count, |key, value| {
        let key = rep.slice(key);
        f(match value {
            Some(value) => BatchOp::Put(key, rep.slice(value)),
            None => BatchOp::Delete(key),
        })
    })
}

/// As [`for_each_op`], lending each key and value (`None` for a delete) instead of sharing
/// them: for a caller that copies them anyway.
pub(crate) fn for_each_op_borrowed(
    rep: &[u8],
    count: u32,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) -> bool {
    for_each_op_range(rep, count, |key, value| f(&rep[key], value.map(|v| &rep[v])))
}

/// Parses `count` operations from `rep`, passing each key's range and its value's (`None`
/// for a delete).
fn for_each_op_range(
    rep: &[u8],
    count: u32,
    mut f: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> bool {
    let mut pos = 0usize;
    for _ in 0..count {
        let Some(&tag) = rep.get(pos) else { return false };
        pos += 1;
        let Some(key) = take_bytes(rep, &mut pos) else { return false };
        match tag {
            TAG_PUT => match take_bytes(rep, &mut pos) {
                Some(value) => f(key, Some(value)),
                None => return false,
            },
            TAG_DELETE => f(key, None),
            _ => return false,
        }
    }
    pos == rep.len()
}

fn take_bytes(rep: &[u8], pos: &mut usize) -> Option<Range<usize>> {
    let len_end = pos.checked_add(4)?;
    let len = u32::from_le_bytes(rep.get(*pos..len_end)?.try_into().ok()?) as usize;
    let end = len_end.checked_add(len)?;
    if end > rep.len() {
        return None;
    }
    *pos = end;
    Some(len_end..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").unwrap().delete(b"b").unwrap().put(b"", b"").unwrap();
        let rep = Bytes::copy_from_slice(b.rep());
        let ops = decode_ops(&rep, b.count()).unwrap();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put(Bytes::from_static(b"a"), Bytes::from_static(b"1")),
                BatchOp::Delete(Bytes::from_static(b"b")),
                BatchOp::Put(Bytes::new(), Bytes::new()),
            ]
        );
    }

    #[test]
    fn truncated_or_extra_bytes_are_rejected() {
        let mut b = WriteBatch::new();
        b.put(b"key", b"value").unwrap();
        let rep = Bytes::copy_from_slice(b.rep());
        for cut in 0..rep.len() {
            assert!(decode_ops(&rep.slice(..cut), 1).is_none(), "cut at {cut}");
        }
        assert!(decode_ops(&rep, 2).is_none());
        let mut longer = b.rep().to_vec();
        longer.push(0);
        assert!(decode_ops(&Bytes::from(longer), 1).is_none());
    }

    #[test]
    fn oversized_key_is_refused() {
        let mut b = WriteBatch::new();
        let err = b.put(&vec![0; KEY_BYTES_MAX + 1], b"").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(b.is_empty());
    }
}
