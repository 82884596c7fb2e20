//! The write-ahead log: every committed batch is appended here before it is acknowledged.
//!
//! Record framing (byte by byte in `docs/format.md`): a 24-byte header with a crc32 over the rest
//! of the header and the payload, the payload length, the log's own number and a *durability
//! attestation* (`synced_upto`: how many bytes of this file were known durable when the record
//! was written). The attestation is what lets recovery tell a torn tail from corruption: bytes
//! below an attested offset were synced, so damage there is corruption; damage past every
//! attestation is an unsynced tail that a crash may legally tear.

mod reader;
mod writer;

pub(crate) use reader::{confirm_read, parse_frames, read_log, replay, Leniency};
pub(crate) use writer::{SyncBugs, WalFile, WalWriter};

use crate::error::{Error, Result};
use crate::options::Options;
use crate::runtime::RuntimeRef;
use std::path::Path;
use std::sync::Arc;

/// Size of a record header.
pub(crate) const HEADER_BYTES: usize = 24;
/// Size of the fixed part of a batch payload: first sequence number and operation count.
pub(crate) const BATCH_HEADER_BYTES: usize = 12;

/// Creates WAL `number` in `dir`; its name is made durable before its first fsync returns.
pub(crate) async fn create(
    rt: &RuntimeRef,
    dir: &Path,
    number: u64,
    options: &Options,
) -> Result<WalWriter> {
    let path = dir.join(file_name(number));
    let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    // The directory is synced with the log's first fsync, not here: a rotation, which writers
    // wait for, then does not sync it for the new log, and for the old one only if nothing
    // (a synced write, a background sync) fsynced that log before. Until an fsync covers it
    // the log holds no write promised durable, and a crash may lose it whole.
    let writer = WalWriter::new(file, path, number, 0, options.wal_preallocate_bytes);
    Ok(writer.with_bugs(SyncBugs::of(options)).with_directory_unsynced(Arc::clone(rt), dir))
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

/// Appends one record whose payload is a batch (`first_seq`, `count`, `rep`) to `out`.
pub(crate) fn encode_batch_record(
    out: &mut Vec<u8>,
    log_number: u64,
    synced_upto: u64,
    first_seq: u64,
    count: u32,
    rep: &[u8],
) {
    let parts: [&[u8]; 3] = [&first_seq.to_le_bytes(), &count.to_le_bytes(), rep];
    encode_framed(out, log_number, synced_upto, &parts);
}

/// Appends one record with an opaque `payload` (a MANIFEST's version edit) to `out`. The
/// payload must be non-empty: an empty one is a seal.
pub(crate) fn encode_record(out: &mut Vec<u8>, log_number: u64, synced_upto: u64, payload: &[u8]) {
    debug_assert!(!payload.is_empty(), "an empty payload is a seal");
    encode_framed(out, log_number, synced_upto, &[payload]);
}

/// Appends a seal: an empty record whose only purpose is to attest that `synced_upto` bytes of
/// the log are durable, so recovery reports damage anywhere before it as corruption.
pub(crate) fn encode_seal_record(out: &mut Vec<u8>, log_number: u64, synced_upto: u64) {
    encode_framed(out, log_number, synced_upto, &[]);
}

/// Appends the header and the payload made of `parts`, then fills in the crc.
fn encode_framed(out: &mut Vec<u8>, log_number: u64, synced_upto: u64, parts: &[&[u8]]) {
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
        encode_batch_record(&mut out, 1, 0, 1, batch.count(), batch.rep());
        let expected_after_crc: [u8; 43] = [
            0x17, 0, 0, 0, // len
            1, 0, 0, 0, 0, 0, 0, 0, // log_number
            0, 0, 0, 0, 0, 0, 0, 0, // synced_upto
            1, 0, 0, 0, 0, 0, 0, 0, // first_seq
            1, 0, 0, 0, // count
            1, // tag: put
            1, 0, 0, 0, b'k', // key
            1, 0, 0, 0, b'v', // value
        ];
        assert_eq!(out.len(), 47);
        assert_eq!(&out[4..], &expected_after_crc[..]);
        assert_eq!(out[..4], crc32fast::hash(&out[4..]).to_le_bytes());
    }
}
