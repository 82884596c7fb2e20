//! Versions: which table files make up the LSM tree, level by level, at one moment.
//!
//! A [`Version`] is immutable; a change (a flush, a compaction) builds a new one by applying a
//! [`VersionEdit`] and installs it. Readers clone the current `Arc<Version>` and keep reading the
//! files it names however the tree changes meanwhile; a file leaves the disk only once no
//! version holding it is alive (see `Arc::strong_count` in the obsolete-file sweep).
//!
//! Invariants (checked by [`Version::check`]): level 0 holds files newest first, by their
//! largest sequence number; every other level holds files sorted by key whose ranges do not
//! overlap; no file number appears twice. [`Version::apply`] also keeps every blob file's
//! garbage below its record bytes (a file all garbage leaves the version) and refuses a blob
//! file without records.

use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Number of levels, L0 to L6.
pub(crate) const LEVELS: usize = 7;

/// What the tree knows of one table file without opening it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub number: u64,
    pub file_bytes: u64,
    /// The first entry in internal order: smallest user key, its newest version.
    pub smallest_key: Bytes,
    pub smallest_seq: u64,
    /// The last entry in internal order: largest user key, its oldest version.
    pub largest_key: Bytes,
    pub largest_seq: u64,
    /// The range of sequence numbers of every entry.
    pub min_seq: u64,
    pub max_seq: u64,
    /// Entries a compaction could drop once no snapshot needs them and no deeper level holds
    /// their keys (tombstones, versions below their key's newest); see
    /// [`crate::sstable::TableWriter::droppable`]. 0 for tables a MANIFEST from before the
    /// count named.
    pub droppable: u64,
}

impl FileMeta {
    /// Whether the file's user-key range meets `[start, end]` (both inclusive).
    pub(crate) fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        self.smallest_key.as_ref() <= end && self.largest_key.as_ref() >= start
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.overlaps(key, key)
    }
}

/// What the version knows of one blob file. Every version naming the file shares this `Arc`,
/// so the file's deletion can wait for all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlobFileMeta {
    pub number: u64,
    pub file_bytes: u64,
    pub records: u64,
    /// Bytes of all its records: the garbage a version counts against it reaches this when no
    /// table needs any of them.
    pub record_bytes: u64,
}

/// One change to the tree and its bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    /// WALs numbered below this hold nothing that is not in a table.
    pub log_number: Option<u64>,
    /// No file number at or above this is in use.
    pub next_file_number: Option<u64>,
    /// No sequence number above this is in any table.
    pub last_seq: Option<u64>,
    /// The format of this MANIFEST's WALs (`wal::Format::number`); snapshot edits carry it, and
    /// a MANIFEST without it is from before format 2, as are its WALs.
    pub wal_format: Option<u64>,
    pub added: Vec<(u8, FileMeta)>,
    pub deleted: Vec<(u8, u64)>,
    /// Blob files the edit adds (a flush's, or the snapshot of a MANIFEST's start).
    pub added_blobs: Vec<BlobFileMeta>,
    /// Bytes of blob records that no table needs any more, by blob file: added to what the
    /// version counts. The edit that makes a file all garbage drops it from the version.
    pub blob_garbage: Vec<(u64, u64)>,
}

impl VersionEdit {
    /// The edit that starts a MANIFEST: `version` whole, with the counters and the WAL format
    /// given.
    pub(crate) fn snapshot(
        version: &Version,
        (log_number, next_file_number, last_seq): (u64, u64, u64),
        wal_format: u64,
    ) -> VersionEdit {
        VersionEdit {
            log_number: Some(log_number),
            next_file_number: Some(next_file_number),
            last_seq: Some(last_seq),
            wal_format: Some(wal_format),
            added: version.files().map(|(level, f)| (level as u8, FileMeta::clone(f))).collect(),
            deleted: Vec::new(),
            added_blobs: version.blobs.values().map(|b| BlobFileMeta::clone(&b.file)).collect(),
            blob_garbage: version
                .blobs
                .iter()
                .filter(|(_, b)| b.garbage_bytes > 0)
                .map(|(&number, b)| (number, b.garbage_bytes))
                .collect(),
        }
    }
}

/// A blob file as one version sees it.
#[derive(Clone, Debug)]
pub(crate) struct LiveBlob {
    pub file: Arc<BlobFileMeta>,
    /// Bytes of its records no table of this version needs.
    pub garbage_bytes: u64,
}

/// The files of the tree, level by level, and the blob files its tables point into.
#[derive(Clone, Debug, Default)]
pub(crate) struct Version {
    pub levels: [Vec<Arc<FileMeta>>; LEVELS],
    pub blobs: BTreeMap<u64, LiveBlob>,
}

impl Version {
    /// The version `edit` makes of this one. Errors (a MANIFEST that contradicts itself) name
    /// what is wrong.
    pub(crate) fn apply(&self, edit: &VersionEdit) -> Result<Version, String> {
        let mut next = self.clone();
        let mut removed = Vec::with_capacity(edit.deleted.len());
        for &(level, number) in &edit.deleted {
            let files = next.level_mut(level)?;
            let Some(i) = files.iter().position(|f| f.number == number) else {
                return Err(format!("deletes table {number} that level {level} does not hold"));
            };
            removed.push(files.remove(i));
        }
        for (level, meta) in &edit.added {
            // A table moved between levels keeps its `Arc`: its deletion waits for every
            // version that names it, and those share this one allocation.
            let moved = removed.iter().find(|f| f.number == meta.number && ***f == *meta);
            let file = moved.map_or_else(|| Arc::new(meta.clone()), Arc::clone);
            next.level_mut(*level)?.push(file);
        }
        for blob in &edit.added_blobs {
            if next.blobs.contains_key(&blob.number) {
                return Err(format!("adds blob file {} twice", blob.number));
            }
            if blob.record_bytes == 0 {
                return Err(format!("adds blob file {} without records", blob.number));
            }
            let live = LiveBlob { file: Arc::new(blob.clone()), garbage_bytes: 0 };
            next.blobs.insert(blob.number, live);
        }
        for &(number, bytes) in &edit.blob_garbage {
            let Some(live) = next.blobs.get_mut(&number) else {
                return Err(format!(
                    "counts garbage in blob file {number}, which it does not hold"
                ));
            };
            live.garbage_bytes = live.garbage_bytes.saturating_add(bytes);
            if live.garbage_bytes > live.file.record_bytes {
                return Err(format!(
                    "counts {} bytes of garbage in blob file {number} of {} record bytes",
                    live.garbage_bytes, live.file.record_bytes
                ));
            }
            if live.garbage_bytes == live.file.record_bytes {
                next.blobs.remove(&number);
            }
        }
        next.levels[0].sort_by(|a, b| b.max_seq.cmp(&a.max_seq).then(b.number.cmp(&a.number)));
        for files in &mut next.levels[1..] {
            files.sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
        }
        next.check()?;
        Ok(next)
    }

    fn level_mut(&mut self, level: u8) -> Result<&mut Vec<Arc<FileMeta>>, String> {
        self.levels.get_mut(usize::from(level)).ok_or_else(|| format!("no level {level}"))
    }

    /// Every file with its level.
    pub(crate) fn files(&self) -> impl Iterator<Item = (usize, &Arc<FileMeta>)> {
        self.levels.iter().enumerate().flat_map(|(l, files)| files.iter().map(move |f| (l, f)))
    }

    /// The files a point lookup of `key` must consult, in the order to consult them: level 0
    /// newest first, then at most one file per deeper level.
    pub(crate) fn files_for_key<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<FileMeta>> {
        let l0 = self.levels[0].iter().filter(move |f| f.contains_key(key));
        let deeper = self.levels[1..].iter().filter_map(move |files| {
            // Files are sorted and disjoint: the first whose largest key is >= key is the only
            // candidate.
            let i = files.partition_point(|f| f.largest_key.as_ref() < key);
            files.get(i).filter(|f| f.contains_key(key))
        });
        l0.chain(deeper)
    }

    /// Checks the invariants in the module header.
    pub(crate) fn check(&self) -> Result<(), String> {
        let l0 = &self.levels[0];
        if l0.windows(2).any(|w| w[0].max_seq < w[1].max_seq) {
            return Err("level 0 is not ordered newest first".into());
        }
        for (level, files) in self.levels.iter().enumerate() {
            for f in files {
                let order = f.smallest_key.cmp(&f.largest_key);
                if order == Ordering::Greater || f.min_seq > f.max_seq {
                    return Err(format!("table {} has an inverted range", f.number));
                }
            }
            if level == 0 {
                continue;
            }
            for w in files.windows(2) {
                if w[0].largest_key >= w[1].smallest_key {
                    return Err(format!(
                        "level {level}: tables {} and {} overlap or are out of order",
                        w[0].number, w[1].number
                    ));
                }
            }
        }
        let mut numbers: Vec<u64> = self.files().map(|(_, f)| f.number).collect();
        numbers.extend(self.blobs.keys());
        numbers.sort_unstable();
        if numbers.windows(2).any(|w| w[0] == w[1]) {
            return Err("a file number appears twice".into());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn meta(number: u64, smallest: &str, largest: &str, seqs: (u64, u64)) -> FileMeta {
    FileMeta {
        number,
        file_bytes: 100,
        smallest_key: Bytes::copy_from_slice(smallest.as_bytes()),
        smallest_seq: seqs.1,
        largest_key: Bytes::copy_from_slice(largest.as_bytes()),
        largest_seq: seqs.0,
        min_seq: seqs.0,
        max_seq: seqs.1,
        droppable: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(added: Vec<(u8, FileMeta)>, deleted: Vec<(u8, u64)>) -> VersionEdit {
        VersionEdit { added, deleted, ..VersionEdit::default() }
    }

    #[test]
    fn level_zero_is_newest_first_and_lookups_follow_it() {
        let v = Version::default()
            .apply(&edit(
                vec![(0, meta(1, "a", "m", (1, 5))), (0, meta(2, "c", "z", (6, 9)))],
                vec![],
            ))
            .unwrap();
        assert_eq!(v.levels[0].iter().map(|f| f.number).collect::<Vec<_>>(), [2, 1]);
        let v = v
            .apply(&edit(
                vec![(1, meta(4, "n", "p", (0, 0))), (1, meta(3, "a", "b", (0, 0)))],
                vec![],
            ))
            .unwrap();
        let hits: Vec<u64> = v.files_for_key(b"o").map(|f| f.number).collect();
        assert_eq!(hits, [2, 4]);
        let hits: Vec<u64> = v.files_for_key(b"b").map(|f| f.number).collect();
        assert_eq!(hits, [1, 3]);
        assert_eq!(v.files_for_key(b"zz").count(), 0);
    }

    #[test]
    fn overlapping_files_in_one_deeper_level_are_refused() {
        let e = edit(vec![(1, meta(1, "a", "m", (1, 5))), (1, meta(2, "k", "z", (6, 9)))], vec![]);
        assert!(Version::default().apply(&e).unwrap_err().contains("overlap"));
    }

    #[test]
    fn deleting_an_absent_file_is_refused() {
        let e = edit(vec![], vec![(1, 7)]);
        assert!(Version::default().apply(&e).is_err());
        let e = edit(vec![(9, meta(1, "a", "b", (1, 1)))], vec![]);
        assert!(Version::default().apply(&e).is_err());
    }

    #[test]
    fn a_file_moves_between_levels_in_one_edit_and_keeps_its_allocation() {
        let v0 =
            Version::default().apply(&edit(vec![(0, meta(1, "a", "b", (1, 2)))], vec![])).unwrap();
        let v1 = v0.apply(&edit(vec![(1, meta(1, "a", "b", (1, 2)))], vec![(0, 1)])).unwrap();
        assert!(v1.levels[0].is_empty());
        assert_eq!(v1.levels[1].len(), 1);
        // Deletion is decided by the count of this one `Arc`, shared by both versions.
        assert!(Arc::ptr_eq(&v0.levels[0][0], &v1.levels[1][0]));
    }
}
