//! Variable-length unsigned integers (LEB128): seven bits a byte, least significant first, the
//! high bit set on every byte but the last. The WAL's format 2 writes its lengths, sequence
//! numbers and attestations this way, so a small number costs one byte instead of four or eight.
//!
//! Decoding accepts only the shortest encoding of each value and nothing above `u64::MAX`, so
//! every value has exactly one encoding and arbitrary bytes give `None`, never a panic.

/// The most bytes a `u64` takes.
pub(crate) const MAX_BYTES: usize = 10;

/// Appends `value` to `out`.
#[inline]
pub(crate) fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes `value` takes.
#[inline]
pub(crate) fn len(value: u64) -> usize {
    // One byte per started group of seven significant bits; zero takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a value at `*pos` and moves `*pos` past it; `None` if the bytes there are not the
/// shortest encoding of a `u64` (truncated, overlong or too large).
#[inline]
pub(crate) fn get(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..MAX_BYTES {
        let byte = *data.get(*pos + i)?;
        let bits = u64::from(byte & 0x7f);
        // The tenth byte holds the top bit of a u64 only.
        if i == MAX_BYTES - 1 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of zero after others would be an overlong encoding.
            if byte == 0 && i > 0 {
                return None;
            }
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sizes_match() {
        let samples = [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX - 1];
        for value in samples.into_iter().chain((0..64).map(|s| 1u64 << s)).chain([u64::MAX]) {
            let mut out = vec![0xAA];
            put(&mut out, value);
            assert_eq!(out.len() - 1, len(value), "{value}");
            let mut pos = 1;
            assert_eq!(get(&out, &mut pos), Some(value));
            assert_eq!(pos, out.len());
        }
        assert_eq!(len(0), 1);
        assert_eq!(len(127), 1);
        assert_eq!(len(128), 2);
        assert_eq!(len(u64::MAX), MAX_BYTES);
    }

    #[test]
    fn refuses_truncated_overlong_and_oversized_encodings() {
        let mut pos = 0;
        assert_eq!(get(&[], &mut pos), None);
        assert_eq!(get(&[0x80], &mut pos), None, "truncated");
        assert_eq!(get(&[0x81, 0x00], &mut pos), None, "overlong");
        assert_eq!(get(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>(), &mut pos), None);
        assert_eq!(get(&[0xff; 11], &mut pos), None);
        assert_eq!(pos, 0, "a refused value moves nothing");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_ones_are_canonical() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes: Vec<u8> = state.to_le_bytes().iter().map(|b| b | (0x80 * (b & 1))).collect();
            let cut = (state >> 60) as usize % 9;
            let mut pos = 0;
            if let Some(value) = get(&bytes[..cut], &mut pos) {
                let mut again = Vec::new();
                put(&mut again, value);
                assert_eq!(&again[..], &bytes[..pos]);
            }
        }
    }
}
