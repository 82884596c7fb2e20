//! Reads WAL files back at open, telling a torn tail from corruption.
//!
//! Rules (why each holds is in `docs/format.md`):
//! - Records are read in order, in the framing of the log's format (the MANIFEST names it);
//!   each must carry the file's own number, a matching crc and a well-formed batch whose first
//!   sequence number follows the previous record's last.
//! - In any log but the newest, every byte was synced before the next log was created, so the
//!   first bad record is corruption.
//! - In the newest log, a bad record below an offset that a later valid record attests as
//!   synced is corruption; past every attestation it is a torn tail: recovery keeps the records
//!   before it and the caller truncates the rest.
//! - Zeros from a record boundary to the end of the newest log are space the writer
//!   preallocated and never used: the end of the log, cut off like a torn tail. Older logs were
//!   cut back to their written length before a newer log was created, so there it is corruption.

use super::{crc_v2, Format, V1_BATCH_HEADER_BYTES, V1_HEADER_BYTES};
use crate::batch::{decode_ops, BatchOp};
use crate::error::{Error, Result};
use crate::varint;
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
fn frame_at(
    data: &[u8],
    pos: usize,
    number: u64,
    format: Format,
    check_crc: bool,
) -> Option<Frame<'_>> {
    match format {
        Format::V1 => frame_v1(data, pos, number, check_crc),
        Format::V2 => frame_v2(data, pos, number, check_crc),
    }
}

fn frame_v1(data: &[u8], pos: usize, number: u64, check_crc: bool) -> Option<Frame<'_>> {
    let header = data.get(pos..pos.checked_add(V1_HEADER_BYTES)?)?;
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if field(8) != number {
        return None;
    }
    let end = pos.checked_add(V1_HEADER_BYTES)?.checked_add(len)?;
    let body = data.get(pos + 4..end)?;
    if check_crc && crc32fast::hash(body) != crc {
        return None;
    }
    Some(Frame { payload: &data[pos + V1_HEADER_BYTES..end], synced_upto: field(16), end })
}

/// A format-2 record header read at some offset, its crc not yet checked.
struct HeaderV2 {
    crc: u32,
    /// Where the payload starts and the record ends.
    payload_at: usize,
    end: usize,
    synced_upto: u64,
}

/// Reads a format-2 header at `pos`: `None` if the bytes there cannot start a record that fits
/// in `data`.
fn header_v2(data: &[u8], pos: usize) -> Option<HeaderV2> {
    let mut at = pos.checked_add(4)?;
    let crc = u32::from_le_bytes(data.get(pos..at)?.try_into().ok()?);
    // Stored plus one: a zero here (preallocated space) is never a record.
    let len = varint::get(data, &mut at)?.checked_sub(1)?;
    let back = varint::get(data, &mut at)?;
    let synced_upto = (pos as u64).checked_sub(back)?;
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    (end <= data.len()).then_some(HeaderV2 { crc, payload_at: at, end, synced_upto })
}

fn frame_v2(data: &[u8], pos: usize, number: u64, check_crc: bool) -> Option<Frame<'_>> {
    let h = header_v2(data, pos)?;
    if check_crc && crc_v2(number, &data[pos + 4..h.end]) != h.crc {
        return None;
    }
    Some(Frame { payload: &data[h.payload_at..h.end], synced_upto: h.synced_upto, end: h.end })
}

/// The largest durability attestation of any valid record starting after `from`, or the first
/// one found above `from` (which already makes damage at `from` corruption). Scans byte by byte
/// because the length field of the damaged record cannot be trusted; this runs only when the
/// newest log is damaged.
fn attested_after(data: &[u8], from: usize, number: u64, format: Format) -> u64 {
    let mut best = 0;
    for pos in from + 1..data.len().saturating_sub(format.min_record_bytes() - 1) {
        let found = match format {
            Format::V1 => frame_v1(data, pos, number, true).map(|f| f.synced_upto),
            Format::V2 => attestation_v2(data, pos, number, from as u64),
        };
        if let Some(synced_upto) = found {
            best = best.max(synced_upto);
            if best > from as u64 {
                return best;
            }
        }
    }
    best
}

/// The attestation of a valid format-2 record at `pos`, if it is above `from`; for the scan of a
/// damaged log. Format 1's header holds the log number, which rules out nearly every position
/// before any checksum; format 2's does not, and a length read from arbitrary bytes may run to
/// megabytes, so a checksum at every position would make the scan quadratic (minutes for a
/// damaged 64 MiB log). So the cheap checks come first: an attestation that cannot change the
/// verdict, and a payload that is not a well-formed batch (which arbitrary bytes almost never
/// are, and which fails within a few bytes), are passed over before the crc is computed.
fn attestation_v2(data: &[u8], pos: usize, number: u64, from: u64) -> Option<u64> {
    let h = header_v2(data, pos)?;
    if h.synced_upto <= from {
        return None;
    }
    let payload = &data[h.payload_at..h.end];
    if !payload.is_empty() && !well_formed_batch(payload) {
        return None;
    }
    (crc_v2(number, &data[pos + 4..h.end]) == h.crc).then_some(h.synced_upto)
}

/// Whether `payload` is a well-formed format-2 batch: a sequence number, a count and exactly
/// that many operations.
fn well_formed_batch(payload: &[u8]) -> bool {
    let Some((first_seq, count, at)) = batch_header_v2(payload) else { return false };
    first_seq > 0
        && count > 0
        && crate::batch::for_each_op_borrowed(&payload[at..], count, |_, _| {})
}

/// A format-2 batch's first sequence number and count, and where its operations start.
fn batch_header_v2(payload: &[u8]) -> Option<(u64, u32, usize)> {
    let mut at = 0;
    let first_seq = varint::get(payload, &mut at)?;
    let count = u32::try_from(varint::get(payload, &mut at)?).ok()?;
    Some((first_seq, count, at))
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

/// Splits a log file (a WAL, or a MANIFEST, which uses format 1's framing) into its records,
/// telling a torn tail from corruption. `newest` says whether it is the newest log of its kind
/// (the only one that may be torn); `kind` names it in errors.
pub(crate) fn parse_frames<'a>(
    data: &'a [u8],
    path: &Path,
    number: u64,
    format: Format,
    newest: bool,
    leniency: Leniency,
    kind: &str,
) -> Result<Framed<'a>> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut attested = 0u64;
    while pos < data.len() {
        let Some(frame) = frame_at(data, pos, number, format, !leniency.accept_bad_crc) else {
            if newest && pos as u64 >= attested && data[pos..].iter().all(|&b| b == 0) {
                // Preallocated space: no valid record can start in it (in format 1 log numbers
                // start at 1; in format 2 a length byte of zero is refused), so nothing past it
                // can attest the space synced.
                return Ok(Framed { records, valid_len: pos as u64, torn: true });
            }
            // In an older log any damage is corruption: no attestation is needed for the verdict.
            let attested =
                if newest { attested.max(attested_after(data, pos, number, format)) } else { 0 };
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

/// Parses one WAL of `format`. `newest` says whether it is the newest log (the only one that
/// may be torn); `next_seq` is the sequence number the first batch must carry, if known.
pub(crate) fn parse_log(
    data: &Bytes,
    path: &Path,
    number: u64,
    format: Format,
    newest: bool,
    mut next_seq: Option<u64>,
    leniency: Leniency,
) -> Result<ReplayedLog> {
    let framed = parse_frames(data, path, number, format, newest, leniency, "WAL")?;
    let mut batches = Vec::new();
    for &(pos, payload) in &framed.records {
        if payload.is_empty() {
            continue; // a seal
        }
        let batch = decode_batch(data, pos, payload, format, path)?;
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

/// Decodes the batch that is the payload of the record at `pos`. The payload borrows from
/// `data`, so the operations slice the same bytes without copying them.
fn decode_batch(
    data: &Bytes,
    pos: u64,
    payload: &[u8],
    format: Format,
    path: &Path,
) -> Result<ReplayedBatch> {
    let malformed = || Error::corruption(path, pos, "malformed batch in a WAL record");
    let (first_seq, count, header) = match format {
        Format::V1 => {
            if payload.len() < V1_BATCH_HEADER_BYTES {
                return Err(malformed());
            }
            let first_seq = u64::from_le_bytes(payload[0..8].try_into().map_err(|_| malformed())?);
            let count = u32::from_le_bytes(payload[8..12].try_into().map_err(|_| malformed())?);
            (first_seq, count, V1_BATCH_HEADER_BYTES)
        }
        Format::V2 => batch_header_v2(payload).ok_or_else(malformed)?,
    };
    let rep = data.slice_ref(&payload[header..]);
    let ops = decode_ops(&rep, count, format.lengths()).ok_or_else(malformed)?;
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
    format: Format,
    newest: bool,
    next_seq: Option<u64>,
    leniency: Leniency,
) -> Result<ReplayedLog> {
    let data = Bytes::from(read_log(fs, path).await?);
    let parsed = parse_log(&data, path, number, format, newest, next_seq, leniency);
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
    use super::super::{
        encode_batch_record, encode_seal_record, encode_v1_batch_record, encode_v1_seal_record,
    };
    use super::*;
    use crate::batch::WriteBatch;

    const BOTH: [Format; 2] = [Format::V1, Format::V2];

    /// Appends a record of a one-put batch in `format`, as log 3 writes it.
    fn push_batch(out: &mut Vec<u8>, format: Format, synced: u64, seq: u64, key: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(key, &[seq as u8; 40]).unwrap();
        match format {
            Format::V1 => {
                // The same put with format 1's four-byte lengths.
                let mut rep = vec![1];
                for part in [key, &[seq as u8; 40][..]] {
                    rep.extend_from_slice(&(part.len() as u32).to_le_bytes());
                    rep.extend_from_slice(part);
                }
                encode_v1_batch_record(out, 3, synced, seq, 1, &rep);
            }
            Format::V2 => {
                let at = out.len() as u64;
                encode_batch_record(out, 3, at, synced, seq, b.count(), b.rep());
            }
        }
    }

    fn push_seal(out: &mut Vec<u8>, format: Format) {
        let at = out.len() as u64;
        match format {
            Format::V1 => encode_v1_seal_record(out, 3, at),
            Format::V2 => encode_seal_record(out, 3, at, at),
        }
    }

    fn log_of(format: Format, batches: usize, attest_each: bool) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for i in 0..batches {
            starts.push(out.len());
            let synced = if attest_each { out.len() as u64 } else { 0 };
            push_batch(&mut out, format, synced, i as u64 + 1, format!("key{i}").as_bytes());
        }
        (out, starts)
    }

    fn parse(data: &[u8], format: Format, newest: bool) -> Result<ReplayedLog> {
        parse_with(data, format, newest, Leniency::default())
    }

    fn parse_with(
        data: &[u8],
        format: Format,
        newest: bool,
        leniency: Leniency,
    ) -> Result<ReplayedLog> {
        let data = Bytes::copy_from_slice(data);
        parse_log(&data, Path::new("000003.log"), 3, format, newest, Some(1), leniency)
    }

    /// An offset inside the payload of the record that starts at `start`.
    fn inside(start: usize) -> usize {
        start + V1_HEADER_BYTES + 3
    }

    #[test]
    fn the_planted_bug_takes_corruption_for_a_torn_tail() {
        let lenient = Leniency { bad_record_as_torn: true, ..Leniency::default() };
        for format in BOTH {
            // Before data a later record attests synced.
            let (mut data, starts) = log_of(format, 4, true);
            data[inside(starts[1])] ^= 0x40;
            assert!(parse(&data, format, true).unwrap_err().is_corruption());
            let log = parse_with(&data, format, true, lenient).unwrap();
            assert!(log.torn);
            assert_eq!(log.batches.len(), 1);
            assert_eq!(log.valid_len, starts[1] as u64);
            // In an older log.
            let (data, starts) = log_of(format, 3, false);
            let cut = &data[..starts[2] + 3];
            assert!(parse(cut, format, false).unwrap_err().is_corruption());
            assert_eq!(parse_with(cut, format, false, lenient).unwrap().batches.len(), 2);
        }
    }

    #[test]
    fn whole_log_reads_back() {
        for format in BOTH {
            let (data, _) = log_of(format, 5, true);
            let log = parse(&data, format, true).unwrap();
            assert_eq!(log.batches.len(), 5);
            assert!(!log.torn);
            assert_eq!(log.valid_len, data.len() as u64);
            assert_eq!(log.batches[4].first_seq, 5);
            let BatchOp::Put(key, value) = &log.batches[4].ops[0] else { panic!("a put") };
            assert_eq!((&key[..], &value[..]), (&b"key4"[..], &[5u8; 40][..]));
        }
    }

    #[test]
    fn format_2_spends_six_bytes_of_framing_on_a_small_put() {
        let (v1, _) = log_of(Format::V1, 1, false);
        let (v2, _) = log_of(Format::V2, 1, false);
        // A 4-byte key and a 40-byte value: 24 + 12 + 9 bytes of framing in format 1; in format
        // 2 a 6-byte record header, 2 bytes of batch header and 3 of operation.
        assert_eq!(v1.len(), 44 + 45);
        assert_eq!(v2.len(), 44 + 11);
        assert!(parse(&v2, Format::V1, true).unwrap().batches.is_empty(), "no guessing formats");
    }

    #[test]
    fn cut_anywhere_in_the_tail_keeps_every_whole_record() {
        for format in BOTH {
            let (data, starts) = log_of(format, 4, false);
            for cut in 0..data.len() {
                let log = parse(&data[..cut], format, true).unwrap();
                let ends = starts.iter().skip(1).copied().chain([data.len()]);
                let whole = ends.filter(|&e| e <= cut).count();
                assert_eq!(log.batches.len(), whole, "cut at {cut}");
                assert_eq!(log.torn, !starts.contains(&cut) && cut != data.len());
            }
        }
    }

    #[test]
    fn flipped_byte_before_synced_data_is_corruption() {
        for format in BOTH {
            let (data, starts) = log_of(format, 4, true);
            // Every byte of the second record, header included.
            for victim in starts[1]..starts[2] {
                let mut data = data.clone();
                data[victim] ^= 0x40;
                let err = parse(&data, format, true).unwrap_err();
                match err {
                    Error::Corruption { offset, file, .. } => {
                        assert_eq!(offset, starts[1] as u64, "{format:?}, byte {victim}");
                        assert_eq!(file, Path::new("000003.log"));
                    }
                    other => panic!("expected corruption, got {other}"),
                }
            }
        }
    }

    #[test]
    fn flipped_byte_in_unattested_tail_is_a_torn_tail() {
        for format in BOTH {
            let (mut data, starts) = log_of(format, 4, false);
            data[starts[2] + 5] ^= 1;
            let log = parse(&data, format, true).unwrap();
            assert!(log.torn);
            assert_eq!(log.batches.len(), 2);
        }
    }

    #[test]
    fn any_damage_in_an_older_log_is_corruption() {
        for format in BOTH {
            let (data, starts) = log_of(format, 3, false);
            let err = parse(&data[..starts[2] + 3], format, false).unwrap_err();
            assert!(err.is_corruption(), "{err}");
        }
    }

    #[test]
    fn seal_attests_the_whole_log() {
        for format in BOTH {
            let (mut data, starts) = log_of(format, 3, false);
            push_seal(&mut data, format);
            data[starts[2] + 5] ^= 0x10;
            assert!(parse(&data, format, true).unwrap_err().is_corruption());
        }
    }

    #[test]
    fn zero_tail_ends_the_newest_log_and_corrupts_an_older_one() {
        for format in BOTH {
            let (mut data, _) = log_of(format, 3, true);
            let len = data.len() as u64;
            data.resize(data.len() + 4096, 0);
            let log = parse(&data, format, true).unwrap();
            assert_eq!(log.batches.len(), 3);
            assert_eq!(log.valid_len, len);
            assert!(log.torn);
            assert!(parse(&data, format, false).unwrap_err().is_corruption());
        }
    }

    /// A log of records whose values are arbitrary bytes (so lengths read at wrong offsets are
    /// arbitrary too), each attesting the records before it synced, or none.
    fn noisy_log(records: usize, attest_each: bool) -> (Vec<u8>, Vec<usize>) {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for i in 0..records {
            let value: Vec<u8> = (0..300)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let mut b = WriteBatch::new();
            b.put(format!("key{i}").as_bytes(), &value).unwrap();
            let at = out.len() as u64;
            starts.push(out.len());
            let synced = if attest_each { at } else { 0 };
            encode_batch_record(&mut out, 3, at, synced, i as u64 + 1, b.count(), b.rep());
        }
        (out, starts)
    }

    #[test]
    fn a_flip_early_in_a_long_log_of_arbitrary_values_is_still_told_right() {
        // Synced records after the flip: corruption, at the damaged record.
        let (mut data, starts) = noisy_log(3000, true);
        data[starts[2] + 40] ^= 0x08;
        let err = parse(&data, Format::V2, true).unwrap_err();
        assert!(matches!(err, Error::Corruption { offset, .. } if offset == starts[2] as u64));
        // Nothing attested after it: a torn tail, every record before it kept.
        let (mut data, starts) = noisy_log(3000, false);
        data[starts[2] + 40] ^= 0x08;
        let log = parse(&data, Format::V2, true).unwrap();
        assert_eq!((log.batches.len(), log.torn), (2, true));
    }

    #[test]
    fn zeros_never_read_as_a_record_even_without_the_crc() {
        let lenient = Leniency { accept_bad_crc: true, ..Leniency::default() };
        let log = parse_with(&[0; 64], Format::V2, true, lenient).unwrap();
        assert_eq!((log.batches.len(), log.valid_len), (0, 0));
    }

    #[test]
    fn sequence_gap_is_corruption() {
        for format in BOTH {
            let mut out = Vec::new();
            push_batch(&mut out, format, 0, 1, b"k");
            push_batch(&mut out, format, 0, 5, b"k");
            assert!(parse(&out, format, true).unwrap_err().is_corruption());
        }
    }

    #[test]
    fn record_from_another_log_number_is_not_accepted() {
        let mut b = WriteBatch::new();
        b.put(b"k", b"v").unwrap();
        let mut v2 = Vec::new();
        encode_batch_record(&mut v2, 9, 0, 0, 1, 1, b.rep());
        let mut v1 = Vec::new();
        encode_v1_batch_record(&mut v1, 9, 0, 1, 1, b"\x01\x01\0\0\0k\x01\0\0\0v");
        for (format, out) in [(Format::V1, v1), (Format::V2, v2)] {
            let log = parse(&out, format, true).unwrap();
            assert!(log.torn);
            assert!(log.batches.is_empty());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes, read as either format, lenient or not: an answer, never a panic.
        #[test]
        fn arbitrary_logs_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            newest: bool,
            lenient: bool,
        ) {
            let leniency = Leniency { accept_bad_crc: lenient, bad_record_as_torn: lenient };
            for format in BOTH {
                let _ = parse_with(&data, format, newest, leniency);
            }
        }

        /// A valid log with one byte changed reads as corruption, a torn tail, or (a flip the
        /// crc cannot see) never: what does read back is a prefix of what was written.
        #[test]
        fn mutated_logs_keep_a_prefix_or_fail(at in 0usize..1000, bit in 0u8..8, v2: bool) {
            let format = if v2 { Format::V2 } else { Format::V1 };
            let (mut data, _) = log_of(format, 4, true);
            let at = at % data.len();
            data[at] ^= 1 << bit;
            if let Ok(log) = parse(&data, format, true) {
                proptest::prop_assert!(log.batches.len() < 4, "a flip went unseen at {at}");
                for (i, batch) in log.batches.iter().enumerate() {
                    proptest::prop_assert_eq!(batch.first_seq, i as u64 + 1);
                }
            }
        }
    }
}
