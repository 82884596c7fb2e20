//! Internal keys as tables store them: a user key followed by an 8-byte trailer.
//!
//! The trailer is `(seq << 8) | kind` as a little-endian u64, kind 1 for a value, 0 for a
//! tombstone and 2 for a value kept in a blob file (the entry holds a pointer to it). Invariant: internal keys order by user key ascending (bytewise), then sequence
//! number descending, so a key's newest version comes first. Comparisons decode the trailer
//! rather than comparing bytes, because little-endian trailers do not sort as numbers.

use std::cmp::Ordering;

/// Size of the trailer after the user key.
pub(crate) const TRAILER_BYTES: usize = 8;
/// The largest sequence number a trailer can carry (the low byte holds the kind).
pub(crate) const SEQ_MAX: u64 = (1 << 56) - 1;
/// Kind of an entry that deletes its key.
pub(crate) const KIND_TOMBSTONE: u8 = 0;
/// Kind of an entry that carries a value.
pub(crate) const KIND_VALUE: u8 = 1;
/// Kind of an entry whose value is in a blob file: it holds a `blob::BlobPointer`.
pub(crate) const KIND_BLOB: u8 = 2;

/// Appends the internal key `(user_key, seq, kind)` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, user_key: &[u8], seq: u64, kind: u8) {
    debug_assert!(seq <= SEQ_MAX, "sequence number {seq} does not fit a trailer");
    out.extend_from_slice(user_key);
    out.extend_from_slice(&((seq << 8) | u64::from(kind)).to_le_bytes());
}

/// The kind byte of a value slot.
pub(crate) fn kind_of(value: Option<&[u8]>) -> u8 {
    if value.is_some() {
        KIND_VALUE
    } else {
        KIND_TOMBSTONE
    }
}

/// Splits an encoded internal key into user key, sequence number and kind; `None` if it is
/// shorter than a trailer or its kind is unknown.
pub(crate) fn decode(key: &[u8]) -> Option<(&[u8], u64, u8)> {
    let split = key.len().checked_sub(TRAILER_BYTES)?;
    let trailer = u64::from_le_bytes(key[split..].try_into().ok()?);
    let kind = (trailer & 0xff) as u8;
    if kind > KIND_BLOB {
        return None;
    }
    Some((&key[..split], trailer >> 8, kind))
}

/// The parts of a key already checked by [`decode`]; empty parts if it was not, so callers
/// that validated on the way in need not handle an impossible error.
pub(crate) fn parts(key: &[u8]) -> (&[u8], u64, u8) {
    decode(key).unwrap_or((&[], 0, KIND_TOMBSTONE))
}

/// Orders `(a_user, a_seq)` against `(b_user, b_seq)` in internal order.
pub(crate) fn compare(a_user: &[u8], a_seq: u64, b_user: &[u8], b_seq: u64) -> Ordering {
    a_user.cmp(b_user).then_with(|| b_seq.cmp(&a_seq))
}

/// Orders an encoded internal key against `(user, seq)`.
pub(crate) fn compare_encoded(encoded: &[u8], user: &[u8], seq: u64) -> Ordering {
    let (a_user, a_seq, _) = parts(encoded);
    compare(a_user, a_seq, user, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trips_and_orders_by_sequence_descending() {
        let mut a = Vec::new();
        encode(&mut a, b"k", 0x0102, KIND_VALUE);
        assert_eq!(a, [b'k', 1, 2, 1, 0, 0, 0, 0, 0]);
        assert_eq!(decode(&a), Some((&b"k"[..], 0x0102, KIND_VALUE)));
        // Bytewise the trailer of seq 0x0102 sorts before that of seq 0x0201; decoded it is after.
        let mut b = Vec::new();
        encode(&mut b, b"k", 0x0201, KIND_TOMBSTONE);
        assert_eq!(compare_encoded(&a, b"k", 0x0201), Ordering::Greater);
        assert_eq!(compare_encoded(&b, b"k", 0x0102), Ordering::Less);
        assert_eq!(compare_encoded(&a, b"ka", 0), Ordering::Less);
        assert_eq!(compare_encoded(&a, b"k", u64::MAX), Ordering::Greater);
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&[b'k', 3, 0, 0, 0, 0, 0, 0, 0]), None);
        assert!(decode(&[b'k', 2, 0, 0, 0, 0, 0, 0, 0]).is_some());
        assert_eq!(parts(b""), (&b""[..], 0, KIND_TOMBSTONE));
    }
}
