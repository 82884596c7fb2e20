//! Group-commit benchmark: synced writes of 16-byte keys and 100-byte values on real files.
//!
//! Runs the same workload with 1 writer and with N writers (default 16) and prints throughput,
//! latency percentiles and how many writes each fsync and each commit group served. Usage:
//! `cargo bench-commit [--writers N] [--seconds S] [--dir PATH] [--preallocate BYTES]
//! [--sync-delay-us US] [--no-adaptive-window]`.
//!
//! `--sync-delay-us` adds that much to every fsync, to see how the pipeline behaves on a disk
//! slower to sync than the machine's (a disk without a write cache, a network volume);
//! `--no-adaptive-window` turns `Options::adaptive_commit_window` off, to compare.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time and starts threads

use hdrhistogram::Histogram;
use jadedb::runtime::{BoxFuture, File, FileLock, FileSystem, JoinHandle, Runtime, StdRuntime};
use jadedb::{Db, Options, WriteOptions};
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    writers: usize,
    seconds: f64,
    dir: PathBuf,
    /// `Options::wal_preallocate_bytes`, if not the default.
    preallocate: Option<u64>,
    /// Added to every fsync.
    sync_delay: Duration,
    adaptive_window: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        writers: 16,
        seconds: 3.0,
        dir: std::env::temp_dir().join("jadedb-commit-bench"),
        preallocate: None,
        sync_delay: Duration::ZERO,
        adaptive_window: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-adaptive-window" {
            args.adaptive_window = false;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => args.writers = value.parse().expect("--writers takes a number"),
            "--seconds" => args.seconds = value.parse().expect("--seconds takes a number"),
            "--dir" => args.dir = PathBuf::from(value),
            "--preallocate" => {
                args.preallocate = Some(value.parse().expect("--preallocate takes a number"))
            }
            "--sync-delay-us" => {
                let us = value.parse().expect("--sync-delay-us takes a number");
                args.sync_delay = Duration::from_micros(us);
            }
            other => panic!(
                "unknown flag {other}; flags: --writers N --seconds S --dir PATH --preallocate \
                 BYTES --sync-delay-us US --no-adaptive-window"
            ),
        }
    }
    args
}

struct RunResult {
    ops: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    syncs: u64,
    groups: u64,
}

fn run(args: &Args, writers: usize) -> RunResult {
    let (dir, seconds) = (&args.dir, args.seconds);
    let _ = std::fs::remove_dir_all(dir);
    let mut options = Options::default().adaptive_commit_window(args.adaptive_window);
    if let Some(bytes) = args.preallocate {
        options = options.wal_preallocate_bytes(bytes);
    }
    let rt: Arc<dyn Runtime> = match args.sync_delay {
        Duration::ZERO => Arc::new(StdRuntime::new()),
        delay => Arc::new(SlowSync { std: StdRuntime::new(), delay }),
    };
    let db = Db::open(dir, options, rt).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                let value = [b'v'; 100];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{w:04}-{i:011}");
                    let t = Instant::now();
                    db.put(key.as_bytes(), &value, WriteOptions::synced()).expect("put");
                    hist.record(t.elapsed().as_micros() as u64).expect("record");
                    i += 1;
                }
                hist
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
    for h in handles {
        latency_us.add(h.join().expect("writer")).expect("merge");
    }
    let elapsed = start.elapsed();
    let metrics = db.metrics();
    db.close().expect("close");
    let _ = std::fs::remove_dir_all(dir);
    RunResult {
        ops: latency_us.len(),
        elapsed,
        latency_us,
        syncs: metrics.wal_syncs,
        groups: metrics.commit_groups,
    }
}

fn report(writers: usize, r: &RunResult) -> f64 {
    let rate = r.ops as f64 / r.elapsed.as_secs_f64();
    println!(
        "writers={writers:<3} ops={:<8} ops/s={rate:<10.0} p50={}us p95={}us p99={}us fsyncs={} writes/fsync={:.1} writes/group={:.1}",
        r.ops,
        r.latency_us.value_at_quantile(0.50),
        r.latency_us.value_at_quantile(0.95),
        r.latency_us.value_at_quantile(0.99),
        r.syncs,
        r.ops as f64 / r.syncs.max(1) as f64,
        r.ops as f64 / r.groups.max(1) as f64,
    );
    rate
}

fn main() {
    let args = parse_args();
    println!("synced puts, 16-byte keys, 100-byte values, {}s per run", args.seconds);
    let one = report(1, &run(&args, 1));
    let many = report(args.writers, &run(&args, args.writers));
    println!("speed-up with {} writers: {:.1}x", args.writers, many / one);
}

/// The machine's files, every fsync `delay` slower.
struct SlowSync {
    std: StdRuntime,
    delay: Duration,
}

impl std::fmt::Debug for SlowSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowSync").field("delay", &self.delay).finish()
    }
}

impl Runtime for SlowSync {
    fn fs(&self) -> &dyn FileSystem {
        self
    }
    fn now(&self) -> Duration {
        self.std.now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.std.sleep(duration)
    }
    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        self.std.spawn(name, task)
    }
    fn random_u64(&self) -> u64 {
        self.std.random_u64()
    }
}

type IoFuture<'a, T> = BoxFuture<'a, io::Result<T>>;

impl FileSystem for SlowSync {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            let file = self.std.fs().create(path).await?;
            Ok(Box::new(SlowFile { file, delay: self.delay }) as Box<dyn File>)
        })
    }
    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            let file = self.std.fs().open(path).await?;
            Ok(Box::new(SlowFile { file, delay: self.delay }) as Box<dyn File>)
        })
    }
    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        self.std.fs().remove(path)
    }
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        self.std.fs().rename(from, to)
    }
    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        self.std.fs().list(dir)
    }
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        self.std.fs().create_dir_all(dir)
    }
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        self.std.fs().sync_dir(dir)
    }
    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        self.std.fs().lock(path)
    }
}

#[derive(Debug)]
struct SlowFile {
    file: Box<dyn File>,
    delay: Duration,
}

impl File for SlowFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        self.file.read_at(offset, buf)
    }
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        self.file.write_at(offset, data)
    }
    fn sync_data(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            // The std runtime runs each task on a thread of its own: blocking it is the delay.
            std::thread::sleep(self.delay);
            self.file.sync_data().await
        })
    }
    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        self.file.truncate(len)
    }
    fn size(&self) -> IoFuture<'_, u64> {
        self.file.size()
    }
}
