//! Sorted string tables: the immutable files that hold flushed and compacted entries.
//!
//! A table is a run of data blocks (prefix-compressed entries in internal order), then an
//! optional bloom filter block over the user keys, an index block (the last key and the handle
//! of every data block), a properties block, and a fixed-size footer that locates them; the
//! layout is documented byte by byte in `docs/format.md` ("SSTable").
//!
//! Invariant: every byte of a table file belongs to a block or the footer, and each of those
//! carries a crc32 that is verified on every read from disk, so damaged bytes surface as a
//! `Corruption` error naming the file and the offset of the damaged block, never as wrong data.
//! Decoders take arbitrary bytes: malformed input gives an error, never a panic or an endless
//! loop.

mod block;
mod filter;
mod footer;
mod iter;
pub(crate) mod key;
mod properties;
mod reader;
mod writer;

#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

pub(crate) use {iter::TableIter, reader::Table, writer::TableWriter};

use bytes::Bytes;
use std::sync::atomic::AtomicU64;

/// The largest block contents (without its trailer) the writer produces and the reader accepts.
/// It bounds the allocation a damaged block handle can cause, and keeps in-block offsets within
/// their 4 bytes. One entry of the largest key and value (64 KiB + 64 MiB) fits easily.
pub(crate) const BLOCK_BYTES_MAX: usize = 256 << 20;

const _: () = assert!(BLOCK_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(crate::KEY_BYTES_MAX + crate::VALUE_BYTES_MAX + 64 < BLOCK_BYTES_MAX);

/// How the writer lays out a table. The reader needs none of it: everything it depends on is
/// recorded in the file.
#[derive(Clone, Debug)]
pub(crate) struct TableOptions {
    /// A data block is cut once its contents reach this size (default 4096). Smaller blocks
    /// make point reads cheaper and the index larger.
    pub block_bytes: usize,
    /// Every this many entries a key is stored whole rather than prefix-compressed (default 16;
    /// 0 is treated as 1). Smaller intervals make seeks within a block cheaper and blocks larger.
    pub restart_interval: usize,
    /// Bloom filter bits per distinct user key (default 10, about 1% false positives); 0 writes
    /// no filter block.
    pub bloom_bits_per_key: usize,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions { block_bytes: 4096, restart_interval: 16, bloom_bits_per_key: 10 }
    }
}

/// What a table holds, recorded in its properties block and checked against the file at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableProperties {
    /// User key of the first entry in internal order.
    pub smallest_key: Bytes,
    /// Sequence number of the first entry.
    pub smallest_seq: u64,
    /// User key of the last entry in internal order.
    pub largest_key: Bytes,
    /// Sequence number of the last entry.
    pub largest_seq: u64,
    /// Smallest sequence number of any entry.
    pub min_seq: u64,
    /// Largest sequence number of any entry.
    pub max_seq: u64,
    /// Number of entries (versions), tombstones included.
    pub entries: u64,
    /// Number of tombstones among them.
    pub tombstones: u64,
    /// Number of data blocks.
    pub data_blocks: u64,
    /// Size of the whole file.
    pub file_bytes: u64,
}

/// Counters the read path bumps; shared by all tables of a database.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    /// Data blocks fetched from the file (cache misses, and every read without a cache).
    pub data_block_reads: AtomicU64,
    /// Point lookups that consulted a filter.
    pub bloom_checks: AtomicU64,
    /// ...and were told the key is absent, so no data block was read.
    pub bloom_negatives: AtomicU64,
    /// Bytes read from table files, blocks and footers alike.
    pub bytes_read: AtomicU64,
    /// Tables open now: held by the table cache, by iterators, or both.
    pub tables_open: AtomicU64,
}

/// The file name of table number `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("{number:06}.sst")
}

/// The number of a table file name, if `name` is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    crate::wal::parse_numbered(name, "", ".sst")
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(7), "000007.sst");
        assert_eq!(parse_file_name("000007.sst"), Some(7));
        assert_eq!(parse_file_name("1234567.sst"), Some(1234567));
        assert_eq!(parse_file_name(".sst"), None);
        assert_eq!(parse_file_name("0x01.sst"), None);
        assert_eq!(parse_file_name("000001.log"), None);
        assert_eq!(parse_file_name("99999999999999999999999.sst"), None);
    }
}
