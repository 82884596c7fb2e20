//! One file's contents as the disk holds them: a current image, a durable image, the record of
//! which 4 KiB blocks differ between the two, and the sectors the medium can no longer read.
//!
//! Invariant: every byte where the current image may differ from what a successful sync would
//! leave in the durable image lies in a block of `dirty`, except bytes whose sync failed (those
//! are deliberately forgotten, so a later sync does not make them durable), zeros that either
//! image gains by growing, and bits rotted at rest (which change both images alike).

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::ops::Range;

/// The granularity at which a crash keeps or drops unsynced data, as a page cache writes back.
pub const BLOCK_SIZE: usize = 4096;

/// The granularity at which the device writes atomically; a torn write tears at these.
pub const SECTOR_SIZE: usize = 512;

const _: () = assert!(BLOCK_SIZE.is_multiple_of(SECTOR_SIZE));

/// The largest file the in-memory disk accepts. Simulated databases are small; an offset past
/// this is a bug in the caller, and refusing it beats trying to allocate it.
pub const FILE_SIZE_MAX: u64 = 1 << 32;

/// A file's two images and what is unsynced between them.
#[derive(Clone, Default)]
pub(super) struct FileData {
    /// What reads see.
    pub(super) current: Vec<u8>,
    /// What survives a crash.
    pub(super) durable: Vec<u8>,
    /// Indices of the blocks written (or cut off by a truncate) since the last sync.
    pub(super) dirty: BTreeSet<usize>,
    /// The byte range of the last write, while it is unsynced: a crash may tear it.
    pub(super) last_write: Option<Range<usize>>,
    /// Sectors (by index) whose reads fail with EIO: latent sector errors of the medium. They
    /// outlive crashes; a write covering a whole sector remaps it, as drives do.
    pub(super) bad_sectors: BTreeSet<u64>,
}

impl FileData {
    /// A file as found on a fresh boot: everything on it is durable; its bad sectors stay bad.
    pub(super) fn booted(image: Vec<u8>, bad_sectors: BTreeSet<u64>) -> Self {
        FileData {
            current: image.clone(),
            durable: image,
            dirty: BTreeSet::new(),
            last_write: None,
            bad_sectors,
        }
    }

    /// Copies bytes at `offset` into `buf`; returns how many (0 at or past the end). Fails with
    /// EIO if the range touches a bad sector.
    pub(super) fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.current.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(buf.len()).min(len);
        if start < end {
            let sectors = (start / SECTOR_SIZE) as u64..=((end - 1) / SECTOR_SIZE) as u64;
            if self.bad_sectors.range(sectors).next().is_some() {
                return Err(io::Error::from_raw_os_error(super::EIO));
            }
        }
        buf[..end - start].copy_from_slice(&self.current[start..end]);
        Ok(end - start)
    }

    /// Whether byte `offset` is synced: inside the durable image, in a block no unsynced write
    /// touched, and read back as it is stored.
    pub(super) fn is_synced(&self, offset: usize) -> bool {
        offset < self.durable.len()
            && offset < self.current.len()
            && !self.dirty.contains(&(offset / BLOCK_SIZE))
            && self.durable[offset] == self.current[offset]
    }

    /// Rots byte `offset` at rest: flips the bits of `mask` in the stored copy, which every later
    /// read and every crash image then shows. Only synced bytes rot (see `is_synced`); returns
    /// whether this one did.
    pub(super) fn rot(&mut self, offset: usize, mask: u8) -> bool {
        if mask == 0 || !self.is_synced(offset) {
            return false;
        }
        self.durable[offset] ^= mask;
        self.current[offset] ^= mask;
        true
    }

    /// Marks the sector holding byte `offset` unreadable, if that byte is synced.
    pub(super) fn break_sector(&mut self, offset: usize) -> bool {
        if !self.is_synced(offset) {
            return false;
        }
        self.bad_sectors.insert((offset / SECTOR_SIZE) as u64)
    }

    /// Makes the sector holding byte `offset` readable again (the drive remapped it, its data
    /// intact); returns whether it was bad.
    pub(super) fn heal_sector(&mut self, offset: usize) -> bool {
        self.bad_sectors.remove(&((offset / SECTOR_SIZE) as u64))
    }

    /// Writes `data` at `offset`, zero-filling any gap past the end.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            // pwrite of nothing changes nothing, not even the size.
            return Ok(());
        }
        let range = checked_range(offset, data.len())?;
        put(&mut self.current, range.start, data);
        // A whole-sector write remaps the sector; a partial one leaves it bad.
        let first = range.start.div_ceil(SECTOR_SIZE) as u64;
        let end = (range.end / SECTOR_SIZE) as u64;
        if !self.bad_sectors.is_empty() && first < end {
            let remapped: Vec<u64> = self.bad_sectors.range(first..end).copied().collect();
            for sector in remapped {
                self.bad_sectors.remove(&sector);
            }
        }
        self.mark_dirty(range.clone());
        self.last_write = Some(range);
        Ok(())
    }

    /// Sets the current size, dropping bytes or appending zeros.
    pub(super) fn truncate(&mut self, len: u64) -> io::Result<()> {
        let len = checked_range(len, 0)?.start;
        let old = self.current.len();
        // A shrink cuts off bytes that the durable image still holds; if the file later grows
        // again, a sync must overwrite them with the zeros reads see, so they count as dirty.
        let hi = old.max(self.durable.len());
        let lo = len.min(old);
        if lo < hi {
            self.mark_dirty(lo..hi);
        }
        self.current.resize(len, 0);
        Ok(())
    }

    /// A successful sync: the dirty blocks and the current size become durable.
    pub(super) fn sync(&mut self) {
        let len = self.current.len();
        self.durable.truncate(len);
        for &block in &self.dirty {
            let range = block_range(block, len);
            if range.is_empty() {
                break;
            }
            put(&mut self.durable, range.start, &self.current[range]);
        }
        // Growth no write touched (a zero-extending truncate) reaches the disk as zeros.
        self.durable.resize(len, 0);
        self.dirty.clear();
        self.last_write = None;
    }

    /// A failed sync, as on ext4 and XFS: the dirty blocks are marked clean without reaching
    /// the durable image. Reads keep returning them, no later sync writes them, and a crash
    /// reverts them to the durable content.
    pub(super) fn fail_sync(&mut self) {
        self.dirty.clear();
        self.last_write = None;
    }

    fn mark_dirty(&mut self, range: Range<usize>) {
        debug_assert!(!range.is_empty(), "an empty range dirties nothing");
        let first = range.start / BLOCK_SIZE;
        let last = (range.end - 1) / BLOCK_SIZE;
        self.dirty.extend(first..=last);
    }
}

/// Writes `data` into `image` at `at`, growing it as needed: zeros fill any gap before `at`,
/// and bytes past the end are appended rather than zeroed first and then overwritten (most
/// writes append, and zeroing them first was about 3% of a simulation's instructions).
fn put(image: &mut Vec<u8>, at: usize, data: &[u8]) {
    if at > image.len() {
        image.resize(at, 0);
    }
    let inside = (image.len() - at).min(data.len());
    image[at..at + inside].copy_from_slice(&data[..inside]);
    image.extend_from_slice(&data[inside..]);
}

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileData")
            .field("current_len", &self.current.len())
            .field("durable_len", &self.durable.len())
            .field("dirty_blocks", &self.dirty.len())
            .field("last_write", &self.last_write)
            .finish()
    }
}

/// The bytes of `block` that lie below `len` (empty if the block starts at or past `len`).
pub(super) fn block_range(block: usize, len: usize) -> Range<usize> {
    let start = (block * BLOCK_SIZE).min(len);
    let end = ((block + 1) * BLOCK_SIZE).min(len);
    start..end
}

/// `offset..offset + len` as memory indices, refused past [`FILE_SIZE_MAX`].
fn checked_range(offset: u64, len: usize) -> io::Result<Range<usize>> {
    let end = offset.checked_add(len as u64).filter(|&end| end <= FILE_SIZE_MAX);
    match end {
        // Both fit in usize: FILE_SIZE_MAX does on every platform this crate builds for.
        Some(end) => Ok(offset as usize..end as usize),
        None => Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("offset {offset} + {len} bytes is past the in-memory limit of {FILE_SIZE_MAX}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_copies_dirty_blocks_and_size() {
        let mut f = FileData::default();
        f.write(5000, b"abc").unwrap();
        assert_eq!(f.dirty.iter().copied().collect::<Vec<_>>(), [1]);
        f.sync();
        assert_eq!(f.durable, f.current);
        assert!(f.dirty.is_empty());
        assert_eq!(f.last_write, None);
    }

    #[test]
    fn shrink_then_grow_syncs_the_zeros_reads_see() {
        let mut f = FileData::default();
        f.write(0, &[7u8; 10_000]).unwrap();
        f.sync();
        f.truncate(100).unwrap();
        f.write(8000, b"x").unwrap();
        f.sync();
        assert_eq!(f.durable, f.current);
        assert!(f.durable[100..8000].iter().all(|&b| b == 0));
    }

    #[test]
    fn failed_sync_is_never_made_durable_later() {
        let mut f = FileData::default();
        f.write(0, b"old").unwrap();
        f.sync();
        f.write(0, b"new").unwrap();
        f.fail_sync();
        f.sync();
        assert_eq!(f.current, b"new");
        assert_eq!(f.durable, b"old");
    }

    #[test]
    fn writes_overwrite_extend_and_fill_gaps_with_zeros() {
        let mut f = FileData::default();
        f.write(2, b"ab").unwrap();
        assert_eq!(f.current, b"\0\0ab");
        f.write(3, b"xyz").unwrap();
        assert_eq!(f.current, b"\0\0axyz");
        f.write(0, b"q").unwrap();
        assert_eq!(f.current, b"q\0axyz");
    }

    #[test]
    fn growth_whose_sync_failed_becomes_durable_as_zeros() {
        let mut f = FileData::default();
        f.write(0, b"kept").unwrap();
        f.sync();
        f.write(BLOCK_SIZE as u64, b"lost").unwrap();
        f.fail_sync();
        f.write(3 * BLOCK_SIZE as u64, b"later").unwrap();
        f.sync();
        assert_eq!(f.durable.len(), f.current.len());
        assert_eq!(&f.durable[..4], b"kept");
        assert!(f.durable[4..3 * BLOCK_SIZE].iter().all(|&b| b == 0));
        assert_eq!(&f.durable[3 * BLOCK_SIZE..], b"later");
    }

    #[test]
    fn reads_stop_at_the_end() {
        let mut f = FileData::default();
        f.write(0, b"hello").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(f.read(3, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(f.read(5, &mut buf).unwrap(), 0);
        assert_eq!(f.read(u64::MAX, &mut buf).unwrap(), 0);
    }

    #[test]
    fn only_synced_bytes_rot_and_bad_sectors_fail_reads_until_rewritten() {
        let mut f = FileData::default();
        f.write(0, &[1u8; 2 * SECTOR_SIZE]).unwrap();
        assert!(!f.rot(0, 0xff), "unsynced bytes are not at rest");
        f.sync();
        assert!(f.rot(10, 0x04));
        assert_eq!((f.current[10], f.durable[10]), (5, 5));
        assert!(f.break_sector(SECTOR_SIZE + 3));
        let mut buf = [0u8; 16];
        assert_eq!(f.read(0, &mut buf).unwrap(), 16, "the first sector still reads");
        let err = f.read(SECTOR_SIZE as u64 - 4, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(super::super::EIO));
        f.write(SECTOR_SIZE as u64 + 1, b"partial").unwrap();
        assert!(f.read(SECTOR_SIZE as u64, &mut buf).is_err(), "a partial write remaps nothing");
        f.write(SECTOR_SIZE as u64, &[2u8; SECTOR_SIZE]).unwrap();
        assert_eq!(f.read(SECTOR_SIZE as u64, &mut buf).unwrap(), 16);
    }

    #[test]
    fn offsets_past_the_limit_are_refused() {
        let mut f = FileData::default();
        let err = f.write(FILE_SIZE_MAX, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(f.write(u64::MAX, b"x").is_err());
    }
}
