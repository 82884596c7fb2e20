//! LSM acceptance benchmark: loads a database on real files and measures reads against it.
//!
//! `cargo bench-db [--keys N] [--phases load,readrandom,readseq,absent,bloom,zipf] ...` (see
//! `--help`).
//! Keys are 16 bytes in random order, values deterministic functions of the key, so every read
//! is also checked. Each phase prints one line of throughput and the engine counters that moved
//! during it (`Db::metrics` deltas): `load` adds the level shape and write amplification,
//! `readrandom` latency and blocks read per get, `readseq` a full ordered scan, `absent` gets of
//! absent keys as a user makes them (settled tree, block cache on), `bloom` how
//! many data blocks absent keys cost with and without filters, `zipf` the block cache hit rate
//! under a skewed workload.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time and reads machine facts

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use jadedb::{runtime::StdRuntime, Db, Metrics, Options, WriteOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY_BYTES: usize = 16;
const MIB: f64 = (1 << 20) as f64;
/// Keys per `scan` call in `readseq`: `Db::scan` materializes its whole range.
const SCAN_CHUNK_KEYS: u64 = 10_000;
/// Marks an absent key: loaded keys carry their index (below 2^63) in the last 8 bytes.
const ABSENT_TAG: u64 = 1 << 63;
/// Mixed into the seed for absent keys, so their prefixes differ from the loaded keys'.
const ABSENT_SEED_SALT: u64 = 0x5eed_ab5e_17ab_5e17;
/// Mixed into a key's index to derive its value.
const VALUE_SALT: u64 = 0x7a1e_0fc0_ffee_0001;

#[derive(Parser, Debug)]
#[command(
    name = "db_bench",
    about = "JadeDB LSM acceptance benchmark on real files (StdRuntime)",
    long_about = "JadeDB LSM acceptance benchmark on real files (StdRuntime).\n\n\
        The load phase always runs first, since every read phase needs its data. The bench \
        directory is removed at start and at the end."
)]
struct Args {
    /// Keys to load.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// `Options::min_blob_size`: values of at least this many bytes go to blob files
    /// [default: none, every value in the tables].
    #[arg(long)]
    min_blob_size: Option<usize>,
    /// Directory for the databases [default: <temp dir>/jadedb-db-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Phases to run, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "load,readrandom,readseq,absent,bloom,zipf"
    )]
    phases: Vec<Phase>,
    /// Seed of the key order and of the keys each read phase picks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Gets in readrandom, in bloom (per database) and in zipf [default: min(keys, 200000)].
    #[arg(long)]
    reads: Option<u64>,
    /// `Options::memtable_bytes_max`: small, so a load makes many level-0 tables.
    #[arg(long, default_value_t = 4 << 20)]
    memtable_bytes: usize,
    /// `Options::wal_bytes_per_sync` [default: the engine's].
    #[arg(long)]
    wal_bytes_per_sync: Option<u64>,
    /// `Options::max_background_compactions` [default: the engine's].
    #[arg(long)]
    max_background_compactions: Option<usize>,
    /// `Options::block_cache_bytes` for every phase but bloom (which runs uncached). Zipf's hit
    /// rate is capped by how much of the tables this holds (a 1M-key load makes ~130 MiB):
    /// keys are placed at random, so the hot keys of a Zipfian workload touch nearly every
    /// block, and the hot set is the whole table data.
    #[arg(long, default_value_t = 192 << 20)]
    block_cache_bytes: usize,
    /// `Options::bloom_bits_per_key` of the main database (bloom compares it with 0).
    #[arg(long, default_value_t = 10)]
    bloom_bits: usize,
    /// Keys loaded into bloom's second database, built without filters [default: keys]. Fewer
    /// keys make fewer tables, so fewer blocks per absent get without filters, which
    /// understates the reduction.
    #[arg(long)]
    bloom_keys: Option<u64>,
    /// Exponent of zipf's Zipfian distribution.
    #[arg(long, default_value_t = 0.99)]
    zipf_s: f64,
    /// Uncounted gets that warm zipf's cache first [default: reads]. The long tail makes
    /// first-touch misses of blocks a large share of a short run.
    #[arg(long)]
    zipf_warmup: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Load,
    Readrandom,
    Readseq,
    Absent,
    Bloom,
    Zipf,
}

/// The SplitMix64 generator: tiny, fast and good enough to pick keys; its finalizer doubles as
/// the hash that turns an index into a key.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (multiply-high: no modulo bias worth measuring at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finalizer: a bijection on u64 that scatters neighbouring inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Key `index` of the key set `seed`: a hashed prefix places it at random in key order (and,
/// being a bijection of the index, keeps keys unique); the index in the suffix lets a scan
/// recover which key it found.
fn key(seed: u64, index: u64) -> [u8; KEY_BYTES] {
    let mut k = [0; KEY_BYTES];
    k[..8].copy_from_slice(
        &mix(seed.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15))).to_be_bytes(),
    );
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// A key of another seed that no load writes (its suffix carries `ABSENT_TAG`).
fn absent_key(seed: u64, index: u64) -> [u8; KEY_BYTES] {
    key(seed ^ ABSENT_SEED_SALT, index | ABSENT_TAG)
}

/// Fills `value` with the value of key `index`: derived from the index, so reads can check it.
fn fill_value(index: u64, value: &mut [u8]) {
    for (j, chunk) in value.chunks_mut(8).enumerate() {
        let word = mix(index ^ VALUE_SALT ^ ((j as u64) << 40)).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// The index a loaded key carries in its suffix.
fn index_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[8..KEY_BYTES].try_into().expect("a 16-byte key"))
}

/// Counter deltas across a phase. (`Metrics` is `#[non_exhaustive]`, so it cannot be built
/// here to hold a difference.)
#[derive(Clone, Copy, Debug, Default)]
struct Delta {
    flushes: u64,
    flush_bytes: u64,
    compactions: u64,
    compaction_bytes_read: u64,
    compaction_bytes_written: u64,
    blob_bytes_written: u64,
    data_block_reads: u64,
    bloom_checks: u64,
    bloom_negatives: u64,
    block_cache_hits: u64,
    block_cache_misses: u64,
    table_bytes_read: u64,
    write_stalls: u64,
    write_stall_us: u64,
}

impl Delta {
    fn between(a: &Metrics, b: &Metrics) -> Delta {
        Delta {
            flushes: b.flushes - a.flushes,
            flush_bytes: b.flush_bytes - a.flush_bytes,
            compactions: b.compactions - a.compactions,
            compaction_bytes_read: b.compaction_bytes_read - a.compaction_bytes_read,
            compaction_bytes_written: b.compaction_bytes_written - a.compaction_bytes_written,
            blob_bytes_written: b.blob_bytes_written - a.blob_bytes_written,
            data_block_reads: b.data_block_reads - a.data_block_reads,
            bloom_checks: b.bloom_checks - a.bloom_checks,
            bloom_negatives: b.bloom_negatives - a.bloom_negatives,
            block_cache_hits: b.block_cache_hits - a.block_cache_hits,
            block_cache_misses: b.block_cache_misses - a.block_cache_misses,
            table_bytes_read: b.table_bytes_read - a.table_bytes_read,
            write_stalls: b.write_stalls - a.write_stalls,
            write_stall_us: b.write_stall_us - a.write_stall_us,
        }
    }

    /// Everything a closed-then-reopened database did: the counters restart at each open.
    fn since_open(m: &Metrics) -> Delta {
        Delta::between(&Metrics::default(), m)
    }

    fn plus(self, o: Delta) -> Delta {
        Delta {
            flushes: self.flushes + o.flushes,
            flush_bytes: self.flush_bytes + o.flush_bytes,
            compactions: self.compactions + o.compactions,
            compaction_bytes_read: self.compaction_bytes_read + o.compaction_bytes_read,
            compaction_bytes_written: self.compaction_bytes_written + o.compaction_bytes_written,
            blob_bytes_written: self.blob_bytes_written + o.blob_bytes_written,
            data_block_reads: self.data_block_reads + o.data_block_reads,
            bloom_checks: self.bloom_checks + o.bloom_checks,
            bloom_negatives: self.bloom_negatives + o.bloom_negatives,
            block_cache_hits: self.block_cache_hits + o.block_cache_hits,
            block_cache_misses: self.block_cache_misses + o.block_cache_misses,
            table_bytes_read: self.table_bytes_read + o.table_bytes_read,
            write_stalls: self.write_stalls + o.write_stalls,
            write_stall_us: self.write_stall_us + o.write_stall_us,
        }
    }

    fn write_fields(&self) -> String {
        format!(
            "flushes={} flush_MiB={:.1} compactions={} compaction_read_MiB={:.1} \
             compaction_written_MiB={:.1} write_stalls={} write_stall_ms={:.0}",
            self.flushes,
            self.flush_bytes as f64 / MIB,
            self.compactions,
            self.compaction_bytes_read as f64 / MIB,
            self.compaction_bytes_written as f64 / MIB,
            self.write_stalls,
            self.write_stall_us as f64 / 1e3,
        )
    }

    fn read_fields(&self, ops: u64) -> String {
        let per_op = |n: u64| n as f64 / ops.max(1) as f64;
        format!(
            "block_reads/op={:.3} bloom_checks/op={:.2} bloom_negatives={} cache_hits={} \
             cache_misses={} cache_hit_rate={} table_MiB_read={:.1}",
            per_op(self.data_block_reads),
            per_op(self.bloom_checks),
            self.bloom_negatives,
            self.block_cache_hits,
            self.block_cache_misses,
            self.hit_rate().map_or("n/a".to_string(), |r| format!("{:.2}%", r * 100.0)),
            self.table_bytes_read as f64 / MIB,
        )
    }

    fn hit_rate(&self) -> Option<f64> {
        let lookups = self.block_cache_hits + self.block_cache_misses;
        (lookups > 0).then(|| self.block_cache_hits as f64 / lookups as f64)
    }
}

/// "ops=.. secs=.. ops/s=..", the start of every phase line.
fn rate_fields(ops: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!("ops={ops} secs={secs:.2} ops/s={:.0}", ops as f64 / secs.max(1e-9))
}

/// Files and MiB per non-empty level.
fn level_shape(m: &Metrics) -> String {
    let levels: Vec<String> = (0..m.level_files.len())
        .filter(|&l| m.level_files[l] > 0)
        .map(|l| {
            format!("L{l}: {} files {:.1} MiB", m.level_files[l], m.level_bytes[l] as f64 / MIB)
        })
        .collect();
    if levels.is_empty() {
        "empty".to_string()
    } else {
        levels.join(" | ")
    }
}

fn latency_fields(hist: &Histogram<u64>) -> String {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    format!("p50={:.1}us p99={:.1}us p99.9={:.1}us", us(0.5), us(0.99), us(0.999))
}

fn open(dir: &Path, options: Options) -> Db {
    Db::open(dir, options, Arc::new(StdRuntime::new()))
        .unwrap_or_else(|e| panic!("opening the database in {}: {e}", dir.display()))
}

/// Waits until background work has stopped: nothing due, nothing running.
fn settle(db: &Db) {
    db.wait_for_compactions().expect("settle");
}

/// What `load` leaves behind for the read phases.
struct Loaded {
    db: Db,
    keys: u64,
}

/// Puts keys `0..keys` of `seed` in a random order, unsynced from one writer, syncs the WAL,
/// then closes and reopens so the background work settles; prints the phase under `label`.
fn load(args: &Args, label: &str, dir: &Path, options: Options, keys: u64) -> Loaded {
    // A Fisher-Yates shuffle of the indices: the order of inserts, independent of key order.
    let mut order: Vec<u64> = (0..keys).collect();
    let mut rng = SplitMix64(args.seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let db = open(dir, options.clone());
    let before = db.metrics();
    let mut value = vec![0; args.value_bytes];
    let start = Instant::now();
    // The slowest single put: a writer held by a WAL rotation or a stall shows here.
    let mut worst = Duration::ZERO;
    for &index in &order {
        fill_value(index, &mut value);
        let put_start = Instant::now();
        db.put(&key(args.seed, index), &value, WriteOptions::default()).expect("put");
        worst = worst.max(put_start.elapsed());
    }
    db.sync_wal().expect("sync_wal");
    let elapsed = start.elapsed();
    let m = db.metrics();
    println!(
        "{label:<10} worst_put_ms={:.2} pause_max_ms={:.2} wal_rotation_ms={:.1} rotations={} wal_syncs={}",
        worst.as_secs_f64() * 1e3,
        m.write_pause_max_us as f64 / 1e3,
        m.wal_rotation_us as f64 / 1e3,
        m.memtable_rotations - before.memtable_rotations,
        m.wal_syncs - before.wal_syncs,
    );
    drop(order);
    // Close waits for the flush in progress; the memtables it leaves are replayed and flushed
    // by the reopen, and compactions the reopen starts are waited for by `settle`.
    let settle_start = Instant::now();
    db.close().expect("close after load");
    let first = Delta::between(&before, &db.metrics());
    println!("{label:<10} {} {}", rate_fields(keys, elapsed), first.write_fields());
    let db = open(dir, options);
    settle(&db);
    let reopened = db.metrics();
    let second = Delta::since_open(&reopened);
    println!(
        "{label:<10} close+reopen+settle secs={:.2} {}",
        settle_start.elapsed().as_secs_f64(),
        second.write_fields()
    );
    let total = first.plus(second);
    let user_bytes = keys * (KEY_BYTES + args.value_bytes) as u64;
    println!("{label:<10} levels: {}", level_shape(&reopened));
    let written = total.flush_bytes + total.compaction_bytes_written + total.blob_bytes_written;
    println!(
        "{label:<10} write amplification={:.2} (flushed {:.1} MiB + compacted {:.1} MiB + blob \
         files {:.1} MiB over {:.1} MiB of keys and values)",
        written as f64 / user_bytes.max(1) as f64,
        total.flush_bytes as f64 / MIB,
        total.compaction_bytes_written as f64 / MIB,
        total.blob_bytes_written as f64 / MIB,
        user_bytes as f64 / MIB,
    );
    Loaded { db, keys }
}

/// Gets of uniformly random loaded keys, each value checked.
fn readrandom(args: &Args, loaded: &Loaded, reads: u64) {
    let db = &loaded.db;
    let mut rng = SplitMix64(args.seed ^ 0x7265_6164); // "read"
    let mut expected = vec![0; args.value_bytes];
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let before = db.metrics();
    let start = Instant::now();
    for _ in 0..reads {
        let index = rng.below(loaded.keys);
        let t = Instant::now();
        let got = db.get(&key(args.seed, index)).expect("get");
        hist.record(t.elapsed().as_nanos() as u64).expect("record");
        fill_value(index, &mut expected);
        check_value(index, got.as_deref(), &expected);
    }
    let elapsed = start.elapsed();
    let d = Delta::between(&before, &db.metrics());
    println!(
        "{:<10} {} {} {}",
        "readrandom",
        rate_fields(reads, elapsed),
        latency_fields(&hist),
        d.read_fields(reads)
    );
}

fn check_value(index: u64, got: Option<&[u8]>, expected: &[u8]) {
    match got {
        Some(v) if v == expected => {}
        Some(v) => panic!(
            "WRONG VALUE for key index {index}: got {} bytes {:02x?}..., expected {:02x?}...",
            v.len(),
            &v[..v.len().min(16)],
            &expected[..expected.len().min(16)]
        ),
        None => panic!("MISSING key index {index}: get returned None for a loaded key"),
    }
}

/// Reads the whole key space in order, in scans of about `SCAN_CHUNK_KEYS` keys: the 8-byte
/// prefix space is cut into equal ranges, which hold about equally many keys because prefixes
/// are hashes. The ranges are derived from the key space alone, not from the loaded keys, so
/// the count is a real check: every key found once, in order, with its value.
fn readseq(args: &Args, loaded: &Loaded) {
    let db = &loaded.db;
    let chunks = loaded.keys.div_ceil(SCAN_CHUNK_KEYS).max(1);
    let bound = |i: u64| (((u128::from(i)) << 64) / u128::from(chunks)) as u64;
    let mut expected = vec![0; args.value_bytes];
    let mut seen = 0u64;
    let mut last: Option<Vec<u8>> = None;
    let before = db.metrics();
    let start = Instant::now();
    for i in 0..chunks {
        let lo = bound(i).to_be_bytes();
        let hi = (i + 1 < chunks).then(|| bound(i + 1).to_be_bytes());
        let entries = db.scan(&lo, hi.as_ref().map(|h| &h[..])).expect("scan");
        for (k, v) in &entries {
            if let Some(prev) = &last {
                assert!(
                    prev.as_slice() < k.as_ref(),
                    "scan out of order: {prev:02x?} then {k:02x?}"
                );
            }
            let index = index_of(k);
            assert!(
                index < loaded.keys && k.as_ref() == key(args.seed, index),
                "scan returned a key that was never loaded: {k:02x?}"
            );
            fill_value(index, &mut expected);
            check_value(index, Some(v), &expected);
        }
        seen += entries.len() as u64;
        if let Some((k, _)) = entries.last() {
            last = Some(k.to_vec());
        }
    }
    let elapsed = start.elapsed();
    let d = Delta::between(&before, &db.metrics());
    assert_eq!(seen, loaded.keys, "readseq found {seen} keys, but {} were loaded", loaded.keys);
    println!(
        "{:<10} keys={seen} scans={chunks} secs={:.2} keys/s={:.0} {}",
        "readseq",
        elapsed.as_secs_f64(),
        seen as f64 / elapsed.as_secs_f64().max(1e-9),
        d.read_fields(seen)
    );
}

/// Gets of `reads` absent keys; returns data blocks read per get.
fn absent_gets(args: &Args, db: &Db, phase: &str, label: &str, reads: u64) -> f64 {
    let before = db.metrics();
    let start = Instant::now();
    for index in 0..reads {
        let k = absent_key(args.seed, index);
        if let Some(v) = db.get(&k).expect("get") {
            panic!("absent key {k:02x?} was found, with a {}-byte value", v.len());
        }
    }
    let elapsed = start.elapsed();
    let d = Delta::between(&before, &db.metrics());
    let negatives = if d.bloom_checks > 0 {
        format!("{:.2}%", d.bloom_negatives as f64 / d.bloom_checks as f64 * 100.0)
    } else {
        "n/a".to_string()
    };
    println!(
        "{phase:<10} {label} {} negatives/checks={negatives} {}",
        rate_fields(reads, elapsed),
        d.read_fields(reads)
    );
    d.data_block_reads as f64 / reads.max(1) as f64
}

/// Absent-key gets against the main database (filters on) and a second one built without
/// filters. Both run uncached, so every data block a get consults is a block read from its file.
fn bloom(args: &Args, main_dir: &Path, options: &Options, bench_dir: &Path, reads: u64) {
    let db = open(main_dir, options.clone().block_cache_bytes(0));
    settle(&db);
    let label = format!("filters={}bits/key", args.bloom_bits);
    let with = absent_gets(args, &db, "bloom", &label, reads);
    db.close().expect("close");

    let dir = bench_dir.join("no-bloom");
    let keys = args.bloom_keys.unwrap_or(args.keys);
    let no_filters = options.clone().bloom_bits_per_key(0).block_cache_bytes(0);
    let loaded = load(args, "bloom-load", &dir, no_filters, keys);
    let without = absent_gets(args, &loaded.db, "bloom", "filters=off     ", reads);
    loaded.db.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);

    let reduction = if without > 0.0 {
        format!("{:.2}%", (1.0 - with / without) * 100.0)
    } else {
        "n/a".into()
    };
    println!(
        "{:<10} data blocks read per absent get: with filters {with:.4}, without {without:.4}, \
         reduction {reduction} (target >= 98%)",
        "bloom"
    );
}

/// Gets drawn from a Zipfian distribution over the loaded keys (rank r is key index r, whose
/// place in key order and in load order is random), after a warm-up of a tenth as many.
fn zipf(args: &Args, main_dir: &Path, options: &Options, keys: u64, reads: u64) {
    // The exact distribution: a CDF over the ranks, sampled by binary search.
    let mut cdf = Vec::with_capacity(keys as usize);
    let mut total = 0.0;
    for rank in 0..keys {
        total += 1.0 / ((rank + 1) as f64).powf(args.zipf_s);
        cdf.push(total);
    }
    let mut rng = SplitMix64(args.seed ^ 0x7a69_7066); // "zipf"
    let mut sample = || {
        let u = rng.unit() * total;
        (cdf.partition_point(|&c| c <= u) as u64).min(keys - 1)
    };
    // Reopened, so the cache starts cold and holds only what this phase reads.
    let db = open(main_dir, options.clone());
    settle(&db);
    let mut expected = vec![0; args.value_bytes];
    let mut get_checked = |index: u64| {
        let got = db.get(&key(args.seed, index)).expect("get");
        fill_value(index, &mut expected);
        check_value(index, got.as_deref(), &expected);
    };
    let warmup = args.zipf_warmup.unwrap_or(reads);
    for _ in 0..warmup {
        get_checked(sample());
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let before = db.metrics();
    let start = Instant::now();
    for _ in 0..reads {
        let index = sample();
        let t = Instant::now();
        get_checked(index);
        hist.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    let elapsed = start.elapsed();
    let d = Delta::between(&before, &db.metrics());
    println!(
        "{:<10} s={} warmup={warmup} {} {} {}",
        "zipf",
        args.zipf_s,
        rate_fields(reads, elapsed),
        latency_fields(&hist),
        d.read_fields(reads)
    );
    // The cache against the tables it caches: a cache smaller than the data caps the hit rate
    // however skewed the reads, and a short warm-up leaves the tail's first touches as misses.
    let table_bytes: u64 = db.metrics().level_bytes.iter().sum();
    println!(
        "{:<10} block cache hit rate {} with a {:.0} MiB cache over {:.1} MiB of tables (target >= 95%)",
        "zipf",
        d.hit_rate().map_or("n/a".to_string(), |r| format!("{:.2}%", r * 100.0)),
        args.block_cache_bytes as f64 / MIB,
        table_bytes as f64 / MIB
    );
    db.close().expect("close");
}

/// Cheap facts about the machine: enough to tell two result sets apart.
fn machine_facts() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let proc_field = |file: &str, name: &str| {
        std::fs::read_to_string(file).ok().and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let model = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let memory = proc_field("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into());
    format!(
        "cpus={cpus} cpu=\"{model}\" memory={memory} os={}/{} build={}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        if cfg!(debug_assertions) { "debug (numbers meaningless)" } else { "release" }
    )
}

fn main() {
    let args = Args::parse();
    assert!(args.keys > 0, "--keys must be at least 1");
    assert!(args.keys < ABSENT_TAG, "--keys must be below 2^63");
    let bench_dir =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("jadedb-db-bench"));
    let main_dir = bench_dir.join("main");
    let reads = args.reads.unwrap_or(args.keys.min(200_000));
    let mut options = Options::default();
    if let Some(n) = args.max_background_compactions {
        options = options.max_background_compactions(n);
    }
    if let Some(bytes) = args.wal_bytes_per_sync {
        options = options.wal_bytes_per_sync(bytes);
    }
    let options = options
        .memtable_bytes_max(args.memtable_bytes)
        .block_cache_bytes(args.block_cache_bytes)
        .bloom_bits_per_key(args.bloom_bits)
        .min_blob_size(args.min_blob_size);
    let wants = |p: Phase| args.phases.contains(&p);

    println!("machine: {}", machine_facts());
    println!(
        "bench: keys={} key_bytes={KEY_BYTES} value_bytes={} reads={reads} seed={} phases={:?} dir={}",
        args.keys,
        args.value_bytes,
        args.seed,
        args.phases,
        bench_dir.display()
    );
    println!("options: {options:?}");

    let _ = std::fs::remove_dir_all(&bench_dir);
    let loaded = load(&args, "load", &main_dir, options.clone(), args.keys);
    if wants(Phase::Readrandom) {
        readrandom(&args, &loaded, reads);
    }
    if wants(Phase::Readseq) {
        readseq(&args, &loaded);
    }
    if wants(Phase::Absent) {
        loaded.db.flush().expect("flush");
        loaded.db.wait_for_compactions().expect("settle");
        absent_gets(&args, &loaded.db, "absent", "cached", reads);
    }
    let keys = loaded.keys;
    // The remaining phases reopen the main database with the options they need.
    loaded.db.close().expect("close");
    if wants(Phase::Bloom) {
        bloom(&args, &main_dir, &options, &bench_dir, reads);
    }
    if wants(Phase::Zipf) {
        zipf(&args, &main_dir, &options, keys, reads);
    }
    let _ = std::fs::remove_dir_all(&bench_dir);
}
