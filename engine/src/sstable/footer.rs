//! Block handles and the footer: the fixed-size end of a table that locates everything else.
//!
//! Footer layout (64 bytes, the last bytes of the file): index handle, filter handle (offset
//! and size 0 when the table has no filter), properties handle, format version u32, crc32 u32
//! of the 52 bytes before it, magic u64. A handle is offset u64 and size u64 of a block's
//! contents; its trailer follows the contents.
//!
//! Invariant: a decoded [`Footer`] has the right magic, version and checksum, and every handle
//! in it lies wholly (trailer included) before the footer and within `BLOCK_BYTES_MAX`, so
//! following one can neither read outside the file nor allocate without bound.

use super::block::{Malformed, BLOCK_TRAILER_BYTES};
use super::BLOCK_BYTES_MAX;

/// Size of the footer.
pub(crate) const FOOTER_BYTES: usize = 64;
/// The format version this code writes: 2, whose filter is blocked (see `filter`), or 3 for a
/// table holding blob pointers (entries of kind 2; otherwise as 2), so that a binary from
/// before key-value separation refuses it by its version. It also reads version 1, the same as
/// 2 but for a plain filter.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The format version of a table holding blob pointers.
pub(crate) const FORMAT_VERSION_BLOBS: u32 = 3;
/// The oldest format version this code reads.
pub(crate) const FORMAT_VERSION_MIN: u32 = 1;
/// The last 8 bytes of every table: "jadedbst" in ASCII.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"jadedbst");
/// Size of an encoded handle.
pub(crate) const HANDLE_BYTES: usize = 16;

const CRC_AT: usize = 3 * HANDLE_BYTES + 4;
const MAGIC_AT: usize = CRC_AT + 4;
const _: () = assert!(MAGIC_AT + 8 == FOOTER_BYTES);

/// Where a block's contents lie in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

impl BlockHandle {
    pub(crate) fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    /// Decodes exactly [`HANDLE_BYTES`] bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; HANDLE_BYTES] = bytes.try_into().ok()?;
        let (offset, size) = bytes.split_at(8);
        Some(BlockHandle {
            offset: u64::from_le_bytes(offset.try_into().ok()?),
            size: u64::from_le_bytes(size.try_into().ok()?),
        })
    }

    /// Whether the block (trailer included) ends at or before `limit` and is not oversized.
    pub(crate) fn fits_before(&self, limit: u64) -> bool {
        let end = self
            .offset
            .checked_add(self.size)
            .and_then(|end| end.checked_add(BLOCK_TRAILER_BYTES as u64));
        self.size <= BLOCK_BYTES_MAX as u64 && end.is_some_and(|end| end <= limit)
    }

    /// Contents plus trailer, the bytes to read.
    pub(crate) fn sealed_len(&self) -> usize {
        self.size as usize + BLOCK_TRAILER_BYTES
    }
}

/// The decoded footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: BlockHandle,
    pub filter: Option<BlockHandle>,
    pub properties: BlockHandle,
    /// The format version: [`FORMAT_VERSION`] for a table this code writes.
    pub version: u32,
}

impl Footer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_BYTES);
        self.index.encode_to(&mut out);
        self.filter.unwrap_or_default().encode_to(&mut out);
        self.properties.encode_to(&mut out);
        out.extend_from_slice(&self.version.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        debug_assert_eq!(out.len(), FOOTER_BYTES);
        out
    }

    /// Decodes the footer found at `footer_offset` (so the blocks must end at or before it).
    pub(crate) fn decode(bytes: &[u8], footer_offset: u64) -> Result<Self, Malformed> {
        let bytes: &[u8; FOOTER_BYTES] = bytes.try_into().map_err(|_| Malformed("short"))?;
        let u32_at = |at: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| bytes[at + i]));
        let magic = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7].map(|i| bytes[MAGIC_AT + i]));
        if magic != MAGIC {
            return Err(Malformed("bad magic: not a JadeDB table"));
        }
        if crc32fast::hash(&bytes[..CRC_AT]) != u32_at(CRC_AT) {
            return Err(Malformed("checksum mismatch"));
        }
        let version = u32_at(CRC_AT - 4);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION_BLOBS).contains(&version) {
            return Err(Malformed("unknown format version"));
        }
        let handle = |i: usize| {
            BlockHandle::decode(&bytes[i * HANDLE_BYTES..(i + 1) * HANDLE_BYTES])
                .unwrap_or_default()
        };
        let (index, filter, properties) = (handle(0), handle(1), handle(2));
        let filter = (filter != BlockHandle::default()).then_some(filter);
        let all_fit = [Some(index), filter, Some(properties)]
            .into_iter()
            .flatten()
            .all(|h| h.fits_before(footer_offset));
        if !all_fit {
            return Err(Malformed("a block handle points outside the file"));
        }
        Ok(Footer { index, filter, properties, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer() -> Footer {
        Footer {
            index: BlockHandle { offset: 100, size: 20 },
            filter: None,
            properties: BlockHandle { offset: 125, size: 90 },
            version: FORMAT_VERSION,
        }
    }

    #[test]
    fn reads_version_1_and_refuses_unknown_versions() {
        for version in [0, FORMAT_VERSION_MIN, FORMAT_VERSION, FORMAT_VERSION_BLOBS, 4] {
            let f = Footer { version, ..footer() };
            let known = (FORMAT_VERSION_MIN..=FORMAT_VERSION_BLOBS).contains(&version);
            let decoded = Footer::decode(&f.encode(), 220);
            assert_eq!(decoded.is_ok(), known, "version {version}: {decoded:?}");
        }
    }

    #[test]
    fn round_trips_and_checks_the_handles() {
        let f = footer();
        let bytes = f.encode();
        assert_eq!(&bytes[56..], b"jadedbst");
        assert_eq!(Footer::decode(&bytes, 220), Ok(f));
        assert_eq!(
            Footer::decode(&bytes, 219),
            Err(Malformed("a block handle points outside the file"))
        );
        assert!(Footer::decode(&bytes[1..], 220).is_err());
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let bytes = footer().encode();
        for bit in 0..FOOTER_BYTES * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Footer::decode(&bad, 220).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn huge_handles_do_not_overflow() {
        let h = BlockHandle { offset: u64::MAX - 2, size: 2 };
        assert!(!h.fits_before(u64::MAX));
        let h = BlockHandle { offset: 0, size: BLOCK_BYTES_MAX as u64 + 1 };
        assert!(!h.fits_before(u64::MAX));
    }
}
