//! Databases written before WAL format 2 still open: `tests/golden/` holds two made by the last
//! version that wrote format 1 (one closed, one left open as after a crash, each with writes in
//! a table and in the WAL). Opening one replays its format-1 log, and writes after that go to
//! format-2 logs that a reopen reads back. Their table is of table format version 1, whose
//! bloom filter is plain (not blocked): every key in it must still be found.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the test copies files directly

use jadedb::{runtime::StdRuntime, Db, Options, WriteOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A copy of golden database `name` in a fresh directory: opening changes a database. Each
/// call gets a directory of its own: tests run at once, and two copy the same database.
fn copy_of(name: &str) -> PathBuf {
    static COPIES: AtomicUsize = AtomicUsize::new(0);
    let copy = COPIES.fetch_add(1, Ordering::Relaxed);
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    let unique = format!("jadedb-golden-{name}-{}-{copy}", std::process::id());
    let to = std::env::temp_dir().join(unique);
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

fn open(dir: &Path) -> Db {
    Db::open(dir, Options::default(), Arc::new(StdRuntime::new())).unwrap()
}

/// What every golden database holds: keys 0..150 written and flushed to a table, 150..300
/// (over)written in the WAL, every seventh key deleted, and one batch.
fn expected(i: u32) -> Option<String> {
    match i {
        _ if i.is_multiple_of(7) || i == 1 => None,
        0..150 => Some(format!("table-{i}")),
        _ => Some(format!("log-{i}")),
    }
}

fn check(db: &Db) {
    for i in 0..300u32 {
        let got = db.get(format!("key{i:04}").as_bytes()).unwrap();
        assert_eq!(got.as_deref(), expected(i).as_ref().map(|v| v.as_bytes()), "key {i}");
    }
    assert_eq!(db.get(b"batch-a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.get(b"batch-b").unwrap().as_deref(), Some(&b""[..]));
}

fn reopen_and_write_on(name: &str) {
    let dir = copy_of(name);
    let db = open(&dir);
    check(&db);
    db.put(b"after", b"format 2", WriteOptions::synced()).unwrap();
    db.close().unwrap();
    let db = open(&dir);
    check(&db);
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"format 2"[..]));
    db.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_closed_database_of_format_1_opens_and_takes_writes() {
    reopen_and_write_on("v1-closed");
}

#[test]
fn a_crashed_database_of_format_1_recovers_its_log() {
    reopen_and_write_on("v1-unclosed");
}

#[test]
fn a_damaged_format_1_log_is_still_corruption_naming_file_and_offset() {
    let dir = copy_of("v1-closed");
    let log = dir.join("000003.log");
    let mut bytes = std::fs::read(&log).unwrap();
    // The closing seal attests the whole log, so damage in the middle is corruption.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();
    let err = Db::open(&dir, Options::default(), Arc::new(StdRuntime::new())).unwrap_err();
    match &err {
        jadedb::Error::Corruption { file, offset, .. } => {
            assert_eq!(file, &log);
            assert!(*offset <= middle as u64, "{err}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
