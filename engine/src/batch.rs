//! `WriteBatch`: a group of puts and deletes applied atomically.
//!
//! The batch keeps its operations already encoded in the WAL payload format (format 2, see
//! `docs/format.md`), so committing it copies bytes once into the WAL buffer and the memtable
//! slices keys and values out of one shared allocation. Invariant: `rep` holds exactly `count`
//! well-formed operations, each within the size limits. Logs of format 1 (fixed four-byte
//! lengths) are still decoded, for databases written before format 2.

use crate::error::{Error, Result};
use crate::varint;
use bytes::Bytes;
use std::ops::Range;

/// The largest key the engine stores, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// The largest value the engine stores, in bytes.
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The largest encoded batch, in bytes; a WAL record must fit a `u32` length with room to spare.
pub const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

const _: () = assert!(BATCH_BYTES_MAX < u32::MAX as usize);
const _: () =
    assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + 1 + 2 * varint::MAX_BYTES < BATCH_BYTES_MAX);

/// Operation tags in the encoded batch.
pub(crate) const TAG_DELETE: u8 = 0;
pub(crate) const TAG_PUT: u8 = 1;

/// How an encoded batch writes the lengths of its keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lengths {
    /// Four bytes, little-endian: WAL format 1.
    Fixed32,
    /// A varint: WAL format 2, and every batch this version builds.
    Varint,
}

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
        let value_bytes = varint::len(value.len() as u64) + value.len();
        self.reserve(1 + varint::len(key.len() as u64) + key.len() + value_bytes)?;
        self.rep.push(TAG_PUT);
        push_bytes(&mut self.rep, key);
        push_bytes(&mut self.rep, value);
        self.count += 1;
        Ok(self)
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<&mut Self> {
        check_key(key)?;
        self.reserve(1 + varint::len(key.len() as u64) + key.len())?;
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
    varint::put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Decodes `count` operations from an encoded batch held in `rep`. Returns `None` if the bytes
/// are malformed: callers turn that into a `Corruption` error naming the file and offset.
pub(crate) fn decode_ops(rep: &Bytes, count: u32, lengths: Lengths) -> Option<Vec<BatchOp>> {
    let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
    for_each_op(rep, count, lengths, |op| ops.push(op)).then_some(ops)
}

/// Passes each of the `count` operations encoded in `rep` to `f`, without collecting them.
/// Returns whether `rep` was well-formed; if not, `f` has seen the operations before the
/// damage, so callers that cannot trust `rep` use [`decode_ops`] instead.
pub(crate) fn for_each_op(
    rep: &Bytes,
    count: u32,
    lengths: Lengths,
    mut f: impl FnMut(BatchOp),
) -> bool {
    for_each_op_range(rep, count, lengths, |key, value| {
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
    for_each_op_range(rep, count, Lengths::Varint, |key, value| {
        f(&rep[key], value.map(|v| &rep[v]))
    })
}

/// Parses `count` operations from `rep`, passing each key's range and its value's (`None`
/// for a delete).
fn for_each_op_range(
    rep: &[u8],
    count: u32,
    lengths: Lengths,
    mut f: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> bool {
    let mut pos = 0usize;
    for _ in 0..count {
        let Some(&tag) = rep.get(pos) else { return false };
        pos += 1;
        let Some(key) = take_bytes(rep, &mut pos, lengths) else { return false };
        match tag {
            TAG_PUT => match take_bytes(rep, &mut pos, lengths) {
                Some(value) => f(key, Some(value)),
                None => return false,
            },
            TAG_DELETE => f(key, None),
            _ => return false,
        }
    }
    pos == rep.len()
}

fn take_bytes(rep: &[u8], pos: &mut usize, lengths: Lengths) -> Option<Range<usize>> {
    let mut len_end = *pos;
    let len = match lengths {
        Lengths::Fixed32 => {
            len_end = pos.checked_add(4)?;
            u32::from_le_bytes(rep.get(*pos..len_end)?.try_into().ok()?) as usize
        }
        Lengths::Varint => usize::try_from(varint::get(rep, &mut len_end)?).ok()?,
    };
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
        let ops = decode_ops(&rep, b.count(), Lengths::Varint).unwrap();
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
            assert!(decode_ops(&rep.slice(..cut), 1, Lengths::Varint).is_none(), "cut at {cut}");
        }
        assert!(decode_ops(&rep, 2, Lengths::Varint).is_none());
        let mut longer = b.rep().to_vec();
        longer.push(0);
        assert!(decode_ops(&Bytes::from(longer), 1, Lengths::Varint).is_none());
    }

    #[test]
    fn a_put_costs_three_bytes_beyond_its_key_and_value() {
        let mut b = WriteBatch::new();
        b.put(b"key", b"value").unwrap();
        assert_eq!(b.rep(), b"\x01\x03key\x05value");
        b.delete(&[7; 200]).unwrap();
        assert_eq!(b.encoded_len(), 11 + 1 + 2 + 200);
    }

    #[test]
    fn format_1_batches_still_decode() {
        // A put and a delete as a log of format 1 holds them: four-byte lengths.
        let rep = Bytes::from_static(b"\x01\x01\0\0\0k\x01\0\0\0v\x00\x02\0\0\0ab");
        let ops = decode_ops(&rep, 2, Lengths::Fixed32).unwrap();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put(Bytes::from_static(b"k"), Bytes::from_static(b"v")),
                BatchOp::Delete(Bytes::from_static(b"ab")),
            ]
        );
        assert!(decode_ops(&rep, 2, Lengths::Varint).is_none());
    }

    #[test]
    fn oversized_key_is_refused() {
        let mut b = WriteBatch::new();
        let err = b.put(&vec![0; KEY_BYTES_MAX + 1], b"").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(b.is_empty());
    }
}
