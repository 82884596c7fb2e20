//! The PostgreSQL "fsyncgate" case on the crashing disk: a process dies after an fsync failed,
//! the page cache survives, so the restarted process reads the pages the failed fsync dropped
//! (the kernel marked them clean without writing them). Recovery must make whatever it
//! recovers durable itself: a later power loss must not take back anything it showed.

use jadedb::{Db, Error, Options, WriteOptions};
use jadedb_fault::{MemFs, MemRuntime, Predicate};
use std::path::Path;

fn open(fs: &MemFs) -> jadedb::Result<Db> {
    Db::open("/db", Options::default(), MemRuntime::new(fs))
}

fn wal_holds(fs: &MemFs, needle: &[u8]) -> bool {
    fs.find(Path::new("/db"), ".log", needle, 0).expect("inspect the disk").is_some()
}

#[test]
fn a_page_whose_fsync_failed_is_readable_after_a_process_crash_and_recovery_makes_it_durable() {
    let fs = MemFs::new();
    let db = open(&fs).unwrap();
    db.put(b"before", b"synced value", WriteOptions::synced()).unwrap();
    fs.set_sync_fault(Some(Predicate::path_ends_with(".log").and(Predicate::nth(1))));
    let err = db.put(b"lost", b"value whose fsync failed", WriteOptions::synced()).unwrap_err();
    assert!(matches!(err, Error::Io { .. } | Error::Poisoned(_)), "{err}");
    drop(db);

    // The process dies; the machine does not. The dropped page is still what reads see.
    let restarted = fs.process_crash();
    assert!(
        wal_holds(&restarted, b"value whose fsync failed"),
        "the process-crash image keeps the page whose fsync failed readable"
    );
    // The WAL's durable image does not hold it: a power loss now would lose it.
    let durable = restarted.find(Path::new("/db"), ".log", b"value whose fsync failed", 0);
    assert!(!durable.unwrap().unwrap().durable);

    let db = open(&restarted).unwrap();
    let before = db.get(b"before").unwrap();
    let lost = db.get(b"lost").unwrap();
    let seq = db.latest_sequence();
    assert_eq!(before.as_deref(), Some(&b"synced value"[..]));
    // The failed write was never acknowledged, so either answer is legal; what recovery showed
    // is now the database's state, and must outlive a power loss.
    drop(db);

    let after_power_loss = restarted.crash_keep_nothing();
    let db = open(&after_power_loss).unwrap();
    assert_eq!(db.get(b"before").unwrap(), before);
    assert_eq!(db.get(b"lost").unwrap(), lost, "recovery showed it, so it had to make it durable");
    assert_eq!(db.latest_sequence(), seq);
    db.put(b"after", b"v", WriteOptions::synced()).unwrap();
    db.close().unwrap();
}
