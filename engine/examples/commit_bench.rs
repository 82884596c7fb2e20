//! Group-commit benchmark: synced writes of 16-byte keys and 100-byte values on real files.
//!
//! Runs the same workload with 1 writer and with N writers (default 16) and prints throughput,
//! latency percentiles and how many writes each fsync and each commit group served. Usage:
//! `cargo bench-commit [--writers N] [--seconds S] [--dir PATH] [--preallocate BYTES]`.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time and starts threads

use hdrhistogram::Histogram;
use jadedb::{runtime::StdRuntime, Db, Options, WriteOptions};
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
}

fn parse_args() -> Args {
    let mut args = Args {
        writers: 16,
        seconds: 3.0,
        dir: std::env::temp_dir().join("jadedb-commit-bench"),
        preallocate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => args.writers = value.parse().expect("--writers takes a number"),
            "--seconds" => args.seconds = value.parse().expect("--seconds takes a number"),
            "--dir" => args.dir = PathBuf::from(value),
            "--preallocate" => {
                args.preallocate = Some(value.parse().expect("--preallocate takes a number"))
            }
            other => panic!(
                "unknown flag {other}; flags: --writers N --seconds S --dir PATH --preallocate BYTES"
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
    let mut options = Options::default();
    if let Some(bytes) = args.preallocate {
        options = options.wal_preallocate_bytes(bytes);
    }
    let db = Db::open(dir, options, Arc::new(StdRuntime::new())).expect("open");
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
