//! The write-ahead log: every committed batch is appended here before it is acknowledged.
//!
//! Record framing (byte by byte in `docs/format.md`). Format 2, which this version writes: a
//! crc32 over the log's own number and the rest of the record, then as varints the payload
//! length and a *durability attestation* (how many bytes of this file were known durable when
//! the record was written, stored as the distance back from the record's start), then the
//! payload: 6 bytes of framing for a small record. Format 1, which logs written before it use
//! and which every MANIFEST still uses: a fixed 24-byte header holding the same crc (over the
//! rest of the header and the payload), length, log number and attestation.
//!
//! The attestation is what lets recovery tell a torn tail from corruption: bytes below an
//! attested offset were synced, so damage there is corruption; damage past every attestation
//! is an unsynced tail that a crash may legally tear. The log number in the crc keeps a stale
//! record of a recycled file from being read as part of another log.

mod reader;
mod writer;

pub(crate) use reader::{confirm_read, parse_frames, read_log, replay, Leniency};
pub(crate) use writer::{Retired, SyncBugs, WalFile, WalWriter};

use crate::batch::Lengths;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::runtime::RuntimeRef;
use crate::varint;
use std::path::Path;
use std::sync::Arc;

/// A record framing and batch encoding. The MANIFEST says which one its WALs use (field 7 of
/// its snapshot edit; a MANIFEST without it is from before format 2, and so are its logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Fixed-width fields: a 24-byte record header, a 12-byte batch header, four-byte lengths.
    V1,
    /// Varints, and the log number folded into the crc: 6 bytes of record header for a small
    /// record, 2 to 10 of batch header, one-byte lengths for short keys and values.
    V2,
}

impl Format {
    /// The format this version writes its WALs in.
    pub(crate) const WRITTEN: Format = Format::V2;

    /// The format a MANIFEST names, if this version reads it.
    pub(crate) fn from_number(number: u64) -> Option<Format> {
        match number {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }

    /// The number a MANIFEST records for this format.
    pub(crate) fn number(self) -> u64 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }

    /// How the batches of this format write their key and value lengths.
    pub(crate) fn lengths(self) -> Lengths {
        match self {
            Format::V1 => Lengths::Fixed32,
            Format::V2 => Lengths::Varint,
        }
    }

    /// The smallest record (a seal): scans for records stop this close to the end.
    fn min_record_bytes(self) -> usize {
        match self {
            Format::V1 => V1_HEADER_BYTES,
            Format::V2 => 6,
        }
    }
}

/// Size of a format-1 record header.
pub(crate) const V1_HEADER_BYTES: usize = 24;
/// Size of the fixed part of a format-1 batch payload: first sequence number and count.
pub(crate) const V1_BATCH_HEADER_BYTES: usize = 12;

/// Creates WAL `number` in `dir`; its name is made durable before its first fsync returns.
pub(crate) async fn create(
    rt: &RuntimeRef,
    dir: &Path,
    number: u64,
    options: &Options,
) -> Result<WalWriter> {
    let path = dir.join(file_name(number));
    let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    // The directory is synced with the log's first fsync, not here: creating the log, which
    // writers may wait for, then syncs nothing, and the old log's finish syncs the directory
    // only if nothing (a synced write, a background sync) fsynced that log before. Until an
    // fsync covers it the log holds no write promised durable, and a crash may lose it whole.
    let writer = WalWriter::new(file, path, number, 0, options.wal_preallocate_bytes)
        .with_buffer(options.wal_buffer_bytes)
        .with_bugs(SyncBugs::of(options));
    Ok(writer.with_directory_unsynced(Arc::clone(rt), dir))
}

/// The file name of WAL number `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("{number:06}.log")
}

/// The number of a WAL file name, if `name` is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, "", ".log")
}

/// The number in a file name made of `prefix`, decimal digits and `suffix` (the names of WALs,
/// tables and MANIFESTs), if `name` is one.
pub(crate) fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let (name, prefix, suffix) = (name.as_bytes(), prefix.as_bytes(), suffix.as_bytes());
    let len = name.len().checked_sub(prefix.len() + suffix.len()).filter(|&n| n > 0)?;
    let (head, rest) = name.split_at(prefix.len());
    let (digits, tail) = rest.split_at(len);
    if !same_bytes(head, prefix) || !same_bytes(tail, suffix) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether two slices of one length hold the same bytes. A loop rather than `==`: names are
/// short and every directory listing parses each, and `==` calls `memcmp`, whose call cost
/// more than the comparison (a twentieth of the simulator's cycles went there).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Appends one format-2 record whose payload is a batch (`first_seq`, `count`, `rep`) to `out`;
/// the record will sit at offset `at` of log `log_number`, whose first `synced_upto` bytes are
/// durable.
pub(crate) fn encode_batch_record(
    out: &mut Vec<u8>,
    log_number: u64,
    at: u64,
    synced_upto: u64,
    first_seq: u64,
    count: u32,
    rep: &[u8],
) {
    let count = u64::from(count);
    let len = varint::len(first_seq) + varint::len(count) + rep.len();
    let start = begin_v2(out, at, synced_upto, len);
    varint::put(out, first_seq);
    varint::put(out, count);
    out.extend_from_slice(rep);
    finish_v2(out, start, log_number);
}

/// Appends a format-2 seal, at offset `at` of log `log_number`: an empty record whose only
/// purpose is to attest that `synced_upto` bytes of the log are durable, so recovery reports
/// damage anywhere before it as corruption.
pub(crate) fn encode_seal_record(out: &mut Vec<u8>, log_number: u64, at: u64, synced_upto: u64) {
    let start = begin_v2(out, at, synced_upto, 0);
    finish_v2(out, start, log_number);
}

/// Appends a format-2 header for a payload of `len` bytes, its crc left as zeros; returns where
/// the record starts in `out`.
fn begin_v2(out: &mut Vec<u8>, at: u64, synced_upto: u64, len: usize) -> usize {
    debug_assert!(synced_upto <= at, "only written bytes can be durable");
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    // Stored plus one, so that zeros (preallocated space) never read as a record.
    varint::put(out, len as u64 + 1);
    varint::put(out, at.saturating_sub(synced_upto));
    start
}

/// Fills in the crc of the format-2 record that starts at `start` and ends `out`.
fn finish_v2(out: &mut [u8], start: usize, log_number: u64) {
    let crc = crc_v2(log_number, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The crc of a format-2 record of log `log_number` whose bytes after the crc are `rest`.
fn crc_v2(log_number: u64, rest: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&log_number.to_le_bytes());
    hasher.update(rest);
    hasher.finalize()
}

/// Appends one format-1 record with an opaque `payload` (a MANIFEST's version edit) to `out`.
/// The payload must be non-empty: an empty one is a seal.
pub(crate) fn encode_v1_record(
    out: &mut Vec<u8>,
    log_number: u64,
    synced_upto: u64,
    payload: &[u8],
) {
    debug_assert!(!payload.is_empty(), "an empty payload is a seal");
    encode_v1_framed(out, log_number, synced_upto, &[payload]);
}

/// Appends a format-1 seal (a MANIFEST's), attesting that `synced_upto` bytes are durable.
pub(crate) fn encode_v1_seal_record(out: &mut Vec<u8>, log_number: u64, synced_upto: u64) {
    encode_v1_framed(out, log_number, synced_upto, &[]);
}

/// Appends a format-1 batch record: what logs written before format 2 hold. Kept to test that
/// they still read.
#[cfg(test)]
pub(crate) fn encode_v1_batch_record(
    out: &mut Vec<u8>,
    log_number: u64,
    synced_upto: u64,
    first_seq: u64,
    count: u32,
    fixed32_rep: &[u8],
) {
    let parts: [&[u8]; 3] = [&first_seq.to_le_bytes(), &count.to_le_bytes(), fixed32_rep];
    encode_v1_framed(out, log_number, synced_upto, &parts);
}

/// Appends the format-1 header and the payload made of `parts`, then fills in the crc.
fn encode_v1_framed(out: &mut Vec<u8>, log_number: u64, synced_upto: u64, parts: &[&[u8]]) {
    let start = out.len();
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Batches are capped well below u32::MAX (batch::BATCH_BYTES_MAX), and so are edits.
    let len = u32::try_from(len).expect("a record payload fits in u32");
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&log_number.to_le_bytes());
    out.extend_from_slice(&synced_upto.to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(7), "000007.log");
        assert_eq!(parse_file_name("000007.log"), Some(7));
        assert_eq!(parse_file_name("1234567.log"), Some(1234567));
        assert_eq!(parse_file_name(".log"), None);
        assert_eq!(parse_file_name("00a1.log"), None);
        assert_eq!(parse_file_name("000001.sst"), None);
    }

    #[test]
    fn only_prefix_digits_suffix_is_a_numbered_name() {
        assert_eq!(parse_numbered("MANIFEST-000003", "MANIFEST-", ""), Some(3));
        assert_eq!(parse_numbered("MANIFEST-", "MANIFEST-", ""), None);
        assert_eq!(parse_numbered("MANIFEST", "MANIFEST-", ""), None);
        assert_eq!(parse_numbered("MANIFEST_000003", "MANIFEST-", ""), None);
        assert_eq!(parse_numbered("+12.log", "", ".log"), None);
        assert_eq!(parse_numbered("12.lug", "", ".log"), None);
        assert_eq!(parse_numbered("1\u{e9}.log", "", ".log"), None);
        assert_eq!(parse_numbered("18446744073709551615.log", "", ".log"), Some(u64::MAX));
        assert_eq!(parse_numbered("18446744073709551616.log", "", ".log"), None);
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    /// Pins the example in `docs/format.md`: a change to the record layout shows up here.
    #[test]
    fn documented_example_record() {
        let mut batch = crate::batch::WriteBatch::new();
        batch.put(b"k", b"v").unwrap();
        let mut out = Vec::new();
        encode_batch_record(&mut out, 1, 0, 0, 1, batch.count(), batch.rep());
        let expected_after_crc: [u8; 9] = [
            0x08, // len + 1: the payload is 7 bytes
            0x00, // synced_upto is 0 bytes back from the record's start
            0x01, // first_seq
            0x01, // count
            0x01, // tag: put
            0x01, b'k', // key
            0x01, b'v', // value
        ];
        assert_eq!(out.len(), 13);
        assert_eq!(&out[4..], &expected_after_crc[..]);
        let mut crc_input = 1u64.to_le_bytes().to_vec();
        crc_input.extend_from_slice(&out[4..]);
        assert_eq!(out[..4], crc32fast::hash(&crc_input).to_le_bytes());
    }

    /// The seal example: written at offset 300 of log 7 once all 300 bytes are durable.
    #[test]
    fn documented_example_seal() {
        let mut out = Vec::new();
        encode_seal_record(&mut out, 7, 300, 300);
        assert_eq!(&out[4..], &[0x01, 0x00]);
        let mut out = Vec::new();
        encode_seal_record(&mut out, 7, 300, 0);
        assert_eq!(&out[4..], &[0x01, 0xac, 0x02], "300 back, as a varint");
    }
}
