//! The WAL on real files: a flipped byte in the middle is reported as corruption naming the
//! file and offset; a log cut mid-record recovers every whole record before the cut.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the test edits files directly

use jadedb::{runtime::StdRuntime, Db, Error, Options, WriteOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jadedb-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &Path) -> jadedb::Result<Db> {
    Db::open(dir, Options::default(), Arc::new(StdRuntime::new()))
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// Writes `n` synced puts and returns the path of the WAL holding them, left unclosed (as after
/// a crash) when `close` is false.
fn write_log(dir: &Path, n: usize, close: bool) -> PathBuf {
    let db = open(dir).unwrap();
    for i in 0..n {
        db.put(&key(i), &[b'v'; 50], WriteOptions::synced()).unwrap();
    }
    if close {
        db.close().unwrap();
    }
    dir.join("000001.log")
}

/// Reads a varint (LEB128) at `*pos`, as `docs/format.md` describes them.
fn varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// Where each record of a format-2 log starts, following the lengths in their headers up to
/// the end or the preallocated zeros.
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while pos + 4 < bytes.len() && bytes[pos + 4] != 0 {
        starts.push(pos);
        let mut at = pos + 4;
        let len = varint(bytes, &mut at) - 1;
        varint(bytes, &mut at); // the attestation
        pos = at + len as usize;
    }
    starts
}

#[test]
fn flipped_byte_in_the_middle_is_corruption_naming_file_and_offset() {
    let dir = temp_dir("flip");
    let log = write_log(&dir, 100, true);
    let mut bytes = std::fs::read(&log).unwrap();
    let starts = record_starts(&bytes);
    assert_eq!(starts.len(), 101, "100 puts and the seal");
    let middle = starts[50] + 30;
    bytes[middle] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();
    match open(&dir) {
        Err(Error::Corruption { file, offset, reason }) => {
            assert_eq!(file, log);
            assert!(offset <= middle as u64 && middle as u64 - offset < 200, "offset {offset}");
            assert!(!reason.is_empty());
            let shown = Error::Corruption { file, offset, reason }.to_string();
            assert!(shown.contains("000001.log") && shown.contains(&offset.to_string()), "{shown}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a corrupt WAL was accepted"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cut_mid_record_recovers_every_whole_record_before_the_cut() {
    let dir = temp_dir("cut");
    let log = write_log(&dir, 100, false);
    let bytes = std::fs::read(&log).unwrap();
    let starts = record_starts(&bytes);
    assert_eq!(starts.len(), 100);
    let cut = (starts[60] + starts[61]) / 2;
    std::fs::write(&log, &bytes[..cut]).unwrap();
    let db = open(&dir).unwrap();
    for i in 0..100 {
        let got = db.get(&key(i)).unwrap();
        assert_eq!(got.is_some(), i < 60, "key {i}");
    }
    assert_eq!(db.latest_sequence(), 60);
    db.put(b"after", b"reopen", WriteOptions::synced()).unwrap();
    db.close().unwrap();
    let db = open(&dir).unwrap();
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"reopen"[..]));
    assert_eq!(db.get(&key(59)).unwrap().map(|v| v.len()), Some(50));
    db.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn second_open_of_a_locked_database_fails() {
    let dir = temp_dir("lock");
    let db = open(&dir).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    db.close().unwrap();
    open(&dir).unwrap().close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
