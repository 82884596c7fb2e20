//! An open table: its footer, index, filter and properties held in memory, data blocks read on
//! demand through the block cache.
//!
//! Invariant: every block handed to a decoder came through `unseal` (checksum and type
//! verified) straight from the file or from the cache, which only holds verified blocks; a
//! failed check is a `Corruption` error naming the file and the block's offset.

use super::block::{unseal, Block, BlockIter, BlockType, Malformed};
use super::filter::{BloomFilter, Layout};
use super::footer::{BlockHandle, Footer, FOOTER_BYTES};
use super::iter::TableIter;
use super::{properties, ReadStats, TableProperties};
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::memory::{Charge, Component, MemoryBudget};
use crate::runtime::{read_exact_at, File};
use bytes::Bytes;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a point lookup found in a table.
#[derive(Debug)]
pub(crate) struct Hit {
    #[cfg(test)]
    pub seq: u64,
    /// `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Whether `value` is a blob pointer rather than the value.
    pub blob: bool,
}

/// An open, verified table file.
pub(crate) struct Table {
    file: Box<dyn File>,
    path: PathBuf,
    file_number: u64,
    /// Where the footer starts: every block ends at or before it.
    footer_offset: u64,
    index: Block,
    index_offset: u64,
    filter: Option<BloomFilter>,
    properties: TableProperties,
    cache: Option<Arc<BlockCache>>,
    stats: Arc<ReadStats>,
    /// The budget its memory is charged to, and the charge, once the table cache holds it.
    budget: Option<Arc<MemoryBudget>>,
    _charge: Option<Charge>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("file_number", &self.file_number)
            .field("properties", &self.properties)
            .finish_non_exhaustive()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.stats.tables_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Table {
    /// Reads and verifies the footer, index, filter and properties blocks. `file_bytes` is the
    /// size the engine recorded for the table; a file of another size is corrupt.
    pub(crate) async fn open(
        file: Box<dyn File>,
        path: PathBuf,
        file_number: u64,
        file_bytes: u64,
        cache: Option<Arc<BlockCache>>,
        stats: Arc<ReadStats>,
    ) -> Result<Table> {
        let src = Source { file: file.as_ref(), path: &path, stats: &stats };
        let footer_offset = check_size(file.as_ref(), &path, file_bytes).await?;
        let tail = src.tail(footer_offset).await?;
        let footer = tail.footer;
        let index = tail.verified(&src, footer.index, BlockType::Index)?;
        let index =
            Block::new(index).map_err(|m| src.corrupt(m, footer.index, BlockType::Index))?;
        let block_count = count_data_blocks(&index, footer_offset)
            .map_err(|m| src.corrupt(m, footer.index, BlockType::Index))?;
        let filter = match footer.filter {
            Some(handle) => {
                let contents = tail.verified(&src, handle, BlockType::Filter)?;
                let layout = match footer.version {
                    1 => Layout::Plain,
                    _ => Layout::Blocked,
                };
                let filter = BloomFilter::decode(contents, layout)
                    .map_err(|m| src.corrupt(m, handle, BlockType::Filter))?;
                Some(filter)
            }
            None => None,
        };
        let contents = tail.verified(&src, footer.properties, BlockType::Properties)?;
        let properties = src.properties(contents, footer.properties, file_bytes, block_count)?;
        stats.tables_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Table {
            file,
            path,
            file_number,
            footer_offset,
            index,
            index_offset: footer.index.offset,
            filter,
            properties,
            cache,
            stats,
            budget: None,
            _charge: None,
        })
    }

    /// Charges the table's memory (index, filter and the rest it keeps) to `budget` for as
    /// long as it is open, and the data blocks its cursors hold outside the block cache.
    pub(crate) fn within(mut self, budget: &Arc<MemoryBudget>) -> Table {
        self._charge = Some(budget.charge(Component::Tables, self.memory_bytes()));
        self.budget = Some(Arc::clone(budget));
        self
    }

    /// The bytes an open table keeps in memory: its index and filter blocks, and itself.
    pub(crate) fn memory_bytes(&self) -> u64 {
        let filter = self.filter.as_ref().map_or(0, BloomFilter::bytes);
        (self.index.len() + filter + std::mem::size_of::<Table>()) as u64
    }

    pub(crate) fn properties(&self) -> &TableProperties {
        &self.properties
    }

    #[cfg(test)]
    pub(crate) fn file_number(&self) -> u64 {
        self.file_number
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the filter admits `user_key` (always true without a filter).
    #[cfg(test)]
    pub(crate) fn may_contain(&self, user_key: &[u8]) -> bool {
        self.filter.as_ref().is_none_or(|f| f.may_contain(user_key))
    }

    /// The newest version of `user_key` with a sequence number at most `read_seq`: `None` if
    /// the table has none, `Some((seq, None))` for a tombstone. Consults the filter first.
    #[cfg(test)]
    pub(crate) async fn get(
        &self,
        user_key: &[u8],
        read_seq: u64,
    ) -> Result<Option<(u64, Option<Bytes>)>> {
        Ok(self.find(user_key, read_seq).await?.map(|hit| (hit.seq, hit.value)))
    }

    /// As `get`, and whether the value found is a blob pointer.
    pub(crate) async fn find(&self, user_key: &[u8], read_seq: u64) -> Result<Option<Hit>> {
        if let Some(filter) = &self.filter {
            self.stats.bloom_checks.fetch_add(1, Ordering::Relaxed);
            if !filter.may_contain(user_key) {
                self.stats.bloom_negatives.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        let mut index = BlockIter::new(self.index.clone(), BlockType::Index);
        index.seek(user_key, read_seq).map_err(|m| self.index_corrupt(m))?;
        if !index.valid() {
            return Ok(None);
        }
        let handle = self.data_handle(index.value())?;
        let mut it = BlockIter::new(self.data_block(handle, true).await?, BlockType::Data);
        it.seek(user_key, read_seq).map_err(|m| self.corrupt(m, handle, BlockType::Data))?;
        if !it.valid() {
            // The index key is the block's last key and sorts at or after the target, so the
            // block must hold an entry at or after it.
            let m = Malformed("ends before the key its index entry names");
            return Err(self.corrupt(m, handle, BlockType::Data));
        }
        if it.user_key() != user_key {
            return Ok(None);
        }
        let value = (!it.is_tombstone()).then(|| it.value_bytes());
        Ok(Some(Hit {
            #[cfg(test)]
            seq: it.seq(),
            value,
            blob: it.is_blob(),
        }))
    }

    /// A cursor whose reads fill the block cache, for reads users make.
    pub(crate) fn iter(self: &Arc<Self>) -> TableIter {
        TableIter::new(Arc::clone(self), self.index_iter(), true)
    }

    /// A cursor whose reads leave the block cache as it is (blocks already there are used),
    /// for compaction, as RocksDB's `fill_cache = false`: a compaction reads each block of
    /// its inputs once, and cached, those blocks would push out what users read (an
    /// overwrite run of 1M keys missed the cache 44,151 times with no user reads at all).
    pub(crate) fn iter_uncached(self: &Arc<Self>) -> TableIter {
        TableIter::new(Arc::clone(self), self.index_iter(), false)
    }

    fn index_iter(&self) -> BlockIter {
        BlockIter::new(self.index.clone(), BlockType::Index)
    }

    /// Decodes an index entry's value as the handle of a data block inside the file.
    pub(crate) fn data_handle(&self, value: &[u8]) -> Result<BlockHandle> {
        decode_data_handle(value, self.footer_offset).map_err(|m| self.index_corrupt(m))
    }

    /// The verified contents of a data block, from the cache or the file; one read from the
    /// file goes into the cache if `fill_cache`.
    pub(crate) async fn data_block(&self, handle: BlockHandle, fill_cache: bool) -> Result<Block> {
        Ok(self.data_block_held(handle, fill_cache).await?.0)
    }

    /// [`Table::data_block`], with a charge to the memory budget if the block is held outside
    /// the block cache (not found there and not put there), for a cursor to keep with it.
    pub(crate) async fn data_block_held(
        &self,
        handle: BlockHandle,
        fill_cache: bool,
    ) -> Result<(Block, Option<Charge>)> {
        let cached = self.cache.as_ref().and_then(|c| c.get(self.file_number, handle.offset));
        let (contents, outside) = match cached {
            Some(contents) => (contents, false),
            None => {
                let contents = self.read_verified(handle, BlockType::Data).await?;
                self.stats.data_block_reads.fetch_add(1, Ordering::Relaxed);
                let cached = match self.cache.as_ref().filter(|_| fill_cache) {
                    Some(cache) => cache.insert(self.file_number, handle.offset, contents.clone()),
                    None => false,
                };
                (contents, !cached)
            }
        };
        let charge = match &self.budget {
            Some(budget) if outside => {
                Some(budget.charge(Component::Iterators, contents.len() as u64))
            }
            _ => None,
        };
        let block = Block::new(contents).map_err(|m| self.corrupt(m, handle, BlockType::Data))?;
        Ok((block, charge))
    }

    async fn read_verified(&self, handle: BlockHandle, block_type: BlockType) -> Result<Bytes> {
        debug_assert!(handle.fits_before(self.footer_offset));
        self.source().read_verified(handle, block_type).await
    }

    fn source(&self) -> Source<'_> {
        Source { file: self.file.as_ref(), path: &self.path, stats: &self.stats }
    }

    pub(crate) fn corrupt(&self, m: Malformed, handle: BlockHandle, t: BlockType) -> Error {
        self.source().corrupt(m, handle, t)
    }

    pub(crate) fn index_corrupt(&self, m: Malformed) -> Error {
        m.at(&self.path, self.index_offset, BlockType::Index.name())
    }
}

/// Checks the file's real size against the recorded one; returns where the footer starts.
async fn check_size(file: &dyn File, path: &Path, file_bytes: u64) -> Result<u64> {
    let actual = file.size().await.map_err(|e| Error::io("reading the size of", path, e))?;
    if actual != file_bytes {
        return Err(Error::corruption(
            path,
            actual.min(file_bytes),
            format!("table file is {actual} bytes but {file_bytes} were recorded"),
        ));
    }
    file_bytes.checked_sub(FOOTER_BYTES as u64).ok_or_else(|| {
        Error::corruption(
            path,
            0,
            format!("table file of {file_bytes} bytes is shorter than its footer"),
        )
    })
}

/// How many bytes an open reads from the end of a table at once: the footer and, for all but
/// tables with very large filters or indexes, the metadata blocks before it (RocksDB prefetches
/// a table's tail the same way). A table opened this way costs one read where it cost four.
const TAIL_PREFETCH_BYTES: u64 = 4 << 10;

/// A table's tail as read at open: its footer, and the bytes from `base` to the end of the
/// file, which hold every block the footer names.
struct Tail {
    footer: Footer,
    base: u64,
    bytes: Vec<u8>,
}

impl Tail {
    /// The contents of the block at `handle`, its checksum and type verified.
    fn verified(&self, src: &Source<'_>, handle: BlockHandle, t: BlockType) -> Result<Bytes> {
        let start = (handle.offset - self.base) as usize;
        let raw = &self.bytes[start..start + handle.sealed_len()];
        unseal(Bytes::copy_from_slice(raw), t).map_err(|m| src.corrupt(m, handle, t))
    }
}

/// Where an open reads from: the file, its path for errors, and the counters to bump.
struct Source<'a> {
    file: &'a dyn File,
    path: &'a Path,
    stats: &'a ReadStats,
}

impl Source<'_> {
    /// Reads the table's tail: the footer, and the filter, index and properties blocks that
    /// lie before it, in one read when they fit in [`TAIL_PREFETCH_BYTES`] with the footer and
    /// in one more otherwise.
    async fn tail(&self, footer_offset: u64) -> Result<Tail> {
        let file_bytes = footer_offset + FOOTER_BYTES as u64;
        let start = file_bytes.saturating_sub(TAIL_PREFETCH_BYTES);
        let mut bytes = self.read_at(start, (file_bytes - start) as usize).await?;
        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_BYTES..], footer_offset)
            .map_err(|m| m.at(self.path, footer_offset, "footer"))?;
        // The decoded handles all end before the footer.
        let meta_start = [Some(footer.index), footer.filter, Some(footer.properties)]
            .into_iter()
            .flatten()
            .map(|h| h.offset)
            .min()
            .unwrap_or(start);
        let base = meta_start.min(start);
        if base < start {
            let mut before = self.read_at(base, (start - base) as usize).await?;
            before.extend_from_slice(&bytes);
            bytes = before;
        }
        Ok(Tail { footer, base, bytes })
    }

    /// Reads `len` bytes at `offset`, counting them.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        read_exact_at(self.file, offset, &mut bytes)
            .await
            .map_err(|e| Error::io("reading", self.path, e))?;
        self.stats.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Checks the properties against the file size and the index.
    fn properties(
        &self,
        contents: Bytes,
        handle: BlockHandle,
        file_bytes: u64,
        data_blocks: u64,
    ) -> Result<TableProperties> {
        let corrupt = |m| self.corrupt(m, handle, BlockType::Properties);
        let props = properties::decode(&contents).map_err(corrupt)?;
        if props.file_bytes != file_bytes || props.data_blocks != data_blocks {
            return Err(corrupt(Malformed("disagree with the file size or the index")));
        }
        Ok(props)
    }

    /// Reads a block and its trailer and verifies the checksum and type.
    async fn read_verified(&self, handle: BlockHandle, block_type: BlockType) -> Result<Bytes> {
        let raw = self.read_at(handle.offset, handle.sealed_len()).await?;
        unseal(Bytes::from(raw), block_type).map_err(|m| self.corrupt(m, handle, block_type))
    }

    fn corrupt(&self, m: Malformed, handle: BlockHandle, t: BlockType) -> Error {
        m.at(self.path, handle.offset, t.name())
    }
}

/// Decodes an index entry's value as the handle of a data block before the footer.
fn decode_data_handle(value: &[u8], footer_offset: u64) -> Result<BlockHandle, Malformed> {
    match BlockHandle::decode(value) {
        Some(handle) if handle.fits_before(footer_offset) => Ok(handle),
        _ => Err(Malformed("bad data block handle")),
    }
}

/// Checks every index entry's handle and returns how many data blocks the index lists.
fn count_data_blocks(index: &Block, footer_offset: u64) -> Result<u64, Malformed> {
    let mut it = BlockIter::new(index.clone(), BlockType::Index);
    let mut count = 0u64;
    it.seek_to_first()?;
    while it.valid() {
        decode_data_handle(it.value(), footer_offset)?;
        count += 1;
        it.next()?;
    }
    Ok(count)
}
