//! The engine over the crashing in-memory disk, driven directly: fail-stop after a failed
//! fsync, recovery on reopen, size limits, concurrency.

use jadedb::runtime::{BoxFuture, FileSystem, JoinHandle, Runtime};
use jadedb::{Db, Error, Options, WriteBatch, WriteOptions, KEY_BYTES_MAX};
use jadedb_fault::{Effect, FaultFs, MemFs, MemRuntime, OpKind, Predicate};
use rand_chacha::rand_core::SeedableRng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

fn open(fs: &MemFs) -> jadedb::Result<Db> {
    Db::open("/db", Options::default(), MemRuntime::new(fs))
}

#[test]
fn failed_fsync_poisons_writes_and_reopen_recovers() {
    let fs = MemFs::new();
    let db = open(&fs).unwrap();
    db.put(b"before", b"1", WriteOptions::synced()).unwrap();
    fs.set_sync_fault(Some(Predicate::path_ends_with(".log").and(Predicate::nth(1))));
    let err = db.put(b"lost", b"2", WriteOptions::synced()).unwrap_err();
    assert!(matches!(err, Error::Io { .. } | Error::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("syncing"), "the error names the failed fsync: {err}");
    for _ in 0..3 {
        let err = db.put(b"later", b"3", WriteOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Poisoned(_)), "{err}");
    }
    assert_eq!(db.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
    drop(db);
    let disk = fs.crash_keep_nothing();
    let db = open(&disk).unwrap();
    assert_eq!(db.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.get(b"lost").unwrap(), None, "the failed fsync's write must not come back");
    db.put(b"again", b"4", WriteOptions::synced()).unwrap();
    db.close().unwrap();
}

#[test]
fn synced_writes_survive_a_crash_and_batches_are_atomic() {
    for seed in 0..50 {
        let fs = MemFs::new();
        let db = open(&fs).unwrap();
        db.put(b"unsynced", b"0", WriteOptions::default()).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b"a", b"1").unwrap().put(b"b", b"2").unwrap().delete(b"a").unwrap();
        let seq = db.write(batch, WriteOptions::synced()).unwrap();
        assert_eq!(seq, 2);
        assert_eq!(db.latest_sequence(), 4);
        let mut tail = WriteBatch::new();
        tail.put(b"c", b"3").unwrap().put(b"d", b"4").unwrap();
        db.write(tail, WriteOptions::default()).unwrap();
        drop(db);
        let disk = fs.crash(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let db = open(&disk).unwrap();
        assert_eq!(db.get(b"unsynced").unwrap().as_deref(), Some(&b"0"[..]), "seed {seed}");
        assert_eq!(db.get(b"a").unwrap(), None);
        assert_eq!(db.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        let tail = (db.get(b"c").unwrap().is_some(), db.get(b"d").unwrap().is_some());
        assert!(tail == (true, true) || tail == (false, false), "batch torn at seed {seed}");
        assert!(db.latest_sequence() == 4 || db.latest_sequence() == 6);
    }
}

#[test]
fn oversized_keys_get_a_clear_error_and_write_nothing() {
    let fs = MemFs::new();
    let db = open(&fs).unwrap();
    let err = db.put(&vec![7; KEY_BYTES_MAX + 1], b"v", WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
    assert_eq!(db.latest_sequence(), 0);
    db.put(b"fine", b"v", WriteOptions::default()).unwrap();
    db.close().unwrap();
}

#[test]
fn closed_database_refuses_calls() {
    let fs = MemFs::new();
    let db = open(&fs).unwrap();
    db.close().unwrap();
    assert!(matches!(db.put(b"k", b"v", WriteOptions::default()), Err(Error::Closed)));
    assert!(matches!(db.get(b"k"), Err(Error::Closed)));
}

#[test]
fn memtable_rotation_keeps_every_write_readable_and_recoverable() {
    let fs = MemFs::new();
    let opts = Options::default().memtable_bytes_max(1024);
    let db = Db::open("/db", opts.clone(), MemRuntime::new(&fs)).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:03}").as_bytes(), &i.to_le_bytes(), WriteOptions::default()).unwrap();
    }
    assert!(db.metrics().memtable_rotations > 5);
    assert_eq!(db.get(b"k007").unwrap().as_deref(), Some(&7u32.to_le_bytes()[..]));
    db.close().unwrap();
    let db = Db::open("/db", opts, MemRuntime::new(&fs.crash_keep_nothing())).unwrap();
    assert_eq!(db.scan(b"", None).unwrap().len(), 200);
    assert_eq!(db.latest_sequence(), 200);
}

/// A runtime whose first sleep never ends, so a test can cancel a commit leader while it waits
/// in its commit window.
#[derive(Debug)]
struct StuckSleepRuntime {
    inner: Arc<MemRuntime>,
    slept: std::sync::atomic::AtomicBool,
}

impl Runtime for StuckSleepRuntime {
    fn fs(&self) -> &dyn FileSystem {
        self.inner.fs()
    }
    fn now(&self) -> Duration {
        self.inner.now()
    }
    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        if self.slept.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Box::pin(async {})
        } else {
            Box::pin(std::future::pending())
        }
    }
    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        self.inner.spawn(name, task)
    }
    fn random_u64(&self) -> u64 {
        self.inner.random_u64()
    }
}

/// Regression: a leader cancelled while waiting in its commit window once handed leadership to
/// itself and panicked ("signal filled twice"), found by the simulator.
#[test]
fn leader_cancelled_in_its_commit_window_loses_nothing() {
    let fs = MemFs::new();
    let rt = Arc::new(StuckSleepRuntime { inner: MemRuntime::new(&fs), slept: false.into() });
    let opts = Options::default().commit_window(Duration::from_micros(50));
    let db = Db::open("/db", opts, rt).unwrap();
    {
        let mut batch = WriteBatch::new();
        batch.put(b"cancelled", b"1").unwrap();
        let mut write = Box::pin(db.write_async(batch, WriteOptions::synced()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(write.as_mut().poll(&mut cx).is_pending(), "the leader waits in its window");
    } // dropped here: the leader is cancelled mid-window
    db.put(b"after", b"2", WriteOptions::synced()).unwrap();
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(db.get(b"cancelled").unwrap(), None, "a write cancelled before it started");
    db.close().unwrap();
}

/// Found in review: after a process crash (not a machine crash) the newest log's tail may be
/// only in the page cache; recovery must make it durable before creating a newer log, or a
/// later power loss turns the older log's lost tail into corruption and loses synced writes.
#[test]
fn process_crash_then_reopen_then_power_loss_keeps_everything_synced() {
    let fs = MemFs::new();
    let opts = Options::default().wal_preallocate_bytes(0);
    let db = Db::open("/db", opts.clone(), MemRuntime::new(&fs)).unwrap();
    db.put(b"a", b"unsynced", WriteOptions::default()).unwrap();
    drop(db); // the process dies; the machine, and its page cache, live on
    let db = Db::open("/db", opts.clone(), MemRuntime::new(&fs)).unwrap();
    assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"unsynced"[..]));
    db.put(b"c", b"synced", WriteOptions::synced()).unwrap();
    drop(db);
    let after_power_loss = fs.crash_keep_nothing();
    let db = Db::open("/db", opts, MemRuntime::new(&after_power_loss)).unwrap();
    assert_eq!(db.get(b"c").unwrap().as_deref(), Some(&b"synced"[..]));
    assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"unsynced"[..]));
}

/// Found in review: a second, concurrent `close` returned `Ok` before the first had made the
/// acknowledged writes durable.
#[test]
fn every_close_returns_only_once_acknowledged_writes_are_durable() {
    for _ in 0..20 {
        let fs = MemFs::new();
        let db = open(&fs).unwrap();
        db.put(b"k", b"v", WriteOptions::default()).unwrap();
        let other = db.clone();
        #[allow(clippy::disallowed_methods)] // two closers racing is the point
        let racer = std::thread::spawn(move || other.close());
        let mine = db.close();
        let theirs = racer.join().unwrap();
        assert!(mine.is_ok() && theirs.is_ok(), "{mine:?} {theirs:?}");
        let db = open(&fs.crash_keep_nothing()).unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}

/// Regression (found by the simulator once it flipped bits on reads): a transient read fault
/// made the last whole record of a WAL look torn, and recovery dropped a synced write. Now a
/// second read must agree before damage is acted on; a reopen with a healthy read recovers all.
#[test]
fn a_flipped_bit_on_reading_the_wal_never_loses_a_synced_write() {
    for seed in 0..20 {
        let fs = MemFs::new();
        let db = open(&fs).unwrap();
        for i in 0..5u8 {
            db.put(&[b'k', i], &[i; 40], WriteOptions::synced()).unwrap();
        }
        let after = fs.crash_keep_nothing();
        drop(db);
        let flaky = FaultFs::new(after.clone()).with_seed(seed).with_rule(
            OpKind::Read,
            Predicate::path_ends_with(".log").and(Predicate::nth(1)),
            Effect::BitFlip,
        );
        match Db::open("/db", Options::default(), MemRuntime::over(flaky)) {
            Err(Error::Io { op, .. }) => assert_eq!(op, "re-reading", "seed {seed}"),
            Err(other) => panic!("seed {seed}: expected an unstable-read error, got {other}"),
            Ok(_) => panic!("seed {seed}: opened on a read that differed from the disk"),
        }
        let db = Db::open("/db", Options::default(), MemRuntime::new(&after)).unwrap();
        for i in 0..5u8 {
            assert_eq!(db.get(&[b'k', i]).unwrap().as_deref(), Some(&[i; 40][..]), "seed {seed}");
        }
        db.close().unwrap();
    }
}

/// Regression (found in review): `CURRENT` had no checksum, so a flipped bit could make it name
/// an older MANIFEST still on disk; open then took the live tables for orphans and deleted them.
/// Now any damage to `CURRENT` fails the open, and nothing is deleted.
#[test]
fn a_flipped_bit_on_reading_current_never_opens_a_stale_manifest() {
    for seed in 0..30 {
        let fs = MemFs::new();
        // Old MANIFESTs stay on disk: deleting them fails.
        let sticky = || {
            FaultFs::new(fs.clone()).with_rule(
                OpKind::Remove,
                Predicate::path_contains("MANIFEST-"),
                Effect::EIO,
            )
        };
        for (i, key) in [b"k1", b"k2"].iter().enumerate() {
            let db = Db::open("/db", Options::default(), MemRuntime::over(sticky())).unwrap();
            db.put(*key, &[i as u8; 10], WriteOptions::synced()).unwrap();
            db.flush().unwrap();
            db.close().unwrap();
        }
        let flaky = sticky().with_seed(seed).with_rule(
            OpKind::Read,
            Predicate::path_ends_with("CURRENT").and(Predicate::nth(1)),
            Effect::BitFlip,
        );
        match Db::open("/db", Options::default(), MemRuntime::over(flaky)) {
            Err(Error::Io { op, .. }) => assert_eq!(op, "re-reading", "seed {seed}"),
            Err(other) => panic!("seed {seed}: expected an unstable-read error, got {other}"),
            Ok(_) => panic!("seed {seed}: opened through a damaged CURRENT"),
        }
        let db = Db::open("/db", Options::default(), MemRuntime::new(&fs)).unwrap();
        assert_eq!(db.get(b"k1").unwrap().as_deref(), Some(&[0u8; 10][..]), "seed {seed}");
        assert_eq!(db.get(b"k2").unwrap().as_deref(), Some(&[1u8; 10][..]), "seed {seed}");
        db.close().unwrap();
    }
}
