//! Reads WAL files back at open, telling a torn tail from corruption.
//!
//! Rules (why each holds is in `docs/format.md`):
//! - Records are read in order; each must carry the file's own number, a matching crc and a
//!   well-formed batch whose first sequence number follows the previous record's last.
//! - In any log but the newest, every byte was synced before the next log was created, so the
//!   first bad record is corruption.
//! - In the newest log, a bad record below an offset that a later valid record attests as
//!   synced is corruption; past every attestation it is a torn tail: recovery keeps the records
//!   before it and the caller truncates the rest.
//! - Zeros from a record boundary to the end of the newest log are space the writer
//!   preallocated and never used: the end of the log, cut off like a torn tail. Older logs were
//!   cut back to their written length before a newer log was created, so there it is corruption.

use super::{BATCH_HEADER_BYTES, HEADER_BYTES};
use crate::batch::{decode_ops, BatchOp};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::path::Path;

/// One batch read back from a log.
#[derive(Debug)]
pub(crate) struct ReplayedBatch {
    pub first_seq: u64,
    pub ops: Vec<BatchOp>,
}

/// What one log file held.
#[derive(Debug)]
pub(crate) struct ReplayedLog {
    pub batches: Vec<ReplayedBatch>,
    /// Length of the prefix made of whole, valid records.
    pub valid_len: u64,
    /// Whether bytes past `valid_len` (a torn tail, or preallocated zeros) were dropped; the
    /// caller must cut the file back before a newer log exists.
    pub torn: bool,
}

/// What the reader wrongly lets pass: planted bugs (`Options::has_bug`), all off in any build
/// that stores real data.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Leniency {
    /// Accept a record whose checksum does not match (`PlantedBug::AcceptTornWalRecord`).
    pub accept_bad_crc: bool,
    /// Take every bad record for a torn tail, even where it is corruption
    /// (`PlantedBug::BadRecordAsTornTail`).
    pub bad_record_as_torn: bool,
}

/// A framed record found at some offset.
struct Frame<'a> {
    payload: &'a [u8],
    synced_upto: u64,
    end: usize,
}

/// Tries to read a record at `pos`: `None` if the bytes there are not a whole valid record.
fn frame_at(data: &[u8], pos: usize, number: u64, check_crc: bool) -> Option<Frame<'_>> {
    let header = data.get(pos..pos.checked_add(HEADER_BYTES)?)?;
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if field(8) != number {
        return None;
    }
    let end = pos.checked_add(HEADER_BYTES)?.checked_add(len)?;
    let body = data.get(pos + 4..end)?;
    if check_crc && crc32fast::hash(body) != crc {
        return None;
    }
    Some(Frame { payload: &data[pos + HEADER_BYTES..end], synced_upto: field(16), end })
}

/// The largest durability attestation of any valid record starting after `from`. Scans byte by
/// byte because the length field of the damaged record cannot be trusted; this runs only when
/// a log is damaged.
fn attested_after(data: &[u8], from: usize, number: u64) -> u64 {
    let mut best = 0;
    for pos in from + 1..data.len().saturating_sub(HEADER_BYTES - 1) {
        if let Some(frame) = frame_at(data, pos, number, true) {
            best = best.max(frame.synced_upto);
        }
    }
    best
}

/// The records of one log file, as framed.
#[derive(Debug)]
pub(crate) struct Framed<'a> {
    /// Each whole, valid record: its offset in the file and its payload (empty for a seal).
    pub records: Vec<(u64, &'a [u8])>,
    /// Length of the prefix made of whole, valid records.
    pub valid_len: u64,
    /// Whether bytes past `valid_len` were dropped as a torn tail or preallocated zeros.
    pub torn: bool,
}

/// Splits a log file (a WAL or a MANIFEST, which share the framing) into its records, telling a
/// torn tail from corruption. `newest` says whether it is the newest log of its kind (the only
/// one that may be torn); `kind` names it in errors.
pub(crate) fn parse_frames<'a>(
    data: &'a [u8],
    path: &Path,
    number: u64,
    newest: bool,
    leniency: Leniency,
    kind: &str,
) -> Result<Framed<'a>> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut attested = 0u64;
    while pos < data.len() {
        let Some(frame) = frame_at(data, pos, number, !leniency.accept_bad_crc) else {
            if newest && pos as u64 >= attested && data[pos..].iter().all(|&b| b == 0) {
                // Preallocated space: no valid record can start in it (log numbers start at 1),
                // so nothing past it can attest the space synced.
                return Ok(Framed { records, valid_len: pos as u64, torn: true });
            }
            let attested = attested.max(attested_after(data, pos, number));
            let corrupt = !newest || (pos as u64) < attested;
            if corrupt && !leniency.bad_record_as_torn {
                return Err(Error::corruption(path, pos as u64, bad_record_reason(kind, newest)));
            }
            return Ok(Framed { records, valid_len: pos as u64, torn: true });
        };
        attested = attested.max(frame.synced_upto);
        records.push((pos as u64, frame.payload));
        pos = frame.end;
    }
    Ok(Framed { records, valid_len: pos as u64, torn: false })
}

/// Parses one WAL. `newest` says whether it is the newest log (the only one that may be torn);
/// `next_seq` is the sequence number the first batch must carry, if known.
pub(crate) fn parse_log(
    data: &Bytes,
    path: &Path,
    number: u64,
    newest: bool,
    mut next_seq: Option<u64>,
    leniency: Leniency,
) -> Result<ReplayedLog> {
    let framed = parse_frames(data, path, number, newest, leniency, "WAL")?;
    let mut batches = Vec::new();
    for &(pos, payload) in &framed.records {
        if payload.is_empty() {
            continue; // a seal
        }
        let batch = decode_batch(data, pos, payload, path)?;
        if let Some(expected) = next_seq {
            if batch.first_seq != expected {
                return Err(Error::corruption(
                    path,
                    pos,
                    format!(
                        "batch starts at sequence {} but {expected} was expected",
                        batch.first_seq
                    ),
                ));
            }
        }
        next_seq = Some(batch.first_seq + batch.ops.len() as u64);
        batches.push(batch);
    }
    Ok(ReplayedLog { batches, valid_len: framed.valid_len, torn: framed.torn })
}

fn bad_record_reason(kind: &str, newest: bool) -> String {
    if newest {
        format!("bad {kind} record before data that was synced")
    } else {
        format!("bad {kind} record in a log that was fully synced")
    }
}

fn decode_batch(data: &Bytes, pos: u64, payload: &[u8], path: &Path) -> Result<ReplayedBatch> {
    let malformed = || Error::corruption(path, pos, "malformed batch in a WAL record");
    if payload.len() < BATCH_HEADER_BYTES {
        return Err(malformed());
    }
    let first_seq = u64::from_le_bytes(payload[0..8].try_into().map_err(|_| malformed())?);
    let count = u32::from_le_bytes(payload[8..12].try_into().map_err(|_| malformed())?);
    // The payload borrows from `data`: slice the same bytes without copying them.
    let rep_start = pos as usize + HEADER_BYTES + BATCH_HEADER_BYTES;
    let rep = data.slice(rep_start..rep_start + payload.len() - BATCH_HEADER_BYTES);
    let ops = decode_ops(&rep, count).ok_or_else(malformed)?;
    if ops.is_empty() || first_seq == 0 {
        return Err(malformed());
    }
    Ok(ReplayedBatch { first_seq, ops })
}

/// Reads a whole log file.
pub(crate) async fn replay(
    fs: &dyn crate::runtime::FileSystem,
    path: &Path,
    number: u64,
    newest: bool,
    next_seq: Option<u64>,
    leniency: Leniency,
) -> Result<ReplayedLog> {
    let data = Bytes::from(read_log(fs, path).await?);
    let parsed = parse_log(&data, path, number, newest, next_seq, leniency);
    let damaged = match &parsed {
        // Preallocated zeros after the last whole record end nearly every newest log. They are
        // no damage, and no single flipped bit can make a record's bytes read as all zeros, so
        // only a non-zero tail needs a second read.
        Ok(log) => log.torn && data[log.valid_len as usize..].iter().any(|&b| b != 0),
        Err(e) => e.is_corruption(),
    };
    if damaged {
        confirm_read(fs, path, &data).await?;
    }
    parsed
}

/// Reads a whole log file (a WAL or a MANIFEST).
pub(crate) async fn read_log(fs: &dyn crate::runtime::FileSystem, path: &Path) -> Result<Vec<u8>> {
    let file = fs.open(path).await.map_err(|e| Error::io("opening", path, e))?;
    crate::runtime::read_all(file.as_ref()).await.map_err(|e| Error::io("reading", path, e))
}

/// Reads the log again and checks it reads the same. Done before acting on damage: a transient
/// read fault can make the last whole record look torn, and cutting it as a torn tail would
/// drop a write that was synced; or make a sound log look corrupt. Two reads that differ mean
/// the storage cannot be trusted right now, so the open fails with an I/O error instead.
pub(crate) async fn confirm_read(
    fs: &dyn crate::runtime::FileSystem,
    path: &Path,
    first: &[u8],
) -> Result<()> {
    if read_log(fs, path).await? == first {
        return Ok(());
    }
    let unstable = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "two reads of the log returned different bytes; not acting on damage an unstable read shows",
    );
    Err(Error::io("re-reading", path, unstable))
}

#[cfg(test)]
mod tests {
    use super::super::{encode_batch_record, encode_seal_record};
    use super::*;
    use crate::batch::WriteBatch;

    fn log_of(batches: usize, attest_each: bool) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for i in 0..batches {
            let mut b = WriteBatch::new();
            b.put(format!("key{i}").as_bytes(), &[i as u8; 40]).unwrap();
            starts.push(out.len());
            let synced = if attest_each { out.len() as u64 } else { 0 };
            encode_batch_record(&mut out, 3, synced, i as u64 + 1, b.count(), b.rep());
        }
        (out, starts)
    }

    fn parse(data: &[u8], newest: bool) -> Result<ReplayedLog> {
        parse_with(data, newest, Leniency::default())
    }

    fn parse_with(data: &[u8], newest: bool, leniency: Leniency) -> Result<ReplayedLog> {
        let data = Bytes::copy_from_slice(data);
        parse_log(&data, Path::new("000003.log"), 3, newest, Some(1), leniency)
    }

    #[test]
    fn the_planted_bug_takes_corruption_for_a_torn_tail() {
        let lenient = Leniency { bad_record_as_torn: true, ..Leniency::default() };
        // Before data a later record attests synced.
        let (mut data, starts) = log_of(4, true);
        data[starts[1] + HEADER_BYTES + 3] ^= 0x40;
        assert!(parse(&data, true).unwrap_err().is_corruption());
        let log = parse_with(&data, true, lenient).unwrap();
        assert!(log.torn);
        assert_eq!(log.batches.len(), 1);
        assert_eq!(log.valid_len, starts[1] as u64);
        // In an older log.
        let (data, starts) = log_of(3, false);
        let cut = &data[..starts[2] + 3];
        assert!(parse(cut, false).unwrap_err().is_corruption());
        assert_eq!(parse_with(cut, false, lenient).unwrap().batches.len(), 2);
    }

    #[test]
    fn whole_log_reads_back() {
        let (data, _) = log_of(5, true);
        let log = parse(&data, true).unwrap();
        assert_eq!(log.batches.len(), 5);
        assert!(!log.torn);
        assert_eq!(log.valid_len, data.len() as u64);
    }

    #[test]
    fn cut_anywhere_in_the_tail_keeps_every_whole_record() {
        let (data, starts) = log_of(4, false);
        for cut in 0..data.len() {
            let log = parse(&data[..cut], true).unwrap();
            let whole = starts.iter().skip(1).chain([&data.len()]).filter(|&&e| e <= cut).count();
            assert_eq!(log.batches.len(), whole, "cut at {cut}");
            assert_eq!(log.torn, !starts.contains(&cut) && cut != data.len());
        }
    }

    #[test]
    fn flipped_byte_before_synced_data_is_corruption() {
        let (mut data, starts) = log_of(4, true);
        let victim = starts[1] + HEADER_BYTES + 3;
        data[victim] ^= 0x40;
        let err = parse(&data, true).unwrap_err();
        match err {
            Error::Corruption { offset, file, .. } => {
                assert_eq!(offset, starts[1] as u64);
                assert_eq!(file, Path::new("000003.log"));
            }
            other => panic!("expected corruption, got {other}"),
        }
    }

    #[test]
    fn flipped_byte_in_unattested_tail_is_a_torn_tail() {
        let (mut data, starts) = log_of(4, false);
        data[starts[2] + 5] ^= 1;
        let log = parse(&data, true).unwrap();
        assert!(log.torn);
        assert_eq!(log.batches.len(), 2);
    }

    #[test]
    fn any_damage_in_an_older_log_is_corruption() {
        let (data, starts) = log_of(3, false);
        let err = parse(&data[..starts[2] + 3], false).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }

    #[test]
    fn seal_attests_the_whole_log() {
        let (mut data, starts) = log_of(3, false);
        let len = data.len() as u64;
        encode_seal_record(&mut data, 3, len);
        data[starts[2] + HEADER_BYTES + 1] ^= 0x10;
        assert!(parse(&data, true).unwrap_err().is_corruption());
    }

    #[test]
    fn zero_tail_ends_the_newest_log_and_corrupts_an_older_one() {
        let (mut data, _) = log_of(3, true);
        let len = data.len() as u64;
        data.resize(data.len() + 4096, 0);
        let log = parse(&data, true).unwrap();
        assert_eq!(log.batches.len(), 3);
        assert_eq!(log.valid_len, len);
        assert!(log.torn);
        assert!(parse(&data, false).unwrap_err().is_corruption());
    }

    #[test]
    fn sequence_gap_is_corruption() {
        let mut out = Vec::new();
        let mut b = WriteBatch::new();
        b.put(b"k", b"v").unwrap();
        encode_batch_record(&mut out, 3, 0, 1, 1, b.rep());
        encode_batch_record(&mut out, 3, 0, 5, 1, b.rep());
        assert!(parse(&out, true).unwrap_err().is_corruption());
    }

    #[test]
    fn record_from_another_log_number_is_not_accepted() {
        let mut out = Vec::new();
        let mut b = WriteBatch::new();
        b.put(b"k", b"v").unwrap();
        encode_batch_record(&mut out, 9, 0, 1, 1, b.rep());
        let log = parse(&out, true).unwrap();
        assert!(log.torn);
        assert!(log.batches.is_empty());
    }
}
