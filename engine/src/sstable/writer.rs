//! Writes a table from entries that arrive in internal order.
//!
//! Data blocks are sealed as they fill and gathered in a write buffer that goes to the file in
//! one call once it holds [`WRITE_BUFFER_BYTES`] (as RocksDB's `WritableFileWriter` and Pebble's
//! buffered writer do: tables of small blocks would otherwise cost one write call a block); the
//! filter, index and properties blocks and the footer are written by `finish` with what is left,
//! which then syncs the file. Invariant: the writer never writes a
//! table the reader would reject or misread: entries out of order, sequence numbers too large
//! for a trailer and oversized blocks are refused with an error before any byte of them is
//! written, and after a failed write every later call fails.

use super::block::{BlockBuilder, BlockType, BLOCK_TRAILER_BYTES};
use super::filter::FilterBuilder;
use super::footer::{BlockHandle, Footer, FOOTER_BYTES, FORMAT_VERSION, FORMAT_VERSION_BLOBS};
use super::{key, properties, TableOptions, TableProperties, BLOCK_BYTES_MAX};
use crate::error::{Error, Result};
use crate::runtime::File;
use bytes::Bytes;
use std::cmp::Ordering;
use std::path::PathBuf;

/// How many sealed bytes gather before they are written out in one call.
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// Every this many bytes written, the writer asks the file system to start writing them back
/// (`File::write_behind`): the sync that ends the table then has little left to write, and
/// an fsync of another file (a flush's table, a WAL, the MANIFEST) does not queue behind
/// megabytes of a compaction's dirty pages, which held writers up for tens of milliseconds.
const WRITE_BEHIND_BYTES: u64 = 1 << 20;

/// The index holds one entry per data block and is binary-searched entry by entry, so its keys
/// are all stored whole.
const INDEX_RESTART_INTERVAL: usize = 1;

/// Builds one table file.
pub(crate) struct TableWriter {
    file: Box<dyn File>,
    path: PathBuf,
    options: TableOptions,
    /// Bytes of the table so far: written to the file, then the `pending` ones.
    offset: u64,
    /// Sealed bytes not yet written, which end the table at `offset`.
    pending: Vec<u8>,
    /// How many bytes from the start the file system was asked to write back.
    written_behind: u64,
    data_block: BlockBuilder,
    index_block: BlockBuilder,
    filter: Option<FilterBuilder>,
    /// The encoded internal key of the last entry added.
    last_key: Vec<u8>,
    stats: Counts,
    /// Set when a write failed: the file's contents are unknown, so nothing more may be added.
    failed: bool,
}

/// Running totals for the properties block.
#[derive(Debug, Default)]
struct Counts {
    smallest: Option<(Bytes, u64)>,
    min_seq: u64,
    max_seq: u64,
    entries: u64,
    tombstones: u64,
    /// Tombstones and versions below their key's newest (see [`TableWriter::droppable`]).
    droppable: u64,
    data_blocks: u64,
    /// Entries holding blob pointers.
    blob_pointers: u64,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the pending blocks or filter hashes: they can be megabytes.
        f.debug_struct("TableWriter")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .field("entries", &self.stats.entries)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    pub(crate) fn new(file: Box<dyn File>, path: PathBuf, options: TableOptions) -> Self {
        let filter = (options.bloom_bits_per_key > 0)
            .then(|| FilterBuilder::new(options.bloom_bits_per_key));
        TableWriter {
            file,
            path,
            // Sized up front: a block fills to about `block_bytes` (plus its last entry), and
            // growing both buffers by doubling, table after table, cost more than writing them.
            data_block: BlockBuilder::with_capacity(options.restart_interval, options.block_bytes),
            index_block: BlockBuilder::new(INDEX_RESTART_INTERVAL),
            options,
            offset: 0,
            pending: Vec::with_capacity(WRITE_BUFFER_BYTES),
            written_behind: 0,
            filter,
            last_key: Vec::new(),
            stats: Counts { min_seq: u64::MAX, ..Counts::default() },
            failed: false,
        }
    }

    /// Adds an entry. Entries must come in strictly increasing internal order (user key
    /// ascending, then sequence number descending) with `seq <= SEQ_MAX`; anything else is a bug
    /// in the caller and is refused with `InvalidArgument` rather than written.
    pub(crate) async fn add(
        &mut self,
        user_key: &[u8],
        seq: u64,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let kind = key::kind_of(value);
        self.add_kind(user_key, seq, kind, value.unwrap_or_default()).await
    }

    /// Adds an entry whose value is in a blob file: `pointer` is the encoded
    /// `blob::BlobPointer`. Ordered as [`TableWriter::add`].
    pub(crate) async fn add_blob(
        &mut self,
        user_key: &[u8],
        seq: u64,
        pointer: &[u8],
    ) -> Result<()> {
        self.add_kind(user_key, seq, key::KIND_BLOB, pointer).await
    }

    async fn add_kind(&mut self, user_key: &[u8], seq: u64, kind: u8, value: &[u8]) -> Result<()> {
        self.check_add(user_key, seq, value.len())?;
        let new_user_key = self.stats.entries == 0 || key::parts(&self.last_key).0 != user_key;
        if let (true, Some(filter)) = (new_user_key, self.filter.as_mut()) {
            filter.add(user_key);
        }
        self.last_key.clear();
        key::encode(&mut self.last_key, user_key, seq, kind);
        self.data_block.add(&self.last_key, value);
        self.count(user_key, seq, kind == key::KIND_TOMBSTONE, new_user_key);
        self.stats.blob_pointers += u64::from(kind == key::KIND_BLOB);
        if self.data_block.size_estimate() >= self.options.block_bytes {
            self.flush_data_block().await?;
        }
        Ok(())
    }

    fn check_add(&self, user_key: &[u8], seq: u64, value_len: usize) -> Result<()> {
        if self.failed {
            return Err(self.failed_error());
        }
        if seq > key::SEQ_MAX {
            return Err(Error::InvalidArgument(format!("sequence number {seq} exceeds 2^56 - 1")));
        }
        if self.stats.entries > 0 {
            let (last_user, last_seq, _) = key::parts(&self.last_key);
            if key::compare(last_user, last_seq, user_key, seq) != Ordering::Less {
                return Err(Error::InvalidArgument(format!(
                    "table entries out of order: (key {user_key:?}, seq {seq}) after (key \
                     {last_user:?}, seq {last_seq})"
                )));
            }
        }
        let entry_bytes = 12 + user_key.len() + key::TRAILER_BYTES + value_len;
        if self.data_block.size_estimate() + entry_bytes + 4 > BLOCK_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "an entry of {entry_bytes} bytes does not fit a table block"
            )));
        }
        Ok(())
    }

    fn count(&mut self, user_key: &[u8], seq: u64, tombstone: bool, new_user_key: bool) {
        let s = &mut self.stats;
        if s.smallest.is_none() {
            s.smallest = Some((Bytes::copy_from_slice(user_key), seq));
        }
        s.min_seq = s.min_seq.min(seq);
        s.max_seq = s.max_seq.max(seq);
        s.entries += 1;
        s.tombstones += u64::from(tombstone);
        s.droppable += u64::from(tombstone || !new_user_key);
    }

    /// Entries added so far that a compaction could drop where no snapshot separates them from
    /// their key's newer version and no deeper level holds their key: tombstones, and every
    /// version of a key but its newest. The MANIFEST keeps the count, so that the background
    /// finds the bottom-level tables worth rewriting once the snapshots that held such entries
    /// are gone, without reading them.
    pub(crate) fn droppable(&self) -> u64 {
        self.stats.droppable
    }

    /// Bytes written so far plus the pending data block: what the file would hold if finished
    /// now, less the metadata blocks. Compaction uses it to split its output.
    pub(crate) fn estimated_bytes(&self) -> u64 {
        self.offset + self.data_block.size_estimate() as u64
    }

    /// Entries added so far.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> u64 {
        self.stats.entries
    }

    fn failed_error(&self) -> Error {
        Error::InvalidArgument(format!(
            "an earlier write to {} failed; the table must be discarded",
            self.path.display()
        ))
    }

    /// Appends a sealed block to the table and returns its handle.
    async fn write_block(&mut self, sealed: Vec<u8>) -> Result<BlockHandle> {
        self.pending.extend_from_slice(&sealed);
        self.block_appended(sealed.len()).await
    }

    /// Accounts for a sealed block of `len` bytes just appended to the write buffer and returns
    /// its handle. An oversized block fails the table: it never reaches the file.
    async fn block_appended(&mut self, len: usize) -> Result<BlockHandle> {
        debug_assert!(len >= BLOCK_TRAILER_BYTES);
        let size = (len - BLOCK_TRAILER_BYTES) as u64;
        if size > BLOCK_BYTES_MAX as u64 {
            self.failed = true;
            return Err(Error::InvalidArgument(format!(
                "a table block of {size} bytes is too large"
            )));
        }
        let handle = BlockHandle { offset: self.offset, size };
        self.appended(len).await?;
        Ok(handle)
    }

    /// Counts `len` bytes just appended to the write buffer, and writes the buffer out once it
    /// is full.
    async fn appended(&mut self, len: usize) -> Result<()> {
        self.offset += len as u64;
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Writes the buffered bytes to the file, in one call.
    async fn write_out(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.offset - self.pending.len() as u64;
        if let Err(e) = self.file.write_at(at, &self.pending).await {
            self.failed = true;
            return Err(Error::io("writing", &self.path, e));
        }
        self.pending.clear();
        let unhinted = self.offset - self.written_behind;
        if unhinted >= WRITE_BEHIND_BYTES {
            // Only a hint: if it fails, the sync at the end writes these bytes all the same.
            if let Err(e) = self.file.write_behind(self.written_behind, unhinted).await {
                tracing::debug!(table = %self.path.display(), error = %e, "write-behind failed");
            }
            self.written_behind = self.offset;
        }
        Ok(())
    }

    async fn flush_data_block(&mut self) -> Result<()> {
        debug_assert!(!self.data_block.is_empty());
        // Sealed straight into the write buffer: no allocation and no copy of its own.
        let len = self.data_block.finish_sealed_into(BlockType::Data, &mut self.pending);
        let handle = self.block_appended(len).await?;
        let mut value = Vec::with_capacity(16);
        handle.encode_to(&mut value);
        // The block's last key separates it from the next; no shorter separator is computed, so
        // the index holds real keys that a reader can check.
        self.index_block.add(&self.last_key, &value);
        self.stats.data_blocks += 1;
        Ok(())
    }

    /// Writes the filter, index and properties blocks and the footer, then syncs the file.
    /// Fails if no entry was added: an empty table has no key range to record.
    pub(crate) async fn finish(mut self) -> Result<TableProperties> {
        if self.failed {
            return Err(self.failed_error());
        }
        if self.stats.entries == 0 {
            return Err(Error::InvalidArgument("a table needs at least one entry".into()));
        }
        if !self.data_block.is_empty() {
            self.flush_data_block().await?;
        }
        let filter = match self.filter.take() {
            Some(builder) => {
                Some(self.write_meta_block(builder.finish(), BlockType::Filter).await?)
            }
            None => None,
        };
        let index = self.index_block.finish_sealed(BlockType::Index);
        let index = self.write_block(index).await?;
        let (properties, props_handle) = self.write_properties().await?;
        let version =
            if self.stats.blob_pointers > 0 { FORMAT_VERSION_BLOBS } else { FORMAT_VERSION };
        let footer = Footer { index, filter, properties: props_handle, version };
        let footer = footer.encode();
        self.pending.extend_from_slice(&footer);
        self.appended(footer.len()).await?;
        self.write_out().await?;
        debug_assert_eq!(self.offset, properties.file_bytes);
        if let Err(e) = self.file.sync_data().await {
            return Err(Error::io("syncing", &self.path, e));
        }
        Ok(properties)
    }

    async fn write_meta_block(
        &mut self,
        mut contents: Vec<u8>,
        t: BlockType,
    ) -> Result<BlockHandle> {
        super::block::seal(&mut contents, 0, t);
        self.write_block(contents).await
    }

    async fn write_properties(&mut self) -> Result<(TableProperties, BlockHandle)> {
        let (smallest_key, smallest_seq) = self.stats.smallest.clone().unwrap_or_default();
        let (largest_user, largest_seq, _) = key::parts(&self.last_key);
        let largest_key = Bytes::copy_from_slice(largest_user);
        let contents_len = properties::encoded_len(&smallest_key, &largest_key) as u64;
        let file_bytes =
            self.offset + contents_len + BLOCK_TRAILER_BYTES as u64 + FOOTER_BYTES as u64;
        let p = TableProperties {
            smallest_key,
            smallest_seq,
            largest_key,
            largest_seq,
            min_seq: self.stats.min_seq,
            max_seq: self.stats.max_seq,
            entries: self.stats.entries,
            tombstones: self.stats.tombstones,
            data_blocks: self.stats.data_blocks,
            file_bytes,
        };
        let handle = self.write_meta_block(properties::encode(&p), BlockType::Properties).await?;
        Ok((p, handle))
    }
}
