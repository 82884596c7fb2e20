//! The properties block: what a table holds, so the engine can place it without reading it.
//!
//! Contents, in order: smallest key length u32 and bytes, smallest seq u64, largest key length
//! u32 and bytes, largest seq u64, then min seq, max seq, entries, tombstones, data blocks and
//! file bytes, u64 each.
//!
//! Invariant: a decoded [`TableProperties`] is self-consistent (at least one entry and one
//! data block, no more tombstones than entries or blocks than entries, the sequence range
//! covers both bounds, the smallest key is not after the largest), and nothing trails it.

use super::block::Malformed;
use super::key;
use super::TableProperties;
use bytes::Bytes;
use std::cmp::Ordering;

pub(crate) fn encode(p: &TableProperties) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(&p.smallest_key, &p.largest_key));
    for (key, seq) in [(&p.smallest_key, p.smallest_seq), (&p.largest_key, p.largest_seq)] {
        // Keys are at most KEY_BYTES_MAX, far below u32::MAX.
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&seq.to_le_bytes());
    }
    for n in [p.min_seq, p.max_seq, p.entries, p.tombstones, p.data_blocks, p.file_bytes] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

/// Size of the encoding of properties with these bounds; the writer needs it before encoding,
/// to compute `file_bytes`, which is part of the encoding.
pub(crate) fn encoded_len(smallest_key: &[u8], largest_key: &[u8]) -> usize {
    2 * (4 + 8) + smallest_key.len() + largest_key.len() + 6 * 8
}

pub(crate) fn decode(contents: &[u8]) -> Result<TableProperties, Malformed> {
    let mut r = Reader(contents);
    let short = Malformed("ends early");
    let smallest_key = r.bytes().ok_or(short)?;
    let smallest_seq = r.u64().ok_or(short)?;
    let largest_key = r.bytes().ok_or(short)?;
    let largest_seq = r.u64().ok_or(short)?;
    let mut n = [0u64; 6];
    for slot in &mut n {
        *slot = r.u64().ok_or(short)?;
    }
    if !r.0.is_empty() {
        return Err(Malformed("trailing bytes"));
    }
    let [min_seq, max_seq, entries, tombstones, data_blocks, file_bytes] = n;
    let p = TableProperties {
        smallest_key: Bytes::copy_from_slice(smallest_key),
        smallest_seq,
        largest_key: Bytes::copy_from_slice(largest_key),
        largest_seq,
        min_seq,
        max_seq,
        entries,
        tombstones,
        data_blocks,
        file_bytes,
    };
    check(&p)?;
    Ok(p)
}

fn check(p: &TableProperties) -> Result<(), Malformed> {
    if p.entries == 0 || p.data_blocks == 0 || p.data_blocks > p.entries {
        return Err(Malformed("entry or block count out of range"));
    }
    if p.tombstones > p.entries {
        return Err(Malformed("more tombstones than entries"));
    }
    let in_range = |seq: u64| p.min_seq <= seq && seq <= p.max_seq && seq <= key::SEQ_MAX;
    if !in_range(p.smallest_seq) || !in_range(p.largest_seq) {
        return Err(Malformed("sequence range does not cover the bounds"));
    }
    let order = key::compare(&p.smallest_key, p.smallest_seq, &p.largest_key, p.largest_seq);
    if order == Ordering::Greater || (order == Ordering::Equal && p.entries != 1) {
        return Err(Malformed("smallest key after largest"));
    }
    Ok(())
}

/// A cursor over fixed-width little-endian fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TableProperties {
        TableProperties {
            smallest_key: Bytes::from_static(b"apple"),
            smallest_seq: 7,
            largest_key: Bytes::from_static(b"date"),
            largest_seq: 4,
            min_seq: 2,
            max_seq: 9,
            entries: 6,
            tombstones: 2,
            data_blocks: 2,
            file_bytes: 400,
        }
    }

    #[test]
    fn round_trips() {
        let p = sample();
        let bytes = encode(&p);
        assert_eq!(bytes.len(), encoded_len(&p.smallest_key, &p.largest_key));
        assert_eq!(decode(&bytes), Ok(p));
    }

    #[test]
    fn inconsistent_properties_are_rejected() {
        let cases: [fn(&mut TableProperties); 6] = [
            |p| p.entries = 0,
            |p| p.tombstones = 7,
            |p| p.data_blocks = 7,
            |p| p.min_seq = 5,
            |p| p.max_seq = 6,
            |p| p.largest_key = Bytes::from_static(b"a"),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut p = sample();
            case(&mut p);
            assert!(decode(&encode(&p)).is_err(), "case {i}");
        }
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(Malformed("trailing bytes")));
        assert!(decode(&bytes[..10]).is_err());
    }
}
