//! The bytes of a blob file and of a blob pointer (byte by byte in `docs/format.md`).
//!
//! A blob file is records back to back, then a 32-byte footer. A record is a crc32 (over the
//! rest of the record), the key's and the value's lengths as varints, the key, the value. The
//! footer holds where the records end, how many there are, the format version, a crc32 of
//! those, and a magic number. A table entry whose kind is [`crate::sstable::key::KIND_BLOB`]
//! holds a pointer instead of its value: the blob file's number, the record's offset and
//! length as varints, and the record's crc32.
//!
//! A read trusts nothing the pointer says: the record's stored crc must equal the pointer's and
//! the bytes read, the lengths must fill the record exactly, and the key must be the key of the
//! table entry, so a damaged record, a pointer into the wrong place and a stale record all read
//! as corruption, never as another value.

use crate::varint;

/// Bytes of the footer at the end of every blob file.
pub(crate) const FOOTER_BYTES: usize = 32;
/// The footer's last eight bytes: "jadeblob" as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"jadeblob");
/// The blob file format this version writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes of a record's crc32.
const CRC_BYTES: usize = 4;

/// Where a value lives: a record of a blob file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobPointer {
    pub file: u64,
    pub offset: u64,
    /// The whole record's length, crc included.
    pub len: u64,
    /// The record's crc32, as stored at its start.
    pub crc: u32,
}

impl BlobPointer {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        varint::put(out, self.file);
        varint::put(out, self.offset);
        varint::put(out, self.len);
        out.extend_from_slice(&self.crc.to_le_bytes());
    }

    /// Decodes a pointer that fills `data` exactly.
    pub(crate) fn decode(data: &[u8]) -> Option<BlobPointer> {
        let mut pos = 0;
        let file = varint::get(data, &mut pos)?;
        let offset = varint::get(data, &mut pos)?;
        let len = varint::get(data, &mut pos)?;
        let crc = u32::from_le_bytes(data.get(pos..)?.try_into().ok()?);
        Some(BlobPointer { file, offset, len, crc })
    }
}

/// Appends the record of `(key, value)` to `out`; returns its crc32.
pub(crate) fn encode_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) -> u32 {
    let start = out.len();
    out.extend_from_slice(&[0; CRC_BYTES]);
    varint::put(out, key.len() as u64);
    varint::put(out, value.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + CRC_BYTES..]);
    out[start..start + CRC_BYTES].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// The value of a whole record read at a pointer whose crc is `crc`, checked against `key`; the
/// error says what is wrong. Returns the value's range within `record`.
pub(crate) fn decode_record(
    record: &[u8],
    crc: u32,
    key: &[u8],
) -> Result<std::ops::Range<usize>, &'static str> {
    let range = decode_verified_record(record, crc, key)?;
    if crc32fast::hash(&record[CRC_BYTES..]) != crc {
        return Err("record checksum mismatch");
    }
    Ok(range)
}

/// As [`decode_record`] for a record whose bytes were checked against their crc before (one the
/// cache holds): everything but the crc computation, so that a pointer whose crc, length or key
/// do not match still fails.
pub(crate) fn decode_verified_record(
    record: &[u8],
    crc: u32,
    key: &[u8],
) -> Result<std::ops::Range<usize>, &'static str> {
    let stored = record.get(..CRC_BYTES).ok_or("record shorter than its crc")?;
    let stored = u32::from_le_bytes(stored.try_into().map_err(|_| "short crc")?);
    if stored != crc {
        return Err("the record's crc is not the one its pointer names");
    }
    let mut pos = CRC_BYTES;
    let key_len = varint::get(record, &mut pos).ok_or("bad key length")?;
    let value_len = varint::get(record, &mut pos).ok_or("bad value length")?;
    let rest = (record.len() - pos) as u64;
    if key_len.checked_add(value_len) != Some(rest) {
        return Err("the record's lengths do not fill it");
    }
    // Both fit: their sum is at most the record's length.
    let value_start = pos + key_len as usize;
    if &record[pos..value_start] != key {
        return Err("the record holds another key");
    }
    Ok(value_start..record.len())
}

/// A blob file's footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    /// Where the records end and the footer starts.
    pub records_end: u64,
    pub records: u64,
}

impl Footer {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.records_end.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&MAGIC.to_le_bytes());
    }

    /// Decodes the footer of a file of `file_bytes` bytes whose last [`FOOTER_BYTES`] are
    /// `bytes`; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8], file_bytes: u64) -> Result<Footer, String> {
        let bytes: &[u8; FOOTER_BYTES] =
            bytes.try_into().map_err(|_| "footer of the wrong length".to_string())?;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        if u64_at(24) != MAGIC {
            return Err("bad magic number: not a blob file".into());
        }
        if crc32fast::hash(&bytes[..20]) != u32_at(20) {
            return Err("footer checksum mismatch".into());
        }
        let version = u32_at(16);
        if version != VERSION {
            return Err(format!("blob file format version {version}; this version reads 1"));
        }
        let footer = Footer { records_end: u64_at(0), records: u64_at(8) };
        if footer.records_end.checked_add(FOOTER_BYTES as u64) != Some(file_bytes) {
            return Err(format!(
                "footer says the records end at {}, but the file is {file_bytes} bytes",
                footer.records_end
            ));
        }
        Ok(footer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_record_reads_back_only_under_its_own_pointer_and_key() {
        let mut out = vec![7; 3];
        let crc = encode_record(&mut out, b"key", b"value");
        let record = &out[3..];
        assert_eq!(record.len(), 4 + 1 + 1 + 3 + 5);
        let range = decode_record(record, crc, b"key").unwrap();
        assert_eq!(&record[range], b"value");
        assert!(decode_record(record, crc, b"kez").unwrap_err().contains("another key"));
        assert!(decode_record(record, crc ^ 1, b"key").unwrap_err().contains("pointer names"));
        assert!(decode_record(&record[..record.len() - 1], crc, b"key").is_err());
    }

    #[test]
    fn pointers_round_trip_and_refuse_trailing_bytes() {
        let p = BlobPointer { file: 12, offset: 70_000, len: 16_400, crc: 0xdead_beef };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), 1 + 3 + 3 + 4);
        assert_eq!(BlobPointer::decode(&out), Some(p));
        out.push(0);
        assert_eq!(BlobPointer::decode(&out), None);
        assert_eq!(BlobPointer::decode(&out[..5]), None);
    }

    #[test]
    fn the_footer_round_trips_and_names_what_is_wrong() {
        let f = Footer { records_end: 100, records: 3 };
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(out.len(), FOOTER_BYTES);
        assert_eq!(Footer::decode(&out, 132), Ok(f));
        assert!(Footer::decode(&out, 133).unwrap_err().contains("the file is 133 bytes"));
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert!(Footer::decode(&bad, 132).unwrap_err().contains("checksum"));
        bad = out.clone();
        bad[31] ^= 1;
        assert!(Footer::decode(&bad, 132).unwrap_err().contains("magic"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64),
                                       crc: u32, size: u64) {
            let _ = decode_record(&data, crc, b"k");
            let _ = BlobPointer::decode(&data);
            let _ = Footer::decode(&data, size);
        }

        #[test]
        fn a_flipped_bit_never_reads_as_a_value(at in 0usize..64, bit in 0u8..8) {
            let mut out = Vec::new();
            let crc = encode_record(&mut out, b"key", &[5u8; 40]);
            let i = at % out.len();
            out[i] ^= 1 << bit;
            prop_assert!(decode_record(&out, crc, b"key").is_err());
        }
    }
}
