//! The bloom filter over a table's user keys, which lets a point lookup skip a table without
//! reading a data block.
//!
//! Contents: the bit array (bit `i` is bit `i % 8` of byte `i / 8`), then one byte holding the
//! probe count `k`. A key sets the bits `h, h + d, h + 2d, ...` (`k` of them, modulo the number
//! of bits, in wrapping 64-bit arithmetic) where `h` is [`hash64`] of the key and
//! `d = h.rotate_right(17)`: LevelDB's double hashing, widened to 64 bits.
//!
//! Invariant: no false negatives. Every key added to a builder is reported present by the
//! filter decoded from its output, on every machine, because the hash is written out here
//! rather than taken from `std::hash`, whose output may change and may be randomly seeded.

use super::block::Malformed;
use bytes::Bytes;

/// The largest probe count; more would cost lookups time for no gain at sane bit densities.
pub(crate) const PROBES_MAX: u32 = 30;
/// The smallest bit array, so tiny tables do not get a uselessly high false-positive rate.
const FILTER_BITS_MIN: u64 = 64;

/// A 64-bit hash of `data`, fixed forever by the file format: the bytes are read as
/// little-endian 8-byte words (the last one zero-padded), each word is mixed with murmur3's
/// 64-bit finalizer and folded into the state by xor, rotate and multiply, and the state,
/// seeded with the length, goes through the finalizer once more.
pub(crate) fn hash64(data: &[u8]) -> u64 {
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut state = (data.len() as u64).wrapping_mul(MUL) ^ 0x6a61_6465_6462_6221;
    for chunk in data.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        state = (state ^ fmix64(u64::from_le_bytes(word))).rotate_left(27).wrapping_mul(MUL);
    }
    fmix64(state)
}

/// murmur3's 64-bit finalizer: every input bit affects every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The probe count for `bits_per_key`: `round(bits_per_key * 0.69)` (ln 2 minimises false
/// positives), clamped to `[1, PROBES_MAX]`. Integer arithmetic, so it cannot vary by platform.
pub(crate) fn probes_for(bits_per_key: usize) -> u32 {
    let probes = (bits_per_key as u64).saturating_mul(69).saturating_add(50) / 100;
    probes.clamp(1, u64::from(PROBES_MAX)) as u32
}

/// Collects the hashes of a table's distinct user keys and builds the filter at the end.
#[derive(Debug)]
pub(crate) struct FilterBuilder {
    bits_per_key: usize,
    hashes: Vec<u64>,
}

impl FilterBuilder {
    pub(crate) fn new(bits_per_key: usize) -> Self {
        FilterBuilder { bits_per_key, hashes: Vec::new() }
    }

    /// Adds a user key; the caller adds each distinct key once.
    pub(crate) fn add(&mut self, user_key: &[u8]) {
        self.hashes.push(hash64(user_key));
    }

    /// The filter block's contents.
    pub(crate) fn finish(&self) -> Vec<u8> {
        let wanted = (self.hashes.len() as u64).saturating_mul(self.bits_per_key as u64);
        let bits = wanted.max(FILTER_BITS_MIN).div_ceil(8) * 8;
        let probes = probes_for(self.bits_per_key);
        let mut out = vec![0u8; (bits / 8) as usize];
        for &hash in &self.hashes {
            for bit in probe_bits(hash, bits, probes) {
                out[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        out.push(probes as u8);
        out
    }
}

/// The bits a key with `hash` sets in an array of `bits` bits.
fn probe_bits(hash: u64, bits: u64, probes: u32) -> impl Iterator<Item = u64> {
    let delta = hash.rotate_right(17);
    (0..u64::from(probes)).map(move |i| hash.wrapping_add(i.wrapping_mul(delta)) % bits)
}

/// A decoded filter block.
#[derive(Clone)]
pub(crate) struct BloomFilter {
    /// The bit array (the probe count byte stripped).
    bitmap: Bytes,
    probes: u32,
}

impl std::fmt::Debug for BloomFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BloomFilter")
            .field("bits", &(self.bitmap.len() * 8))
            .field("probes", &self.probes)
            .finish()
    }
}

impl BloomFilter {
    pub(crate) fn decode(contents: Bytes) -> Result<Self, Malformed> {
        let Some((&probes, bitmap)) = contents.split_last() else {
            return Err(Malformed("empty"));
        };
        if bitmap.is_empty() {
            return Err(Malformed("no bit array"));
        }
        let probes = u32::from(probes);
        if probes == 0 || probes > PROBES_MAX {
            return Err(Malformed("probe count out of range"));
        }
        let bitmap = contents.slice(..bitmap.len());
        Ok(BloomFilter { bitmap, probes })
    }

    /// False if `user_key` was certainly never added.
    /// The bytes of its bit array.
    pub(crate) fn bytes(&self) -> usize {
        self.bitmap.len()
    }

    pub(crate) fn may_contain(&self, user_key: &[u8]) -> bool {
        let bits = self.bitmap.len() as u64 * 8;
        probe_bits(hash64(user_key), bits, self.probes)
            .all(|bit| self.bitmap[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_of(keys: impl Iterator<Item = Vec<u8>>, bits_per_key: usize) -> BloomFilter {
        let mut b = FilterBuilder::new(bits_per_key);
        keys.for_each(|k| b.add(&k));
        BloomFilter::decode(Bytes::from(b.finish())).unwrap()
    }

    #[test]
    fn the_hash_is_pinned() {
        // The hash is part of the file format: a change here makes old filters lie.
        assert_eq!(hash64(b""), 0x5d8d_2bac_5982_a9ab);
        assert_eq!(hash64(b"apple"), 0x5522_d616_fbcf_ba59);
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(0), 1);
        assert_eq!(probes_for(1000), PROBES_MAX);
    }

    #[test]
    fn ten_bits_per_key_gives_under_two_percent_false_positives_and_no_false_negatives() {
        let n = 10_000u32;
        let key = |i: u32| format!("user{i:08}").into_bytes();
        let filter = filter_of((0..n).map(key), 10);
        assert!((0..n).all(|i| filter.may_contain(&key(i))), "a false negative");
        let false_positives = (n..2 * n).filter(|&i| filter.may_contain(&key(i))).count();
        let rate = false_positives as f64 / f64::from(n);
        assert!(rate < 0.02, "false-positive rate {rate}");
    }

    #[test]
    fn small_filters_have_no_false_negatives() {
        for n in 0..50u32 {
            let filter = filter_of((0..n).map(|i| i.to_le_bytes().to_vec()), 10);
            assert!((0..n).all(|i| filter.may_contain(&i.to_le_bytes())));
        }
    }

    #[test]
    fn malformed_filters_are_rejected() {
        assert!(BloomFilter::decode(Bytes::new()).is_err());
        assert!(BloomFilter::decode(Bytes::from_static(&[7])).is_err());
        assert!(BloomFilter::decode(Bytes::from_static(&[0xff, 0])).is_err());
        assert!(BloomFilter::decode(Bytes::from_static(&[0xff, 31])).is_err());
        assert!(BloomFilter::decode(Bytes::from_static(&[0xff, 30])).unwrap().may_contain(b"x"));
    }
}
