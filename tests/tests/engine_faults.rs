//! The engine over the crashing in-memory disk, driven directly: fail-stop after a failed
//! fsync, recovery on reopen, size limits, concurrency.

use jadedb::runtime::{BoxFuture, File, FileLock, FileSystem, IoFuture, JoinHandle, Runtime};
use jadedb::{Db, Error, Options, WriteBatch, WriteOptions, KEY_BYTES_MAX};
use jadedb_fault::{CrashModel, Effect, FaultFs, MemFs, MemRuntime, OpKind, Predicate};
use rand_chacha::rand_core::SeedableRng;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
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
    // Unbuffered, so that the unsynced write is in the page cache when the process dies.
    let opts = Options::default().wal_preallocate_bytes(0).wal_buffer_bytes(0);
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

/// Which call a [`HookFs`] hook is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Open,
    Read,
    Write,
    Sync,
    Rename,
    Other,
}

type Hook = dyn Fn(Op, &Path) + Send + Sync;

/// A file system that tells a hook about every call before passing it to a [`MemFs`]: the hook
/// may block the calling task's thread (a gate) or panic (a bug in a background job).
struct HookFs {
    inner: MemFs,
    hook: Arc<Hook>,
}

fn hooked(fs: &MemFs, hook: impl Fn(Op, &Path) + Send + Sync + 'static) -> Arc<MemRuntime> {
    MemRuntime::over(HookFs { inner: fs.clone(), hook: Arc::new(hook) })
}

impl HookFs {
    /// Tells the hook, then makes the call; before the call, so a hook that panics or blocks
    /// does so before the disk changes.
    fn tell(&self, op: Op, path: &Path) -> &MemFs {
        (self.hook)(op, path);
        &self.inner
    }

    fn hooked_file<'a>(
        &'a self,
        path: &'a Path,
        opened: IoFuture<'a, Box<dyn File>>,
    ) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            let inner = opened.await?;
            let hook = Arc::clone(&self.hook);
            Ok(Box::new(HookFile { inner, path: path.to_path_buf(), hook }) as Box<dyn File>)
        })
    }
}

impl FileSystem for HookFs {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        self.hooked_file(path, self.tell(Op::Create, path).create(path))
    }
    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        self.hooked_file(path, self.tell(Op::Open, path).open(path))
    }
    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        self.tell(Op::Other, path).remove(path)
    }
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        self.tell(Op::Rename, from).rename(from, to)
    }
    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        self.tell(Op::Other, dir).list(dir)
    }
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        self.tell(Op::Other, dir).create_dir_all(dir)
    }
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        self.tell(Op::Other, dir).sync_dir(dir)
    }
    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        self.tell(Op::Other, path).lock(path)
    }
}

/// A file of a [`HookFs`], telling its hook about reads, writes and syncs.
struct HookFile {
    inner: Box<dyn File>,
    path: PathBuf,
    hook: Arc<Hook>,
}

impl std::fmt::Debug for HookFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl File for HookFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        (self.hook)(Op::Read, &self.path);
        self.inner.read_at(offset, buf)
    }
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        (self.hook)(Op::Write, &self.path);
        self.inner.write_at(offset, data)
    }
    fn sync_data(&self) -> IoFuture<'_, ()> {
        (self.hook)(Op::Sync, &self.path);
        self.inner.sync_data()
    }
    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        self.inner.truncate(len)
    }
    fn size(&self) -> IoFuture<'_, u64> {
        self.inner.size()
    }
}

/// Whether `path` names a file with extension `ext`.
fn is(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

/// A gate a hook blocks a background thread on until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// How long a test waits for an outcome that hangs forever when the bug is there.
const HANG_BOUND: Duration = Duration::from_secs(20);

/// Runs `scenario` on its own thread and returns its outcome, or `None` if it has not finished
/// within [`HANG_BOUND`] (the thread is then left hanging; the test fails).
fn bounded<T: Send + 'static>(scenario: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    #[allow(clippy::disallowed_methods)] // the scenario may hang; the test must not
    std::thread::spawn(move || {
        let _ = tx.send(scenario());
    });
    rx.recv_timeout(HANG_BOUND).ok()
}

fn assert_poisoned_by(result: jadedb::Result<()>, cause: &str, what: &str) {
    match result {
        Err(Error::Poisoned(why)) => assert!(why.contains(cause), "{what}: poisoned by {why}"),
        other => panic!("{what}: expected Poisoned naming {cause:?}, got {other:?}"),
    }
}

/// Found in review: a panic in a background job killed the worker's thread silently, so a
/// `flush` waiting for it (or a writer stalled on it) waited forever and `close` hung joining
/// a thread that would never report back. Now the panic poisons the database, naming the panic.
#[test]
fn a_panic_in_a_flush_poisons_the_database_and_close_returns() {
    let fs = MemFs::new();
    let fired = Arc::new(AtomicBool::new(false));
    let rt = hooked(&fs, move |op, path| {
        if op == Op::Create && is(path, "sst") && !fired.swap(true, Ordering::SeqCst) {
            panic!("test: table creation exploded");
        }
    });
    let outcome = bounded(move || {
        let db = Db::open("/db", Options::default(), rt).unwrap();
        db.put(b"k", b"v", WriteOptions::synced()).unwrap();
        let flushed = db.flush();
        let later = db.put(b"k2", b"v2", WriteOptions::default());
        let closed = db.close();
        (flushed, later, closed)
    });
    let (flushed, later, closed) = outcome.expect("the flush or the close hung");
    let cause = "table creation exploded";
    assert_poisoned_by(flushed, cause, "the flush waiting for the worker");
    assert_poisoned_by(later, cause, "a later write");
    assert_poisoned_by(closed, cause, "close");
    let db = open(&fs).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "the synced write survives");
    db.close().unwrap();
}

/// As above, for the WAL sync task: a panic in its fsync fails the synced write with the panic
/// named, and `close` returns instead of waiting for the dead task. The same when the lone
/// synced writer runs the fsync itself.
#[test]
fn a_panic_in_the_sync_task_poisons_the_database_and_close_returns() {
    for lone_writer_syncs in [false, true] {
        let fs = MemFs::new();
        let fired = Arc::new(AtomicBool::new(false));
        let rt = hooked(&fs, move |op, path| {
            if op == Op::Sync && is(path, "log") && !fired.swap(true, Ordering::SeqCst) {
                panic!("test: fsync exploded");
            }
        });
        let outcome = bounded(move || {
            let opts = Options::default().lone_writer_syncs(lone_writer_syncs);
            let db = Db::open("/db", opts, rt).unwrap();
            let synced = db.put(b"k", b"v", WriteOptions::synced());
            let closed = db.close();
            (synced, closed)
        });
        let (synced, closed) = outcome.expect("the synced write or the close hung");
        assert_poisoned_by(synced, "fsync exploded", "the synced write");
        assert_poisoned_by(closed, "fsync exploded", "close");
    }
}

/// A synced write that is the only one waiting runs its fsync on its own thread (no hand-off
/// to the sync task and back); with `lone_writer_syncs(false)` the sync task runs every one.
#[cfg(not(madsim))]
#[test]
fn a_lone_synced_writer_runs_its_own_fsync() {
    for lone_writer_syncs in [true, false] {
        let fs = MemFs::new();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let rt = hooked(&fs, move |op, path| {
            if op == Op::Sync && is(path, "log") {
                let _ = tx.lock().unwrap().send(std::thread::current().id());
            }
        });
        let opts = Options::default().wal_preallocate_bytes(0).lone_writer_syncs(lone_writer_syncs);
        let db = Db::open("/db", opts, rt).unwrap();
        while rx.try_recv().is_ok() {}
        for i in 0..20u8 {
            db.put(&[i], b"v", WriteOptions::synced()).unwrap();
        }
        let threads: Vec<_> = rx.try_iter().collect();
        let own = threads.iter().filter(|&&t| t == std::thread::current().id()).count();
        assert!(threads.len() >= 20, "{} fsyncs for 20 synced writes", threads.len());
        let expected = if lone_writer_syncs { threads.len() } else { 0 };
        assert_eq!(
            own, expected,
            "fsyncs on the writer's thread, lone_writer_syncs {lone_writer_syncs}"
        );
        db.close().unwrap();
    }
}

/// Options under which no compaction ever runs: a backlog builds up.
fn deferring_compaction() -> Options {
    Options::default().l0_compaction_files(1000).l0_stall_files(1000, 1000)
}

/// Found in review: `close` stopped the worker's doorbell, but the worker went on through its
/// whole backlog of compactions before `close` could return. Now it finishes the job in
/// progress and starts no other; the tree is left as it is, for the next open to carry on.
#[test]
fn close_finishes_the_job_in_progress_and_leaves_the_backlog() {
    let fs = MemFs::new();
    let db = Db::open("/db", deferring_compaction(), MemRuntime::new(&fs)).unwrap();
    for table in 0..8u32 {
        for i in 0..24u32 {
            let key = format!("key{:04}", i * 8 + table % 8);
            db.put(key.as_bytes(), &table.to_le_bytes(), WriteOptions::default()).unwrap();
        }
        db.flush().unwrap();
    }
    assert_eq!(db.metrics().level_files[0], 8);
    db.close().unwrap();

    // Every level overdue: tables of one key each, and level targets of a few bytes.
    let overdue = Options::default()
        .l0_compaction_files(1)
        .target_file_bytes(1)
        .level1_bytes_max(1)
        .block_cache_bytes(0);
    // The worker's first job is held on its first table read until close has begun (its seal
    // syncs the WAL): that job is the one in progress when close comes.
    let gate = Arc::new(Gate::default());
    let (reading_tx, reading) = mpsc::channel();
    let reading_tx = Mutex::new(reading_tx);
    let seen = Arc::clone(&gate);
    let rt = hooked(&fs, move |op, path| match op {
        Op::Sync if is(path, "log") => seen.open(),
        Op::Read if is(path, "sst") => {
            let _ = reading_tx.lock().unwrap().send(());
            seen.pass();
        }
        _ => {}
    });
    let db = Db::open("/db", overdue, rt).unwrap();
    reading.recv_timeout(HANG_BOUND).expect("the worker started compacting");
    // A `compact_range` waiting for the worker is told the database closed.
    let mut compacting = {
        let db = db.clone();
        Box::pin(async move { db.compact_range_async(b"key0000", b"key9999").await })
    };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(compacting.as_mut().poll(&mut cx).is_pending());
    let outcome = bounded(move || {
        let closed = db.close();
        (closed, db.metrics())
    });
    let (closed, m) = outcome.expect("close hung");
    gate.open();
    closed.unwrap();
    let compacted = pollster::block_on(compacting);
    assert!(matches!(compacted, Err(Error::Closed)), "compact_range: {compacted:?}");
    assert_eq!(m.compactions, 1, "close ran more compactions than the one in progress");
    assert!(
        m.level_files[2..].iter().all(|&n| n == 0),
        "close went on past the job in progress: {:?}",
        m.level_files
    );
    let db = open(&fs).unwrap();
    assert_eq!(db.get(b"key0007").unwrap().as_deref(), Some(&7u32.to_le_bytes()[..]));
    db.close().unwrap();
}

/// Found in review: before each fsync the sync task waited for the commit leader to let go of
/// leadership, so that a group being appended would not miss it. A leader stalled for room
/// (here: every memtable held, the flush that frees one held up) holds leadership for as long
/// as the stall lasts, and a synced write already in the WAL waited for all of it. Now the
/// sync task waits only for a leader that is appending.
#[test]
fn a_synced_write_in_the_log_is_not_held_up_by_a_stalled_leader() {
    let fs = MemFs::new();
    let flush_gate = Arc::new(Gate::default());
    let sync_gate = Arc::new(Gate::default());
    let hold_next_sync = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let rt = {
        let (flush_gate, sync_gate) = (Arc::clone(&flush_gate), Arc::clone(&sync_gate));
        let hold_next_sync = Arc::clone(&hold_next_sync);
        hooked(&fs, move |op, path| match op {
            Op::Create if is(path, "sst") => flush_gate.pass(),
            Op::Sync if is(path, "log") && hold_next_sync.swap(false, Ordering::SeqCst) => {
                let _ = entered_tx.lock().unwrap().send(());
                sync_gate.pass();
            }
            _ => {}
        })
    };
    // The sync task's fsyncs are what this is about (a lone writer would run its own).
    let opts = Options::default()
        .memtable_bytes_max(4096)
        .wal_preallocate_bytes(0)
        .lone_writer_syncs(false);
    let db = Db::open("/db", opts, rt).unwrap();
    let big = vec![7u8; 5000];
    // Fills the first memtable; the next write retires it, and its flush is held up: from now
    // on both memtables allowed are held.
    db.put(b"a", &big, WriteOptions::default()).unwrap();
    db.put(b"b", b"small", WriteOptions::default()).unwrap();
    // The retired log is finished and the new one has its file: the fsync held below is then
    // the synced write's own.
    db.sync_wal().unwrap();

    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let start = |key: &'static [u8], value: Vec<u8>, sync: bool| {
        let db = db.clone();
        let opts = if sync { WriteOptions::synced() } else { WriteOptions::default() };
        Box::pin(async move { db.put_async(key, &value, opts).await })
    };
    // A synced write whose fsync the sync task starts, then is held in.
    hold_next_sync.store(true, Ordering::SeqCst);
    let mut first = start(b"c", b"small".to_vec(), true);
    assert!(first.as_mut().poll(&mut cx).is_pending());
    entered.recv_timeout(HANG_BOUND).expect("the sync task started its fsync");
    // A synced write appended while that fsync runs, which fills the memtable: it needs the
    // next fsync.
    let mut second = start(b"d", big.clone(), true);
    assert!(second.as_mut().poll(&mut cx).is_pending());
    // The next leader must retire the full memtable and stalls for room, holding leadership.
    let mut stalled = start(b"e", b"small".to_vec(), false);
    assert!(stalled.as_mut().poll(&mut cx).is_pending());
    assert!(db.metrics().write_stalls > 0, "the leader stalled");

    sync_gate.open();
    let outcome = bounded(move || pollster::block_on(second));
    // Let the stalled leader go whatever happened, so nothing is left waiting.
    flush_gate.open();
    pollster::block_on(stalled).unwrap();
    pollster::block_on(first).unwrap();
    let second = outcome.expect("the synced write waited for the stalled leader's stall");
    second.unwrap();
    db.close().unwrap();
}

/// The other side of `close` leaving the backlog: a writer stalled for room must still get it,
/// or `close`'s seal, queued behind that writer, would wait forever. Here the seal is then
/// itself stalled by level 0, until a compaction that can only start after `close` has begun.
#[test]
fn close_while_a_writer_is_stalled_for_room_still_completes() {
    let fs = MemFs::new();
    let flush_gate = Arc::new(Gate::default());
    let armed = Arc::new(AtomicBool::new(false));
    let rt = {
        let (flush_gate, armed) = (Arc::clone(&flush_gate), Arc::clone(&armed));
        hooked(&fs, move |op, path| {
            if op == Op::Create && is(path, "sst") && armed.load(Ordering::SeqCst) {
                flush_gate.pass();
            }
        })
    };
    let opts =
        Options::default().memtable_bytes_max(4096).wal_preallocate_bytes(0).l0_stall_files(2, 2);
    let db = Db::open("/db", opts.clone(), rt).unwrap();
    let big = vec![7u8; 5000];
    db.put(b"a", &big, WriteOptions::default()).unwrap();
    db.flush().unwrap();
    // One table in level 0; the next flush, held up, brings it to the stop threshold.
    armed.store(true, Ordering::SeqCst);
    db.put(b"b", &big, WriteOptions::default()).unwrap();
    db.put(b"c", b"small", WriteOptions::default()).unwrap();
    // The log retired by that rotation is finished, so the rotation below waits only for room.
    db.sync_wal().unwrap();
    db.put(b"d", &big, WriteOptions::default()).unwrap();

    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Must retire the full memtable, but every memtable allowed is held: it stalls.
    let mut stalled = {
        let db = db.clone();
        Box::pin(async move { db.put_async(b"e", b"small", WriteOptions::default()).await })
    };
    assert!(stalled.as_mut().poll(&mut cx).is_pending());
    assert!(db.metrics().write_stalls > 0, "the leader stalled");
    // Close begins, and its seal queues behind the stalled leader.
    let mut closing = {
        let db = db.clone();
        Box::pin(async move { db.close_async().await })
    };
    assert!(closing.as_mut().poll(&mut cx).is_pending());

    flush_gate.open();
    let outcome = bounded(move || (pollster::block_on(stalled), pollster::block_on(closing)));
    let (written, closed) = outcome.expect("close hung: the worker left a stalled writer");
    written.unwrap();
    closed.unwrap();
    let db = Db::open("/db", opts, MemRuntime::new(&fs)).unwrap();
    for key in [b"a", b"b", b"c", b"d", b"e"] {
        assert!(db.get(key).unwrap().is_some(), "{key:?} is lost");
    }
    db.close().unwrap();
}

/// Found in review: open created missing parent directories but synced only the database
/// directory's own parent, so after a power loss a new parent's entry could be gone, and with
/// it the whole database, synced writes included.
#[test]
fn a_database_in_new_parent_directories_survives_a_power_loss() {
    let fs = MemFs::new();
    let db = Db::open("/a/b/db", Options::default(), MemRuntime::new(&fs)).unwrap();
    db.put(b"k", b"v", WriteOptions::synced()).unwrap();
    drop(db);
    let disk = fs.crash_keep_nothing();
    let db = Db::open("/a/b/db", Options::default(), MemRuntime::new(&disk)).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "the synced write is lost");
    db.close().unwrap();
}

/// Found by the simulator once directory changes could survive a power loss out of order (a
/// file system without ordered metadata): `CURRENT` was renamed into place before the new
/// MANIFEST's own name was synced, so the rename could survive while the MANIFEST's name did
/// not, and the next open failed with "MANIFEST is missing". Here the process dies right after
/// the rename, the power goes, and every seed's crash image must open.
#[test]
fn current_never_names_a_manifest_a_power_loss_can_take() {
    for seed in 0..100 {
        let fs = MemFs::new();
        fs.set_crash_model(CrashModel { unordered_dirs: true, ..CrashModel::default() });
        let renamed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&renamed);
        let rt = hooked(&fs, move |op, _| {
            assert!(!flag.load(Ordering::SeqCst), "the process dies right after the rename");
            if op == Op::Rename {
                flag.store(true, Ordering::SeqCst);
            }
        });
        let open = std::panic::AssertUnwindSafe(|| Db::open("/db", Options::default(), rt));
        let died = std::panic::catch_unwind(open);
        assert!(died.is_err() && renamed.load(Ordering::SeqCst), "seed {seed}");
        let disk = fs.crash(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let db = Db::open("/db", Options::default(), MemRuntime::new(&disk))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        db.close().unwrap();
    }
}

/// Found by the simulator once removals could fail: a table no version names (left by a flush
/// that crashed before its MANIFEST edit) whose deletion failed at open was forgotten, so the
/// structure checker found a table "on disk but neither live nor obsolete" and the worker died
/// on it. Now the worker retries the deletion before each job until it succeeds.
#[test]
fn a_table_whose_deletion_failed_at_open_is_deleted_later() {
    let fs = MemFs::new();
    open(&fs).unwrap().close().unwrap();
    let stray = Path::new("/db/000050.sst");
    let file = pollster::block_on(fs.create(stray)).unwrap();
    pollster::block_on(file.write_at(0, b"a table no version names")).unwrap();
    let failing =
        FaultFs::new(fs.clone()).with_rule(OpKind::Remove, Predicate::always(), Effect::EIO);
    let rt = MemRuntime::over(failing.clone());
    let flushed = bounded(move || {
        let db = Db::open("/db", Options::default(), rt)?;
        db.put(b"k", b"v", WriteOptions::default())?;
        db.flush()?;
        failing.clear_rules();
        db.put(b"k2", b"v", WriteOptions::default())?;
        db.flush()?;
        db.close()
    });
    flushed.expect("the flush hung").expect("the flushes succeed");
    let gone = pollster::block_on(fs.open(stray)).err().map(|e| e.kind());
    assert_eq!(gone, Some(std::io::ErrorKind::NotFound), "the stray table is deleted");
}

/// Unsynced writes make the sync task sync the WAL in the background once `wal_bytes_per_sync`
/// bytes are unsynced: no synced write, no rotation and no close asks for it here.
#[test]
fn unsynced_bytes_are_synced_in_the_background() {
    let fs = MemFs::new();
    let (synced, syncs) = mpsc::channel();
    let rt = hooked(&fs, move |op, path| {
        if op == Op::Sync && is(path, "log") {
            let _ = synced.send(());
        }
    });
    let opts = Options::default().wal_preallocate_bytes(0).wal_bytes_per_sync(4096);
    let db = Db::open("/db", opts, rt).unwrap();
    // Opening may sync the new log; only syncs after these writes count.
    while syncs.try_recv().is_ok() {}
    let value = vec![7u8; 1000];
    for key in 0..8u8 {
        db.put(&[key], &value, WriteOptions::default()).unwrap();
    }
    syncs.recv_timeout(HANG_BOUND).expect("a background fsync of the WAL");
    db.close().unwrap();
}

/// The next fsync of a WAL, once armed: it tells `entered` and waits at `gate`.
struct HeldSync {
    gate: Arc<Gate>,
    armed: Arc<AtomicBool>,
    entered: mpsc::Receiver<()>,
}

impl HeldSync {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

/// A runtime over `fs` whose next WAL fsync, once armed, is held (see `HeldSync`).
fn held_log_sync(fs: &MemFs) -> (Arc<MemRuntime>, HeldSync) {
    let gate = Arc::new(Gate::default());
    let armed = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let rt = {
        let (gate, armed) = (Arc::clone(&gate), Arc::clone(&armed));
        hooked(fs, move |op, path| {
            if op == Op::Sync && is(path, "log") && armed.swap(false, Ordering::SeqCst) {
                let _ = entered_tx.lock().unwrap().send(());
                gate.pass();
            }
        })
    };
    (rt, HeldSync { gate, armed, entered })
}

/// A rotation leaves the retired log's last fsync to the sync task: while that fsync is held
/// (a slow disk), unsynced writes go on into the new log, whose file is not created until the
/// old log is wholly synced (recovery reads damage in any log but the newest as corruption). A
/// synced write needs the new log on disk, so it waits for that fsync, and its wait is counted
/// as a rotation's pause. Everything written survives a crash that keeps only durable bytes.
#[test]
fn a_wal_rotation_leaves_the_old_logs_fsync_to_the_sync_task() {
    const SLOW_SYNC: Duration = Duration::from_millis(30);
    let fs = MemFs::new();
    let (rt, held) = held_log_sync(&fs);
    let opts =
        Options::default().memtable_bytes_max(4096).wal_preallocate_bytes(0).wal_bytes_per_sync(0);
    let db = Db::open("/db", opts, rt).unwrap();
    let logs = || -> Vec<String> {
        let files = fs.files(Path::new("/db")).unwrap();
        files.into_iter().map(|f| f.name).filter(|n| n.ends_with(".log")).collect()
    };
    let first = logs();
    assert_eq!(first.len(), 1);
    held.arm();
    // Fills the memtable; the next write retires it and its log.
    db.put(b"a", &vec![7u8; 5000], WriteOptions::default()).unwrap();
    let rotated = {
        let db = db.clone();
        bounded(move || db.put(b"b", b"small", WriteOptions::default()))
    };
    rotated.expect("the rotation waited for the old log's fsync").unwrap();
    held.entered.recv_timeout(HANG_BOUND).expect("the sync task started the old log's fsync");
    let unsynced = {
        let db = db.clone();
        bounded(move || {
            for i in 0..20u32 {
                db.put(format!("u{i:02}").as_bytes(), b"v", WriteOptions::default())?;
            }
            db.get(b"u19")
        })
    };
    let read = unsynced.expect("unsynced writes waited for the old log's fsync");
    assert_eq!(read.unwrap().as_deref(), Some(&b"v"[..]));
    // (The old log may be gone already: its memtable's flush does not wait for its fsync.)
    let new_logs = logs().into_iter().filter(|n| !first.contains(n)).count();
    assert_eq!(new_logs, 0, "the new log's file waits until the old log is wholly synced");

    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut synced = {
        let db = db.clone();
        Box::pin(async move { db.put_async(b"s", b"v", WriteOptions::synced()).await })
    };
    assert!(synced.as_mut().poll(&mut cx).is_pending(), "a synced write waits for the fsync");
    // The disk's latency, not a wait for an event.
    std::thread::sleep(SLOW_SYNC);
    held.gate.open();
    pollster::block_on(synced).unwrap();
    assert_eq!(logs().into_iter().filter(|n| !first.contains(n)).count(), 1);
    let m = db.metrics();
    assert!(m.memtable_rotations >= 1);
    let slow_us = SLOW_SYNC.as_micros() as u64;
    // Counted as a rotation's pause, not as a wait for a memtable or for level 0.
    assert!(m.wal_rotation_max_us >= slow_us, "longest rotation {} µs", m.wal_rotation_max_us);
    assert!(m.write_pause_max_us >= slow_us, "longest pause {} µs", m.write_pause_max_us);
    assert_eq!((m.memtable_wait_max_us, m.level0_stop_max_us), (0, 0));
    drop(db);
    let disk = fs.crash_keep_nothing();
    let db = open(&disk).unwrap();
    for key in [&b"a"[..], b"b", b"u00", b"u19", b"s"] {
        assert!(db.get(key).unwrap().is_some(), "{} lost", String::from_utf8_lossy(key));
    }
    db.close().unwrap();
}

/// A runtime over `fs` that holds a MANIFEST edit's seal: once armed, the second MANIFEST fsync
/// (the first is the edit's own) tells `entered` and waits at `gate`. Every table created
/// after that is told to `tables`.
fn held_manifest_seal(fs: &MemFs) -> (Arc<MemRuntime>, HeldSeal) {
    let gate = Arc::new(Gate::default());
    let countdown = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered) = mpsc::channel();
    let (table_tx, tables) = mpsc::channel();
    let (entered_tx, table_tx) = (Mutex::new(entered_tx), Mutex::new(table_tx));
    let rt = {
        let (gate, countdown) = (Arc::clone(&gate), Arc::clone(&countdown));
        let held = Arc::new(AtomicBool::new(false));
        hooked(fs, move |op, path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let manifest = name.is_some_and(|n| n.starts_with("MANIFEST-"));
            if op == Op::Sync && manifest {
                let left = countdown
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if left == Ok(1) {
                    held.store(true, Ordering::SeqCst);
                    let _ = entered_tx.lock().unwrap().send(());
                    gate.pass();
                }
            }
            if op == Op::Create && is(path, "sst") && held.load(Ordering::SeqCst) {
                let _ = table_tx.lock().unwrap().send(path.to_path_buf());
            }
        })
    };
    (rt, HeldSeal { gate, countdown, entered, tables })
}

/// See [`held_manifest_seal`].
struct HeldSeal {
    gate: Arc<Gate>,
    countdown: Arc<AtomicUsize>,
    entered: mpsc::Receiver<()>,
    tables: mpsc::Receiver<PathBuf>,
}

impl HeldSeal {
    fn arm(&self) {
        self.countdown.store(2, Ordering::SeqCst);
    }
}

fn names(fs: &MemFs, ext: &str) -> Vec<String> {
    let files = fs.files(Path::new("/db")).unwrap().into_iter().map(|f| f.name);
    files.filter(|n| n.ends_with(ext)).collect()
}

/// A flush's memtable leaves as soon as its MANIFEST edit is durable, before the seal that
/// attests the edit: while the seal's fsync is held (a slow disk), a writer waiting for the
/// memtable's room goes on. The memtable's WAL stays on disk until the seal is durable: until
/// then a bit flip in the edit would read as a torn tail, and recovery would need that WAL.
#[test]
fn a_flush_makes_room_before_its_manifest_seal_and_deletes_its_wal_after() {
    let fs = MemFs::new();
    let (rt, held) = held_manifest_seal(&fs);
    let opts = Options::default().memtable_bytes_max(4096).wal_preallocate_bytes(0);
    let db = Db::open("/db", opts, rt).unwrap();
    let first_log = names(&fs, ".log");
    assert_eq!(first_log.len(), 1);
    held.arm();
    // Two full memtables (the most there may be): the first is flushed while the second fills,
    // and the third write waits for the first's room.
    db.put(b"a", &vec![7u8; 5000], WriteOptions::default()).unwrap();
    db.put(b"b", &vec![8u8; 5000], WriteOptions::default()).unwrap();
    held.entered.recv_timeout(HANG_BOUND).expect("the first flush reached its seal");
    let wrote = {
        let db = db.clone();
        bounded(move || db.put(b"c", b"small", WriteOptions::default()))
    };
    wrote.expect("a writer waited for the MANIFEST seal's fsync").unwrap();
    assert_eq!(db.get(b"a").unwrap().map(|v| v.len()), Some(5000), "a is read from its table");
    let logs = names(&fs, ".log");
    assert!(logs.contains(&first_log[0]), "the flushed WAL is kept until the seal: {logs:?}");
    held.gate.open();
    db.wait_for_compactions().unwrap();
    let logs = names(&fs, ".log");
    assert!(!logs.contains(&first_log[0]), "the flushed WAL is deleted after the seal: {logs:?}");
    db.sync_wal().unwrap();
    drop(db);
    let db = open(&fs.crash_keep_nothing()).unwrap();
    for key in [&b"a"[..], b"b", b"c"] {
        assert!(db.get(key).unwrap().is_some(), "{} lost", String::from_utf8_lossy(key));
    }
    db.close().unwrap();
}

/// `Db::flush` returns once the flushed memtables' tables are attested in the MANIFEST (their
/// edit sealed), not when the memtables leave, one fsync earlier: a flush that returned before
/// the seal could report as saved writes that a crash and a later bit flip in the unsealed edit
/// would lose without an error.
#[test]
fn flush_returns_once_its_edit_is_sealed() {
    let fs = MemFs::new();
    let (rt, held) = held_manifest_seal(&fs);
    let db = Db::open("/db", Options::default(), rt).unwrap();
    db.put(b"k", b"v", WriteOptions::default()).unwrap();
    held.arm();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut flushed = Box::pin(db.flush_async());
    assert!(flushed.as_mut().poll(&mut cx).is_pending(), "the flush runs in the background");
    held.entered.recv_timeout(HANG_BOUND).expect("the flush reached its seal");
    // The memtable has left (the install comes before the seal).
    assert_eq!(db.metrics().memtable_bytes, 0);
    assert!(flushed.as_mut().poll(&mut cx).is_pending(), "flush returned before the seal");
    held.gate.open();
    pollster::block_on(flushed).unwrap();
    db.close().unwrap();
}

/// The tables a compaction replaces are not deleted before its MANIFEST edit is sealed, even
/// by another job's deletions meanwhile: a flush that starts while the compaction's seal is
/// held (and deletes every obsolete table no reader holds before it writes its own) leaves
/// them on disk. (The compaction job holds its inputs until it returns as well; the test fails
/// once neither holds them.)
#[test]
fn a_compactions_inputs_outlive_its_unsealed_edit() {
    let fs = MemFs::new();
    let (rt, held) = held_manifest_seal(&fs);
    let db = Db::open("/db", Options::default(), rt).unwrap();
    // Two overlapping tables, so that the compaction merges them (rather than moving them).
    for value in [b"v1", b"v2"] {
        db.put(b"k1", value, WriteOptions::default()).unwrap();
        db.put(b"k2", value, WriteOptions::default()).unwrap();
        db.flush().unwrap();
    }
    let inputs = names(&fs, ".sst");
    assert_eq!(inputs.len(), 2);
    held.arm();
    let compacted = {
        let db = db.clone();
        #[allow(clippy::disallowed_methods)] // a caller that waits while the test goes on
        std::thread::spawn(move || db.compact_range(b"", b"\xff"))
    };
    held.entered.recv_timeout(HANG_BOUND).expect("the compaction reached its seal");
    db.put(b"k3", b"v", WriteOptions::default()).unwrap();
    let flushed = {
        let db = db.clone();
        #[allow(clippy::disallowed_methods)] // a caller that waits while the test goes on
        std::thread::spawn(move || db.flush())
    };
    // The flush's own table: its job has deleted what it may.
    held.tables.recv_timeout(HANG_BOUND).expect("the flush wrote its table");
    let tables = names(&fs, ".sst");
    assert!(inputs.iter().all(|t| tables.contains(t)), "inputs {inputs:?}, on disk {tables:?}");
    held.gate.open();
    compacted.join().unwrap().unwrap();
    flushed.join().unwrap().unwrap();
    db.wait_for_compactions().unwrap();
    let tables = names(&fs, ".sst");
    assert!(inputs.iter().all(|t| !tables.contains(t)), "inputs {inputs:?}, on disk {tables:?}");
    for (key, value) in [(&b"k1"[..], &b"v2"[..]), (b"k2", b"v2"), (b"k3", b"v")] {
        assert_eq!(db.get(key).unwrap().as_deref(), Some(value));
    }
    db.close().unwrap();
}

/// Without a write buffer (`wal_buffer_bytes(0)`) an unsynced write is in the log file once
/// acknowledged, so that it survives a process crash: after a rotation it may not wait in
/// memory for the new log's file, and waits for the old log's fsync instead.
#[test]
fn without_a_write_buffer_an_unsynced_write_waits_for_the_new_logs_file() {
    let fs = MemFs::new();
    let (rt, held) = held_log_sync(&fs);
    let opts = Options::default()
        .memtable_bytes_max(4096)
        .wal_preallocate_bytes(0)
        .wal_bytes_per_sync(0)
        .wal_buffer_bytes(0);
    let db = Db::open("/db", opts, rt).unwrap();
    let first: Vec<String> =
        fs.files(Path::new("/db")).unwrap().into_iter().map(|f| f.name).collect();
    held.arm();
    // Fills the memtable; the next write retires it and its log, and waits for that fsync.
    db.put(b"a", &vec![7u8; 5000], WriteOptions::default()).unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut rotating = {
        let db = db.clone();
        Box::pin(async move { db.put_async(b"b", b"small", WriteOptions::default()).await })
    };
    let pending = rotating.as_mut().poll(&mut cx).is_pending();
    held.entered.recv_timeout(HANG_BOUND).expect("the sync task started the old log's fsync");
    assert!(pending, "an unsynced write was acknowledged before it was in a file");
    held.gate.open();
    pollster::block_on(rotating).unwrap();
    let files = fs.files(Path::new("/db")).unwrap();
    let new_log = files.iter().find(|f| f.name.ends_with(".log") && !first.contains(&f.name));
    let new_log = new_log.expect("the new log has its file");
    assert!(new_log.current_len > 0, "the write is in the new log's file");
    db.close().unwrap();
}

/// A rotation no longer syncs the directory for the new WAL (writers wait for a rotation): the
/// new log's first fsync does. A synced write into a log made by a rotation, and one into the
/// log made at open, survive a crash that keeps only durable names and bytes, with the flush
/// (whose table would sync the directory too) held up until after the crash.
#[test]
fn a_synced_write_in_a_new_log_survives_a_crash_that_drops_unsynced_names() {
    let fs = MemFs::new();
    let flush_gate = Arc::new(Gate::default());
    let rt = {
        let flush_gate = Arc::clone(&flush_gate);
        hooked(&fs, move |op, path| {
            if op == Op::Create && is(path, "sst") {
                flush_gate.pass();
            }
        })
    };
    let opts = Options::default().memtable_bytes_max(4096).wal_bytes_per_sync(0);
    let db = Db::open("/db", opts.clone(), rt).unwrap();
    db.put(b"first", b"1", WriteOptions::synced()).unwrap();
    // Fills the memtable; the next write rotates to a new log, then is synced in it.
    db.put(b"big", &vec![7u8; 5000], WriteOptions::default()).unwrap();
    db.put(b"after", b"2", WriteOptions::synced()).unwrap();
    assert!(db.metrics().memtable_rotations >= 1);
    assert_eq!(db.metrics().flushes, 0, "the flush is held up");
    let disk = fs.crash_keep_nothing();
    flush_gate.open();
    drop(db);
    let db = Db::open("/db", opts, MemRuntime::new(&disk)).unwrap();
    assert_eq!(db.get(b"first").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
    db.close().unwrap();
}
