//! The metrics users watch, end to end: latency histograms count every put, get, fsync, flush
//! and compaction; bytes by kind add up; the Prometheus text names them; alerts are raised as
//! `tracing` warnings once when a threshold is passed and cleared when it no longer is.

use jadedb::{AlertThresholds, Db, Options, WriteBatch, WriteOptions};
use jadedb_fault::{MemFs, MemRuntime};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Small memtables and a small level-0 trigger, so that a few thousand writes flush and
/// compact (every timed kind of work then happens).
fn tiny() -> Options {
    Options::default()
        .memtable_bytes_max(4 << 10)
        .l0_compaction_files(2)
        .block_cache_bytes(64 << 10)
}

fn memory_by_component(m: &jadedb::Metrics) -> u64 {
    m.memtable_bytes + m.block_cache_bytes + m.table_memory_bytes + m.iterator_memory_bytes
}

fn key(k: usize) -> Vec<u8> {
    format!("key{k:05}").into_bytes()
}

#[test]
fn every_operation_is_timed_and_counted() {
    let fs = MemFs::new();
    let db = Db::open("/db", tiny(), MemRuntime::new(&fs)).unwrap();
    let (mut puts, mut user_bytes) = (0u64, 0u64);
    for i in 0..2000 {
        let (k, v) = (key(i % 700), vec![b'v'; 40 + i % 30]);
        user_bytes += (k.len() + v.len()) as u64;
        db.put(&k, &v, WriteOptions { sync: i % 100 == 0 }).unwrap();
        puts += 1;
    }
    let mut batch = WriteBatch::new();
    batch.delete(&key(1)).unwrap();
    batch.put(&key(2), b"two").unwrap();
    db.write(batch, WriteOptions::default()).unwrap();
    (puts, user_bytes) = (puts + 1, user_bytes + (key(1).len() + key(2).len() + 3) as u64);
    // Settled first: a compaction ending after the reads would close the tables they opened.
    db.wait_for_compactions().unwrap();
    for i in 0..500 {
        db.get(&key(i * 3)).unwrap();
    }
    let before = db.metrics();
    assert!(before.memtable_bytes > 0, "the active memtable holds the last writes");
    assert_eq!(before.memory_bytes, memory_by_component(&before));
    assert!(before.table_memory_bytes > 0, "the tables read hold their index and filter");
    db.compact_range(b"", b"\xff").unwrap();
    db.wait_for_compactions().unwrap();
    let m = db.metrics();

    assert_eq!(m.put_latency.count, puts);
    // Gets are sampled, one in eight per thread, the first included.
    assert_eq!(m.get_latency.count, 500_u64.div_ceil(8));
    assert_eq!(m.user_bytes, user_bytes);
    assert_eq!(m.wal_sync_latency.count, m.wal_syncs);
    assert_eq!(m.manifest_sync_latency.count, m.manifest_syncs);
    assert_eq!(m.flush_latency.count, m.flushes);
    assert_eq!(m.compaction_latency.count, m.compactions);
    assert!(m.flushes > 0 && m.compactions > 0, "{m:?}");
    assert!(m.commit_latency.count >= 1 && m.commit_latency.count <= m.commit_groups);
    for l in [m.put_latency, m.get_latency, m.wal_sync_latency, m.flush_latency] {
        assert!(l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
        assert!(l.max > Duration::ZERO, "{l:?}");
    }
    // Every table byte written went into some level, and write amplification is their sum.
    let per_level: u64 = m.level_bytes_written.iter().sum();
    assert_eq!(per_level, m.flush_bytes + m.compaction_bytes_written);
    let by_level: f64 = m.level_write_amplification().iter().sum();
    assert!((by_level - m.write_amplification()).abs() < 1e-9);
    assert!(m.write_amplification() > 0.0);
    assert!(m.manifest_bytes > 0);
    assert_eq!(m.memory_bytes, memory_by_component(&m));
    assert_eq!(m.memory_budget, 0);
    assert_eq!(m.background_jobs_queued(), 0);
    assert!(!m.alerts.any(), "{:?}", m.alerts);

    let text = m.prometheus();
    assert!(text.contains(&format!("jadedb_put_latency_seconds_count {puts}\n")), "{text}");
    assert!(text.contains(&format!("jadedb_user_bytes_total {user_bytes}\n")));
    assert!(text.contains("# TYPE jadedb_get_latency_seconds summary\n"));
    db.close().unwrap();
}

/// A `tracing` writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// Everything logged in this test binary at INFO and above, through a global subscriber: a
/// thread-scoped one would miss events whose callsite another test's thread cached as unwatched.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        captured
    })
}

#[test]
fn an_alert_is_raised_once_and_cleared() {
    let captured = log();
    {
        let fs = MemFs::new();
        // Memory over 0.5% of what the options size the engine for: 1 MiB memtables (two) and
        // no block cache, so about 10 KiB of writes passes it. Checked at every call.
        let thresholds = AlertThresholds::default()
            .memory_share(0.005)
            .check_interval(Duration::ZERO)
            .sustain(1);
        let options = Options::default()
            .memtable_bytes_max(1 << 20)
            .block_cache_bytes(0)
            .alert_thresholds(thresholds);
        let db = Db::open("/db", options, MemRuntime::new(&fs)).unwrap();
        db.put(b"k", b"v", WriteOptions::default()).unwrap();
        assert!(!db.metrics().alerts.memory);
        for i in 0..200 {
            db.put(&key(i), &[7; 100], WriteOptions::default()).unwrap();
        }
        let m = db.metrics();
        assert!(m.alerts.memory, "{m:?}");
        assert_eq!(m.alerts_raised, 1, "raised once, however many checks saw it");
        // Other tests in this binary raise other alerts; only this one raises the memory alert.
        let log = captured.take();
        let line = "WARN jadedb::metrics::alerts: jadedb alert: memory over its threshold";
        assert_eq!(log.matches(line).count(), 1, "{log}");
        // A flush empties the memtables: the alert clears, with an info event.
        db.flush().unwrap();
        let m = db.metrics();
        assert!(!m.alerts.memory, "{m:?}");
        assert_eq!(m.alerts_raised, 1);
        assert!(captured.take().contains("jadedb alert cleared: memory"));
        db.close().unwrap();
    }
}

#[test]
fn slow_writes_raise_the_latency_alert() {
    // A write P99 threshold of zero: every put is over it, judged once 100 were made.
    let thresholds = AlertThresholds::default()
        .write_p99(Duration::ZERO)
        .check_interval(Duration::ZERO)
        .sustain(1);
    let fs = MemFs::new();
    let db = Db::open("/db", Options::default().alert_thresholds(thresholds), MemRuntime::new(&fs))
        .unwrap();
    for i in 0..99 {
        db.put(&key(i), b"v", WriteOptions::synced()).unwrap();
    }
    assert!(!db.metrics().alerts.write_latency, "99 puts are too few to judge");
    db.put(&key(99), b"v", WriteOptions::synced()).unwrap();
    let m = db.metrics();
    assert!(m.alerts.write_latency, "{m:?}");
    assert_eq!(m.alerts_raised, 1);
    db.close().unwrap();
}

#[test]
fn a_full_disk_raises_the_disk_alert_on_real_files() {
    let dir = std::env::temp_dir().join(format!("jadedb-test-disk-alert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Any used share is over a threshold of zero: the alert reads the real file system.
    let thresholds =
        AlertThresholds::default().disk_share(0.0).check_interval(Duration::ZERO).sustain(1);
    let options = Options::default().alert_thresholds(thresholds);
    let db = Db::open(&dir, options, Arc::new(jadedb::runtime::StdRuntime::new())).unwrap();
    db.put(b"k", b"v", WriteOptions::default()).unwrap();
    let m = db.metrics();
    assert!(m.alerts.disk, "{m:?}");
    assert!(!m.alerts.memory && !m.alerts.background_jobs);
    db.close().unwrap();
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The adaptive commit window never holds an fsync back for a single writer: it would wait
/// for writers that are not there. On real files, whose fsyncs take long enough for the
/// writer to come back between two of them, and long enough for the window's trials to run
/// (it tries itself on after its first 100 ms when it sees two or more writers).
#[test]
fn a_single_synced_writer_never_waits_in_the_commit_window() {
    let dir = std::env::temp_dir().join(format!("jadedb-test-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = Arc::new(jadedb::runtime::StdRuntime::new());
    let db = Db::open(&dir, Options::default(), rt).unwrap();
    #[allow(clippy::disallowed_methods)] // the test must outlast the window's trials
    let start = std::time::Instant::now();
    let mut writes = 0u64;
    while start.elapsed() < Duration::from_millis(400) {
        db.put(&key(writes as usize % 1000), b"v", WriteOptions { sync: true }).unwrap();
        writes += 1;
    }
    let m = db.metrics();
    assert_eq!((m.commit_window_waits, m.commit_window_us), (0, 0), "{m:?}");
    assert!(m.wal_syncs >= writes, "every write had its own fsync: {m:?}");
    db.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
