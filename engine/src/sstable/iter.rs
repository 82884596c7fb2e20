//! A two-level cursor over a table: an index cursor picks the data block, a block cursor walks
//! its entries; data blocks are loaded lazily, through the block cache.
//!
//! Invariant: when valid, the data cursor is positioned inside the block the index cursor
//! names, and the entry it shows is the one internal order puts there. After an error the
//! cursor is invalid (never positioned on a guess), and every skip over blocks moves the index
//! cursor forwards or backwards only, so no call loops forever.

use super::block::{BlockIter, BlockType, Malformed};
use super::footer::BlockHandle;
use super::reader::Table;
use crate::error::Result;
use crate::memory::Charge;
use std::fmt;
use std::sync::Arc;

/// A cursor over a table's entries in internal order, both directions.
pub(crate) struct TableIter {
    table: Arc<Table>,
    index: BlockIter,
    /// The loaded data block and its handle; `None` when not positioned in a block.
    data: Option<(BlockHandle, BlockIter)>,
    /// The memory budget's charge for the loaded block, if it is held outside the cache.
    held: Option<Charge>,
    /// Whether blocks read from the file go into the block cache.
    fill_cache: bool,
}

impl fmt::Debug for TableIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableIter")
            .field("table", &self.table.path())
            .field("block", &self.data.as_ref().map(|(h, _)| h.offset))
            .field("valid", &self.valid())
            .finish()
    }
}

impl TableIter {
    pub(super) fn new(table: Arc<Table>, index: BlockIter, fill_cache: bool) -> Self {
        TableIter { table, index, data: None, held: None, fill_cache }
    }

    pub(crate) async fn seek_to_first(&mut self) -> Result<()> {
        let r = self.index.seek_to_first();
        self.index_step(r)?;
        self.load_block(|b| b.seek_to_first()).await?;
        self.skip_forward().await
    }

    pub(crate) async fn seek_to_last(&mut self) -> Result<()> {
        let r = self.index.seek_to_last();
        self.index_step(r)?;
        self.load_block(|b| b.seek_to_last()).await?;
        self.skip_backward().await
    }

    /// Positions at the first entry at or after `(user_key, seq)` in internal order. Sequence
    /// numbers sort descending, so `seek(k, read_seq)` lands on k's newest version at or below
    /// `read_seq` if there is one.
    pub(crate) async fn seek(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        let r = self.index.seek(user_key, seq);
        self.index_step(r)?;
        self.load_block(|b| b.seek(user_key, seq)).await?;
        self.skip_forward().await
    }

    /// Positions at the last entry strictly before `(user_key, seq)` in internal order.
    pub(crate) async fn seek_before(&mut self, user_key: &[u8], seq: u64) -> Result<()> {
        self.seek(user_key, seq).await?;
        if self.valid() {
            self.prev().await
        } else {
            self.seek_to_last().await
        }
    }

    pub(crate) async fn next(&mut self) -> Result<()> {
        if let Some((handle, block)) = &mut self.data {
            let (handle, r) = (*handle, block.next());
            self.block_step(handle, r)?;
        }
        self.skip_forward().await
    }

    pub(crate) async fn prev(&mut self) -> Result<()> {
        if let Some((handle, block)) = &mut self.data {
            let (handle, r) = (*handle, block.prev());
            self.block_step(handle, r)?;
        }
        self.skip_backward().await
    }

    pub(crate) fn valid(&self) -> bool {
        self.data.as_ref().is_some_and(|(_, b)| b.valid())
    }

    /// The current entry's user key; only meaningful when valid.
    pub(crate) fn user_key(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], |(_, b)| b.user_key())
    }

    /// The current entry's sequence number; only meaningful when valid.
    pub(crate) fn seq(&self) -> u64 {
        self.data.as_ref().map_or(0, |(_, b)| b.seq())
    }

    /// The current entry's value, `None` for a tombstone; only meaningful when valid.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        let (_, b) = self.data.as_ref()?;
        (!b.is_tombstone()).then(|| b.value())
    }

    /// Whether the current entry's value is a blob pointer (`value` returns the pointer);
    /// only meaningful when valid.
    pub(crate) fn is_blob(&self) -> bool {
        self.data.as_ref().is_some_and(|(_, b)| b.is_blob())
    }

    /// The table walked.
    pub(crate) fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The path of the table, for errors about its entries.
    pub(crate) fn path(&self) -> &std::path::Path {
        self.table.path()
    }

    /// While the data cursor has run off its block, moves to the next block's first entry.
    async fn skip_forward(&mut self) -> Result<()> {
        while self.data.as_ref().is_some_and(|(_, b)| !b.valid()) {
            let r = self.index.next();
            self.index_step(r)?;
            self.load_block(|b| b.seek_to_first()).await?;
        }
        Ok(())
    }

    /// While the data cursor has run off its block, moves to the previous block's last entry.
    async fn skip_backward(&mut self) -> Result<()> {
        while self.data.as_ref().is_some_and(|(_, b)| !b.valid()) {
            let r = self.index.prev();
            self.index_step(r)?;
            self.load_block(|b| b.seek_to_last()).await?;
        }
        Ok(())
    }

    /// Loads the block the index cursor names (reusing the loaded one if it is the same) and
    /// positions in it with `position`; without an index entry the cursor becomes invalid.
    async fn load_block(
        &mut self,
        position: impl FnOnce(&mut BlockIter) -> Result<(), Malformed>,
    ) -> Result<()> {
        if !self.index.valid() {
            self.data = None;
            self.held = None;
            return Ok(());
        }
        let handle = self.table.data_handle(self.index.value());
        let handle = self.on_error(handle)?;
        let mut block = match self.data.take() {
            Some((loaded, block)) if loaded == handle => block,
            _ => {
                // The old block's charge goes first: the cursor holds one block at a time.
                self.held = None;
                let block = self.table.data_block_held(handle, self.fill_cache).await;
                let (block, held) = self.on_error(block)?;
                self.held = held;
                BlockIter::new(block, BlockType::Data)
            }
        };
        let r = position(&mut block);
        self.data = Some((handle, block));
        self.block_step(handle, r)
    }

    fn index_step(&mut self, r: Result<(), Malformed>) -> Result<()> {
        let r = r.map_err(|m| self.table.index_corrupt(m));
        self.on_error(r)
    }

    fn block_step(&mut self, handle: BlockHandle, r: Result<(), Malformed>) -> Result<()> {
        let r = r.map_err(|m| self.table.corrupt(m, handle, BlockType::Data));
        self.on_error(r)
    }

    /// Makes the cursor invalid if `r` is an error, so nothing is read from a bad position.
    fn on_error<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.data = None;
            self.held = None;
        }
        r
    }
}
