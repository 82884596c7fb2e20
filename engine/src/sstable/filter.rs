//! The bloom filter over a table's user keys, which lets a point lookup skip a table without
//! reading a data block.
//!
//! Contents: the bit array (bit `i` is bit `i % 8` of byte `i / 8`), then one byte holding the
//! probe count `k`. Where a key's bits lie depends on the table's format version (its footer):
//!
//! - *Blocked* (version 2, what this code writes): the array is whole 64-byte lines, and all of
//!   a key's bits lie in one line, so a lookup touches one cache line (where a plain bloom
//!   filter touches about two for an absent key and `k` for a present one, each a likely cache
//!   miss in a large table's filter). With `h` = [`hash64`] of the key, the line is
//!   `(h * lines) >> 64` (in 128-bit arithmetic: the high half of the product), and the bits
//!   are the top 9 bits of `x`, `x * C`, `x * C^2`, ... (`k` of them, wrapping 32-bit
//!   arithmetic) where `x` is the low 32 bits of `h` and `C = 0x9e3779b9`. At 10 bits per key
//!   about 1.2% of absent keys pass, against 0.8% for a plain filter.
//! - *Plain* (version 1, read for tables written before): the bits `h, h + d, h + 2d, ...`
//!   modulo the number of bits, in wrapping 64-bit arithmetic, with `d = h.rotate_right(17)`:
//!   LevelDB's double hashing, widened to 64 bits.
//!
//! Invariant: no false negatives. Every key added to a builder is reported present by the
//! filter decoded from its output, on every machine, because the hash is written out here
//! rather than taken from `std::hash`, whose output may change and may be randomly seeded.

use super::block::Malformed;
use bytes::Bytes;

/// The largest probe count; more would cost lookups time for no gain at sane bit densities.
pub(crate) const PROBES_MAX: u32 = 30;
/// The smallest plain bit array, so tiny tables do not get a uselessly high false-positive
/// rate.
#[cfg(test)]
const FILTER_BITS_MIN: u64 = 64;
/// The bits of one line of a blocked filter: a cache line.
const LINE_BITS: u64 = 512;
/// The multiplier that steps a blocked filter's probes: odd, so each step is a bijection, and
/// the golden ratio's, so the top bits of successive products spread well.
const LINE_STEP: u32 = 0x9e37_79b9;

/// How a filter's bits are laid out: by the table's format version (see the module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Plain,
    Blocked,
}

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

    /// The filter block's contents, blocked (the layout this code writes).
    pub(crate) fn finish(&self) -> Vec<u8> {
        let wanted = (self.hashes.len() as u64).saturating_mul(self.bits_per_key as u64);
        let lines = wanted.div_ceil(LINE_BITS).max(1);
        let probes = probes_for(self.bits_per_key);
        let mut out = vec![0u8; (lines * LINE_BITS / 8) as usize];
        for &hash in &self.hashes {
            let line = line_of(hash, lines);
            for bit in line_bits(hash, probes) {
                out[line + (bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        out.push(probes as u8);
        out
    }

    /// The filter block's contents in the plain layout, which tables of format version 1 hold.
    #[cfg(test)]
    pub(crate) fn finish_plain(&self) -> Vec<u8> {
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

/// The bits a key with `hash` sets in a plain array of `bits` bits.
fn probe_bits(hash: u64, bits: u64, probes: u32) -> impl Iterator<Item = u64> {
    let delta = hash.rotate_right(17);
    (0..u64::from(probes)).map(move |i| hash.wrapping_add(i.wrapping_mul(delta)) % bits)
}

/// The first byte of the line a key with `hash` sets its bits in, of `lines` lines: the high
/// half of `hash * lines`, which maps the hash onto the lines evenly without a division.
fn line_of(hash: u64, lines: u64) -> usize {
    let line = ((u128::from(hash) * u128::from(lines)) >> 64) as u64;
    (line * (LINE_BITS / 8)) as usize
}

/// The bits, within its line, a key with `hash` sets.
fn line_bits(hash: u64, probes: u32) -> impl Iterator<Item = u32> {
    let mut x = hash as u32;
    (0..probes).map(move |_| {
        let bit = x >> (32 - LINE_BITS.trailing_zeros());
        x = x.wrapping_mul(LINE_STEP);
        bit
    })
}

/// A decoded filter block.
#[derive(Clone)]
pub(crate) struct BloomFilter {
    /// The bit array (the probe count byte stripped).
    bitmap: Bytes,
    probes: u32,
    layout: Layout,
}

impl std::fmt::Debug for BloomFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BloomFilter")
            .field("bits", &(self.bitmap.len() * 8))
            .field("probes", &self.probes)
            .field("layout", &self.layout)
            .finish()
    }
}

impl BloomFilter {
    pub(crate) fn decode(contents: Bytes, layout: Layout) -> Result<Self, Malformed> {
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
        if layout == Layout::Blocked && !(bitmap.len() as u64).is_multiple_of(LINE_BITS / 8) {
            return Err(Malformed("a blocked filter that is not whole lines"));
        }
        let bitmap = contents.slice(..bitmap.len());
        Ok(BloomFilter { bitmap, probes, layout })
    }

    /// False if `user_key` was certainly never added.
    /// The bytes of its bit array.
    pub(crate) fn bytes(&self) -> usize {
        self.bitmap.len()
    }

    pub(crate) fn may_contain(&self, user_key: &[u8]) -> bool {
        let hash = hash64(user_key);
        match self.layout {
            Layout::Blocked => {
                let lines = self.bitmap.len() as u64 / (LINE_BITS / 8);
                let line = &self.bitmap[line_of(hash, lines)..][..(LINE_BITS / 8) as usize];
                line_bits(hash, self.probes)
                    .all(|bit| line[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
            }
            Layout::Plain => {
                let bits = self.bitmap.len() as u64 * 8;
                probe_bits(hash, bits, self.probes)
                    .all(|bit| self.bitmap[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_of(
        keys: impl Iterator<Item = Vec<u8>>,
        bits_per_key: usize,
        layout: Layout,
    ) -> BloomFilter {
        let mut b = FilterBuilder::new(bits_per_key);
        keys.for_each(|k| b.add(&k));
        let contents = match layout {
            Layout::Blocked => b.finish(),
            Layout::Plain => b.finish_plain(),
        };
        BloomFilter::decode(Bytes::from(contents), layout).unwrap()
    }

    #[test]
    fn the_hash_and_the_bits_are_pinned() {
        // The hash and where bits go are part of the file format: a change here makes old
        // filters lie.
        assert_eq!(hash64(b""), 0x5d8d_2bac_5982_a9ab);
        assert_eq!(hash64(b"apple"), 0x5522_d616_fbcf_ba59);
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(0), 1);
        assert_eq!(probes_for(1000), PROBES_MAX);
        let h = hash64(b"apple");
        assert_eq!(line_of(h, 1), 0);
        assert_eq!(line_of(h, 100), 64 * 33);
        let bits: Vec<u32> = line_bits(h, 7).collect();
        assert_eq!(bits, [503, 62, 12, 377, 409, 233, 490]);
    }

    #[test]
    fn ten_bits_per_key_gives_under_two_percent_false_positives_and_no_false_negatives() {
        let n = 10_000u32;
        let key = |i: u32| format!("user{i:08}").into_bytes();
        for layout in [Layout::Blocked, Layout::Plain] {
            let filter = filter_of((0..n).map(key), 10, layout);
            assert!((0..n).all(|i| filter.may_contain(&key(i))), "a false negative");
            let false_positives = (n..2 * n).filter(|&i| filter.may_contain(&key(i))).count();
            let rate = false_positives as f64 / f64::from(n);
            assert!(rate < 0.02, "{layout:?}: false-positive rate {rate}");
        }
    }

    #[test]
    fn small_filters_have_no_false_negatives() {
        for layout in [Layout::Blocked, Layout::Plain] {
            for n in 0..50u32 {
                let filter = filter_of((0..n).map(|i| i.to_le_bytes().to_vec()), 10, layout);
                assert!((0..n).all(|i| filter.may_contain(&i.to_le_bytes())));
            }
        }
    }

    #[test]
    fn a_blocked_filter_is_whole_lines() {
        let filter = filter_of((0..1000u32).map(|i| i.to_le_bytes().to_vec()), 10, Layout::Blocked);
        assert_eq!(filter.bytes(), 20 * 64, "10,000 bits round up to 20 lines of 512");
        assert_eq!(filter_of(std::iter::empty(), 10, Layout::Blocked).bytes(), 64);
    }

    #[test]
    fn malformed_filters_are_rejected() {
        for layout in [Layout::Blocked, Layout::Plain] {
            assert!(BloomFilter::decode(Bytes::new(), layout).is_err());
            assert!(BloomFilter::decode(Bytes::from_static(&[7]), layout).is_err());
            let line = |probes: u8| {
                let mut contents = vec![0xff; 64];
                contents.push(probes);
                Bytes::from(contents)
            };
            assert!(BloomFilter::decode(line(0), layout).is_err());
            assert!(BloomFilter::decode(line(31), layout).is_err());
            assert!(BloomFilter::decode(line(30), layout).unwrap().may_contain(b"x"));
        }
        let short = Bytes::from_static(&[0xff, 30]);
        assert!(BloomFilter::decode(short.clone(), Layout::Plain).unwrap().may_contain(b"x"));
        assert!(BloomFilter::decode(short, Layout::Blocked).is_err(), "not a whole line");
    }
}
