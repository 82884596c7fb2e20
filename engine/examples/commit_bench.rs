//! Group-commit benchmark: synced writes of 16-byte keys and 100-byte values on real files.
//!
//! Runs the same workload with 1 writer and with N writers (default 16) and prints throughput,
//! latency percentiles and how many writes each fsync served. Usage:
//! `cargo bench-commit [--writers N] [--seconds S] [--dir PATH]`.
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
}

fn parse_args() -> Args {
    let mut args =
        Args { writers: 16, seconds: 3.0, dir: std::env::temp_dir().join("jadedb-commit-bench") };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => args.writers = value.parse().expect("--writers takes a number"),
            "--seconds" => args.seconds = value.parse().expect("--seconds takes a number"),
            "--dir" => args.dir = PathBuf::from(value),
            other => panic!("unknown flag {other}; flags: --writers N --seconds S --dir PATH"),
        }
    }
    args
}

struct RunResult {
    ops: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    syncs: u64,
}

fn run(dir: &PathBuf, writers: usize, seconds: f64) -> RunResult {
    let _ = std::fs::remove_dir_all(dir);
    let db = Db::open(dir, Options::default(), Arc::new(StdRuntime::new())).expect("open");
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
    let syncs = db.metrics().wal_syncs;
    db.close().expect("close");
    let _ = std::fs::remove_dir_all(dir);
    RunResult { ops: latency_us.len(), elapsed, latency_us, syncs }
}

fn report(writers: usize, r: &RunResult) -> f64 {
    let rate = r.ops as f64 / r.elapsed.as_secs_f64();
    println!(
        "writers={writers:<3} ops={:<8} ops/s={rate:<10.0} p50={}us p95={}us p99={}us fsyncs={} writes/fsync={:.1}",
        r.ops,
        r.latency_us.value_at_quantile(0.50),
        r.latency_us.value_at_quantile(0.95),
        r.latency_us.value_at_quantile(0.99),
        r.syncs,
        r.ops as f64 / r.syncs.max(1) as f64,
    );
    rate
}

fn main() {
    let args = parse_args();
    println!("synced puts, 16-byte keys, 100-byte values, {}s per run", args.seconds);
    let one = report(1, &run(&args.dir, 1, args.seconds));
    let many = report(args.writers, &run(&args.dir, args.writers, args.seconds));
    println!("speed-up with {} writers: {:.1}x", args.writers, many / one);
}
