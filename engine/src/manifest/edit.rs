//! Version edits: the records of a MANIFEST, each one change to the set of table files.
//!
//! Encoding (byte by byte in `docs/format.md`): a sequence of fields, each a one-byte tag and a
//! fixed-width little-endian body. Decoding checks every length against the bytes left and
//! refuses unknown tags, so arbitrary bytes give an error, never a panic.

use crate::version::{BlobFileMeta, FileMeta, VersionEdit, LEVELS};
use bytes::Bytes;

const TAG_LOG_NUMBER: u8 = 1;
const TAG_NEXT_FILE_NUMBER: u8 = 2;
const TAG_LAST_SEQ: u8 = 3;
const TAG_ADD_FILE: u8 = 4;
const TAG_DELETE_FILE: u8 = 5;
/// The droppable-entry count of a table the same edit adds (written only when not zero; older
/// MANIFESTs hold none, and their tables count 0).
const TAG_DROPPABLE: u8 = 6;
/// The format of the MANIFEST's WALs (older MANIFESTs hold none: their WALs are of format 1).
const TAG_WAL_FORMAT: u8 = 7;
/// A blob file the edit adds: number, file bytes, records, record bytes.
const TAG_ADD_BLOB: u8 = 8;
/// Garbage bytes to count against a blob file: number, bytes.
const TAG_BLOB_GARBAGE: u8 = 9;

impl VersionEdit {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut field = |tag: u8, value: Option<u64>| {
            if let Some(v) = value {
                out.push(tag);
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        field(TAG_LOG_NUMBER, self.log_number);
        field(TAG_NEXT_FILE_NUMBER, self.next_file_number);
        field(TAG_LAST_SEQ, self.last_seq);
        field(TAG_WAL_FORMAT, self.wal_format);
        for &(level, number) in &self.deleted {
            out.push(TAG_DELETE_FILE);
            out.push(level);
            out.extend_from_slice(&number.to_le_bytes());
        }
        for (level, f) in &self.added {
            out.push(TAG_ADD_FILE);
            out.push(*level);
            for v in [f.number, f.file_bytes, f.smallest_seq, f.largest_seq, f.min_seq, f.max_seq] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for key in [&f.smallest_key, &f.largest_key] {
                // Keys are capped at KEY_BYTES_MAX, far below u32::MAX.
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            if f.droppable > 0 {
                out.push(TAG_DROPPABLE);
                out.push(*level);
                out.extend_from_slice(&f.number.to_le_bytes());
                out.extend_from_slice(&f.droppable.to_le_bytes());
            }
        }
        for b in &self.added_blobs {
            out.push(TAG_ADD_BLOB);
            for v in [b.number, b.file_bytes, b.records, b.record_bytes] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for &(number, bytes) in &self.blob_garbage {
            out.push(TAG_BLOB_GARBAGE);
            out.extend_from_slice(&number.to_le_bytes());
            out.extend_from_slice(&bytes.to_le_bytes());
        }
    }

    /// Decodes an edit; the error says what is malformed.
    pub(crate) fn decode(data: &[u8]) -> Result<VersionEdit, String> {
        let mut r = Reader { data, pos: 0 };
        let mut edit = VersionEdit::default();
        while r.pos < data.len() {
            match r.u8()? {
                TAG_LOG_NUMBER => edit.log_number = Some(r.u64()?),
                TAG_NEXT_FILE_NUMBER => edit.next_file_number = Some(r.u64()?),
                TAG_LAST_SEQ => edit.last_seq = Some(r.u64()?),
                TAG_WAL_FORMAT => edit.wal_format = Some(r.u64()?),
                TAG_DELETE_FILE => {
                    let level = r.level()?;
                    edit.deleted.push((level, r.u64()?));
                }
                TAG_ADD_FILE => {
                    let level = r.level()?;
                    edit.added.push((level, r.file_meta()?));
                }
                TAG_DROPPABLE => {
                    let at = r.pos - 1;
                    let (level, number, count) = (r.level()?, r.u64()?, r.u64()?);
                    let added =
                        edit.added.iter_mut().find(|(l, f)| *l == level && f.number == number);
                    let Some((_, f)) = added else {
                        return Err(format!(
                            "a droppable count at byte {at} for table {number} of level {level}, \
                             which the edit does not add"
                        ));
                    };
                    f.droppable = count;
                }
                TAG_ADD_BLOB => {
                    let (number, file_bytes) = (r.u64()?, r.u64()?);
                    let (records, record_bytes) = (r.u64()?, r.u64()?);
                    edit.added_blobs.push(BlobFileMeta {
                        number,
                        file_bytes,
                        records,
                        record_bytes,
                    });
                }
                TAG_BLOB_GARBAGE => edit.blob_garbage.push((r.u64()?, r.u64()?)),
                tag => return Err(format!("unknown field tag {tag} at byte {}", r.pos - 1)),
            }
        }
        Ok(edit)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("field at byte {} runs past the end", self.pos))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "short u64")?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| "short u32")?))
    }

    fn level(&mut self) -> Result<u8, String> {
        let level = self.u8()?;
        if usize::from(level) >= LEVELS {
            return Err(format!("level {level} out of range at byte {}", self.pos - 1));
        }
        Ok(level)
    }

    fn key(&mut self) -> Result<Bytes, String> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    fn file_meta(&mut self) -> Result<FileMeta, String> {
        let mut v = [0u64; 6];
        for slot in &mut v {
            *slot = self.u64()?;
        }
        let [number, file_bytes, smallest_seq, largest_seq, min_seq, max_seq] = v;
        let smallest_key = self.key()?;
        let largest_key = self.key()?;
        Ok(FileMeta {
            number,
            file_bytes,
            smallest_key,
            smallest_seq,
            largest_key,
            largest_seq,
            min_seq,
            max_seq,
            droppable: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::meta;
    use proptest::prelude::*;

    fn sample() -> VersionEdit {
        VersionEdit {
            log_number: Some(7),
            next_file_number: Some(12),
            last_seq: Some(900),
            wal_format: Some(2),
            added: vec![(0, meta(10, "apple", "pear", (3, 800))), (2, meta(11, "a", "b", (1, 2)))],
            deleted: vec![(1, 4)],
            added_blobs: vec![BlobFileMeta {
                number: 9,
                file_bytes: 5000,
                records: 3,
                record_bytes: 4968,
            }],
            blob_garbage: vec![(8, 1200)],
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        assert_eq!(VersionEdit::decode(&out).unwrap(), sample());
        assert_eq!(VersionEdit::decode(&[]).unwrap(), VersionEdit::default());
    }

    #[test]
    fn a_droppable_count_rides_with_its_table_and_nowhere_else() {
        let mut edit = sample();
        edit.added[1].1.droppable = 41;
        let mut out = Vec::new();
        edit.encode(&mut out);
        assert_eq!(VersionEdit::decode(&out).unwrap(), edit);
        // An edit without counts (as written before them) reads as counting 0.
        let mut old = Vec::new();
        sample().encode(&mut old);
        assert!(old.len() + 18 == out.len());
        let mut stray = vec![TAG_DROPPABLE, 2];
        stray.extend_from_slice(&11u64.to_le_bytes());
        stray.extend_from_slice(&41u64.to_le_bytes());
        let err = VersionEdit::decode(&stray).unwrap_err();
        assert!(err.contains("table 11 of level 2, which the edit does not add"), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        // Field boundaries decode as a shorter valid edit; everywhere else is an error.
        let mut errors = 0;
        for cut in 1..out.len() {
            if VersionEdit::decode(&out[..cut]).is_err() {
                errors += 1;
            }
        }
        assert!(errors > out.len() / 2);
        assert!(VersionEdit::decode(&[99]).unwrap_err().contains("unknown field tag"));
        assert!(VersionEdit::decode(&[TAG_DELETE_FILE, 7, 0]).unwrap_err().contains("level 7"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = VersionEdit::decode(&data);
        }

        #[test]
        fn mutated_edits_never_panic(flip in 0usize..2000, bit in 0u8..8) {
            let mut out = Vec::new();
            sample().encode(&mut out);
            let i = flip % out.len();
            out[i] ^= 1 << bit;
            let _ = VersionEdit::decode(&out);
        }
    }
}
