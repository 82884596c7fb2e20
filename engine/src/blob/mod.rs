//! Key-value separation: values of at least `Options::min_blob_size` bytes leave the LSM tree
//! for blob files, and the tables hold small pointers to them (RocksDB's integrated BlobDB,
//! Pebble's value separation, fjall's key-value separation). Compactions then rewrite keys and
//! pointers instead of whole values.
//!
//! A flush writes the blob file beside its table: values reach a blob file once, from the
//! memtable (the WAL holds them as it holds every value). The blob file is synced before the
//! MANIFEST edit that adds it and the table pointing into it, so no durable table ever points
//! at bytes that a crash could take.
//!
//! The version tracks every blob file with the bytes of its records that no table needs any
//! more (*garbage*): a compaction that drops an entry holding a pointer adds the record's
//! length in the same edit. A blob file all of whose record bytes are garbage leaves the
//! version; its file leaves the disk as a table does, once that edit is sealed and no version a
//! reader holds names it (see `version_set`).
//!
//! Reads go through [`BlobFiles`], a bounded cache of open blob files; values read for users
//! go into the block cache, keyed like blocks by file number and offset (file numbers are
//! unique across tables and blob files).

mod format;

pub(crate) use format::BlobPointer;

use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::runtime::{read_exact_at, File, RuntimeRef};
use crate::version::{BlobFileMeta, Version};
use bytes::Bytes;
use format::Footer;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The name of blob file `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("{number:06}.blob")
}

/// The number of a blob file's name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    crate::wal::parse_numbered(name, "", ".blob")
}

/// Bytes of records gathered before each write to the file.
const WRITE_BYTES: usize = 256 << 10;

/// Writes one blob file: records, then the footer, then an fsync.
pub(crate) struct BlobWriter {
    file: Box<dyn File>,
    path: PathBuf,
    number: u64,
    buf: Vec<u8>,
    /// Bytes written to the file so far.
    written: u64,
    records: u64,
    /// Planted (`PlantedBug::BlobNotSynced`): the file is never synced.
    skip_sync: bool,
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl BlobWriter {
    pub(crate) fn new(file: Box<dyn File>, path: PathBuf, number: u64) -> Self {
        BlobWriter { file, path, number, buf: Vec::new(), written: 0, records: 0, skip_sync: false }
    }

    /// Plants `PlantedBug::BlobNotSynced` if `yes`; for a writer just made.
    pub(crate) fn skipping_sync(mut self, yes: bool) -> Self {
        self.skip_sync = yes;
        self
    }

    /// Appends the record of `(key, value)` and returns the pointer to it.
    pub(crate) async fn add(&mut self, key: &[u8], value: &[u8]) -> Result<BlobPointer> {
        let offset = self.written + self.buf.len() as u64;
        let start = self.buf.len();
        let crc = format::encode_record(&mut self.buf, key, value);
        let len = (self.buf.len() - start) as u64;
        self.records += 1;
        if self.buf.len() >= WRITE_BYTES {
            self.write_buffered().await?;
        }
        Ok(BlobPointer { file: self.number, offset, len, crc })
    }

    async fn write_buffered(&mut self) -> Result<()> {
        self.file
            .write_at(self.written, &self.buf)
            .await
            .map_err(|e| Error::io("writing", &self.path, e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the footer and syncs the file. Its name is made durable by the caller's
    /// directory sync, before any MANIFEST edit names it.
    pub(crate) async fn finish(mut self) -> Result<BlobFileMeta> {
        let records_end = self.written + self.buf.len() as u64;
        Footer { records_end, records: self.records }.encode(&mut self.buf);
        self.write_buffered().await?;
        if !self.skip_sync {
            self.file.sync_data().await.map_err(|e| Error::io("syncing", &self.path, e))?;
        }
        Ok(BlobFileMeta {
            number: self.number,
            file_bytes: self.written,
            records: self.records,
            record_bytes: records_end,
        })
    }
}

/// One open blob file.
struct BlobReader {
    file: Box<dyn File>,
    path: PathBuf,
    records_end: u64,
}

impl BlobReader {
    async fn open(file: Box<dyn File>, path: PathBuf, file_bytes: u64) -> Result<BlobReader> {
        let footer_at = file_bytes.checked_sub(format::FOOTER_BYTES as u64).ok_or_else(|| {
            Error::corruption(&path, 0, format!("{file_bytes} bytes: too short for a blob file"))
        })?;
        let mut bytes = [0u8; format::FOOTER_BYTES];
        read_exact_at(file.as_ref(), footer_at, &mut bytes)
            .await
            .map_err(|e| read_error(&path, footer_at, e))?;
        let footer = Footer::decode(&bytes, file_bytes)
            .map_err(|why| Error::corruption(&path, footer_at, why))?;
        Ok(BlobReader { file, path, records_end: footer.records_end })
    }

    /// The whole record `pointer` names for `key`, verified, and where its value lies in it.
    async fn read(
        &self,
        pointer: &BlobPointer,
        key: &[u8],
    ) -> Result<(Bytes, std::ops::Range<usize>)> {
        let corrupt = |why: &str| Error::corruption(&self.path, pointer.offset, why.to_string());
        let end = pointer.offset.checked_add(pointer.len);
        if end.is_none_or(|end| end > self.records_end) {
            return Err(corrupt("a blob pointer past the file's records"));
        }
        let len = usize::try_from(pointer.len).map_err(|_| corrupt("a blob record too large"))?;
        let mut record = vec![0u8; len];
        read_exact_at(self.file.as_ref(), pointer.offset, &mut record)
            .await
            .map_err(|e| read_error(&self.path, pointer.offset, e))?;
        let range = format::decode_record(&record, pointer.crc, key).map_err(corrupt)?;
        Ok((Bytes::from(record), range))
    }
}

/// A read that ran past the end is a truncated file; other failures are I/O errors.
fn read_error(path: &std::path::Path, offset: u64, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corruption(path, offset, "the blob file ends early")
    } else {
        Error::io("reading", path, e)
    }
}

/// Open blob files by number, at most `open_max`, least recently used closed first.
pub(crate) struct BlobFiles {
    rt: RuntimeRef,
    dir: PathBuf,
    open_max: usize,
    block_cache: Option<Arc<BlockCache>>,
    open: Mutex<crate::lru::Lru<u64, Arc<BlobReader>>>,
}

impl fmt::Debug for BlobFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobFiles").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl BlobFiles {
    pub(crate) fn new(
        rt: RuntimeRef,
        dir: PathBuf,
        open_max: usize,
        block_cache: Option<Arc<BlockCache>>,
    ) -> Self {
        let open = Mutex::default();
        BlobFiles { rt, dir, open_max: open_max.max(1), block_cache, open }
    }

    fn lock(&self) -> MutexGuard<'_, crate::lru::Lru<u64, Arc<BlobReader>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value a table entry of `key` holding `pointer` (encoded) names, in a blob file of
    /// `version`, the version read: a pointer into a file it does not hold is corruption of the
    /// table holding the pointer, which `table` names. Fills the block cache if `fill_cache`.
    pub(crate) async fn value(
        &self,
        version: &Version,
        table: &std::path::Path,
        pointer: &[u8],
        key: &[u8],
        fill_cache: bool,
    ) -> Result<Bytes> {
        let Some(pointer) = BlobPointer::decode(pointer) else {
            return Err(Error::corruption(
                table,
                0,
                format!("a malformed blob pointer for key {key:?}"),
            ));
        };
        let Some(file_bytes) = version.blobs.get(&pointer.file).map(|b| b.file.file_bytes) else {
            return Err(Error::corruption(
                table,
                0,
                format!(
                    "a pointer for key {key:?} into blob file {}, which no version holds",
                    pointer.file
                ),
            ));
        };
        // The cache holds whole records, checked against their crc when read: a hit is checked
        // against the pointer (crc, lengths, key) as a read from the file is.
        if let Some(record) =
            self.block_cache.as_ref().and_then(|c| c.get(pointer.file, pointer.offset))
        {
            let range =
                format::decode_verified_record(&record, pointer.crc, key).map_err(|why| {
                    Error::corruption(self.dir.join(file_name(pointer.file)), pointer.offset, why)
                })?;
            return Ok(record.slice(range));
        }
        let reader = self.reader(pointer.file, file_bytes).await?;
        let (record, range) = reader.read(&pointer, key).await?;
        if let (true, Some(cache)) = (fill_cache, &self.block_cache) {
            cache.insert(pointer.file, pointer.offset, record.clone());
        }
        Ok(record.slice(range))
    }

    async fn reader(&self, number: u64, file_bytes: u64) -> Result<Arc<BlobReader>> {
        if let Some(reader) = self.lock().get(number).cloned() {
            return Ok(reader);
        }
        let path = self.dir.join(file_name(number));
        let file = self.rt.fs().open(&path).await.map_err(|e| Error::io("opening", &path, e))?;
        let opened = Arc::new(BlobReader::open(file, path, file_bytes).await?);
        let evicted = {
            let mut open = self.lock();
            if let Some(reader) = open.get(number) {
                return Ok(Arc::clone(reader));
            }
            open.insert(number, Arc::clone(&opened));
            let mut evicted = Vec::new();
            while open.len() > self.open_max {
                evicted.extend(open.pop_oldest());
            }
            evicted
        };
        // Closing files is I/O: after the lock is released.
        drop(evicted);
        Ok(opened)
    }

    /// Closes blob file `number` (once its readers are done) and drops its cached values: call
    /// it when the file is deleted.
    pub(crate) fn evict(&self, number: u64) {
        let evicted = self.lock().remove(number);
        drop(evicted);
        if let Some(cache) = &self.block_cache {
            cache.evict_file(number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use crate::testing::MemRuntime;
    use std::path::Path;

    const DIR: &str = "/db";

    async fn write(
        rt: &dyn Runtime,
        number: u64,
        values: &[(&[u8], Vec<u8>)],
    ) -> (BlobFileMeta, Vec<BlobPointer>) {
        let path = Path::new(DIR).join(file_name(number));
        let file = rt.fs().create(&path).await.unwrap();
        let mut w = BlobWriter::new(file, path, number);
        let mut pointers = Vec::new();
        for (k, v) in values {
            pointers.push(w.add(k, v).await.unwrap());
        }
        (w.finish().await.unwrap(), pointers)
    }

    /// The value `p` names for `key`, as read by a table of number 9 in a version holding the
    /// blob file `held` (none if `None`).
    async fn read(
        files: &BlobFiles,
        p: &BlobPointer,
        key: &[u8],
        held: Option<&BlobFileMeta>,
    ) -> Result<Bytes> {
        let mut pointer = Vec::new();
        p.encode(&mut pointer);
        let edit = crate::version::VersionEdit {
            added_blobs: held.into_iter().cloned().collect(),
            ..Default::default()
        };
        let version = Version::default().apply(&edit).unwrap();
        files.value(&version, Path::new("/db/000009.sst"), &pointer, key, true).await
    }

    #[test]
    fn values_read_back_through_their_pointers_and_the_cache() {
        pollster::block_on(async {
            let rt: RuntimeRef = Arc::new(MemRuntime::default());
            let big = vec![9u8; 300 << 10];
            let values: Vec<(&[u8], Vec<u8>)> =
                vec![(b"a", b"first".to_vec()), (b"b", big.clone()), (b"c", vec![])];
            let (meta, pointers) = write(rt.as_ref(), 5, &values).await;
            assert_eq!(meta.records, 3);
            assert_eq!(meta.file_bytes, meta.record_bytes + format::FOOTER_BYTES as u64);
            let cache = Arc::new(BlockCache::new(1 << 20));
            let files = BlobFiles::new(Arc::clone(&rt), DIR.into(), 1, Some(Arc::clone(&cache)));
            let size = Some(&meta);
            for ((k, v), p) in values.iter().zip(&pointers) {
                assert_eq!(read(&files, p, k, size).await.unwrap(), v[..]);
            }
            assert!(cache.get(5, pointers[0].offset).is_some());
            // Another key's pointer, or a file no version holds: corruption, not a value.
            let wrong = read(&files, &pointers[1], b"a", size).await;
            assert!(matches!(wrong, Err(Error::Corruption { .. })));
            let err = read(&files, &pointers[2], b"c", None).await.unwrap_err().to_string();
            assert!(err.contains("000009.sst") && err.contains("no version holds"), "{err}");
        });
    }

    #[test]
    fn a_damaged_record_is_corruption_naming_the_file_and_offset() {
        pollster::block_on(async {
            let rt = Arc::new(MemRuntime::default());
            let values: Vec<(&[u8], Vec<u8>)> = vec![(b"a", vec![1; 100]), (b"b", vec![2; 100])];
            let (meta, pointers) = write(rt.as_ref(), 5, &values).await;
            let path = Path::new(DIR).join(file_name(5));
            let file = rt.fs().open(&path).await.unwrap();
            file.write_at(pointers[1].offset + 50, &[0xff]).await.unwrap();
            let files = BlobFiles::new(rt.clone(), DIR.into(), 4, None);
            let size = Some(&meta);
            assert_eq!(read(&files, &pointers[0], b"a", size).await.unwrap(), vec![1; 100]);
            match read(&files, &pointers[1], b"b", size).await {
                Err(Error::Corruption { file, offset, reason }) => {
                    assert_eq!(file, path);
                    assert_eq!(offset, pointers[1].offset);
                    assert!(reason.contains("checksum"), "{reason}");
                }
                other => panic!("expected corruption, got {other:?}"),
            }
            // A truncated file fails at its footer.
            file.truncate(meta.file_bytes - 1).await.unwrap();
            let files = BlobFiles::new(rt.clone(), DIR.into(), 4, None);
            let cut = read(&files, &pointers[0], b"a", size).await;
            assert!(matches!(cut, Err(Error::Corruption { .. })));
        });
    }

    #[test]
    fn golden_blob_file() {
        pollster::block_on(async {
            let rt = Arc::new(MemRuntime::default());
            let values: Vec<(&[u8], Vec<u8>)> =
                vec![(b"apple", b"red".to_vec()), (b"pear", b"green".to_vec())];
            let (meta, pointers) = write(rt.as_ref(), 3, &values).await;
            let file = rt.fs().open(&Path::new(DIR).join(file_name(3))).await.unwrap();
            let bytes = crate::runtime::read_all(file.as_ref()).await.unwrap();
            let dump = crate::testing::hex_dump(&bytes);
            insta::assert_snapshot!(format!("{meta:?}\n{pointers:?}\n{dump}"));
        });
    }
}
