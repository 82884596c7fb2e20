//! The peer benchmark: JadeDB, RocksDB and fjall run the same workloads, each workload of each
//! engine in a child process of its own (so peak RSS, bytes written and CPU time are that
//! engine's alone), the engines interleaved, repeated; the parent prints the medians and the
//! ratios JadeDB/RocksDB and JadeDB/fjall.
//!
//! Keys are 16 bytes (an 8-byte hash of the index, then the index: random order, unique),
//! values 100 bytes of incompressible bytes. Every engine gets the same memtable size and
//! block cache, and its own defaults otherwise; none compresses (RocksDB is built without
//! compression libraries, fjall's blocks of random bytes do not shrink).
//!
//! Usage: `run.sh [--keys N] [--memtable-mib M] [--cache-mib C] [--reps R]
//! [--engines jadedb,rocksdb,fjall] [--workloads fillrandom,...] [--dir D]`.

// The workspace's lints route files and clocks through the engine's runtime so the simulator
// controls them; a benchmark of real engines measures real files and clocks.
#![allow(clippy::disallowed_methods)]

mod engines;

use engines::{open, Engine};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 100;

const USAGE: &str = "usage: jadedb-peers [--keys N] [--memtable-mib M] [--cache-mib C] [--reps R] \
     [--engines jadedb,rocksdb,fjall] [--workloads fillrandom,...] [--dir D]";

/// Every workload, in the order of the table.
const WORKLOADS: [&str; 9] = [
    "fillrandom",
    "fillseq",
    "overwrite",
    "synced1",
    "synced16",
    "batched",
    "readrandom",
    "absent",
    "readseq",
];

#[derive(Clone, Debug)]
struct Config {
    keys: u64,
    memtable_mib: u64,
    cache_mib: u64,
    reps: usize,
    engines: Vec<String>,
    workloads: Vec<String>,
    dir: PathBuf,
}

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let mut c = Config {
            keys: 1_000_000,
            memtable_mib: 64,
            cache_mib: 256,
            reps: 3,
            engines: ["jadedb", "rocksdb", "fjall"].map(String::from).to_vec(),
            workloads: WORKLOADS.map(String::from).to_vec(),
            dir: std::env::temp_dir().join("jadedb-peers"),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_string());
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || value.parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"));
            match flag.as_str() {
                "--keys" => c.keys = number()?,
                "--memtable-mib" => c.memtable_mib = number()?,
                "--cache-mib" => c.cache_mib = number()?,
                "--reps" => c.reps = number()? as usize,
                "--engines" => c.engines = value.split(',').map(String::from).collect(),
                "--workloads" => c.workloads = value.split(',').map(String::from).collect(),
                "--dir" => c.dir = PathBuf::from(value),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(c)
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--keys".into(),
            self.keys.to_string(),
            "--memtable-mib".into(),
            self.memtable_mib.to_string(),
            "--cache-mib".into(),
            self.cache_mib.to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
        ]
    }
}

/// The `i`-th key of a key space: a hash of `(space, i)` first, so that increasing `i` gives
/// keys in random order, then `i`, so that keys never collide.
fn key(space: u64, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&mix(i ^ space.rotate_left(32)).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// Keys in order: the index, big-endian, zero-padded.
fn seq_key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    let mut state = mix(i.wrapping_add(0x5eed));
    for chunk in v.chunks_mut(8) {
        state = mix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const LIVE: u64 = 1;
const ABSENT: u64 = 2;

/// What one child measured.
#[derive(Clone, Debug, Default)]
struct Measured {
    ops_per_sec: f64,
    worst_ms: f64,
    rss_mib: f64,
    write_amp: f64,
    cpu_s: f64,
}

/// Runs `workload` on `engine` in this process and prints one `result` line.
fn child(cfg: &Config, engine: &str, workload: &str) {
    let dir = cfg.dir.join(format!("{engine}-{workload}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the database directory");
    let db: Arc<dyn Engine> =
        Arc::from(open(engine, &dir, cfg.memtable_mib << 20, cfg.cache_mib << 20));
    let n = cfg.keys;
    let user_bytes = |ops: u64| (ops * (16 + VALUE_BYTES as u64)) as f64;
    let mut m = Measured::default();
    // Bytes written and CPU time count from the start of the measured phase (after any
    // preload) to its end, a fill's settling included.
    let (written_before, cpu_before);
    let ops;
    let started;
    match workload {
        "fillrandom" | "fillseq" | "overwrite" => {
            if workload == "overwrite" {
                fill(&*db, n);
                db.settle();
            }
            (written_before, cpu_before) = (written_bytes(), cpu_seconds());
            started = Instant::now();
            let mut worst = Duration::ZERO;
            for i in 0..n {
                let k = match workload {
                    "fillseq" => seq_key(i),
                    "overwrite" => key(LIVE, mix(i) % n),
                    _ => key(LIVE, i),
                };
                let t = Instant::now();
                db.put(&k, &value(i), false);
                worst = worst.max(t.elapsed());
            }
            m.ops_per_sec = n as f64 / started.elapsed().as_secs_f64();
            m.worst_ms = worst.as_secs_f64() * 1e3;
            if let Some(notes) = db.pause_notes() {
                // The engine's own account of the pauses behind the worst put, for the record.
                eprintln!("notes {engine} {workload}: {notes}");
            }
            db.settle();
            ops = n;
        }
        "synced1" | "synced16" => {
            let threads: u64 = if workload == "synced1" { 1 } else { 16 };
            let per_thread = (n / 50 / threads).max(100);
            (written_before, cpu_before) = (written_bytes(), cpu_seconds());
            started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let db = Arc::clone(&db);
                    s.spawn(move || {
                        for i in 0..per_thread {
                            let i = t * per_thread + i;
                            db.put(&key(LIVE, i), &value(i), true);
                        }
                    });
                }
            });
            ops = per_thread * threads;
            m.ops_per_sec = ops as f64 / started.elapsed().as_secs_f64();
        }
        "batched" => {
            (written_before, cpu_before) = (written_bytes(), cpu_seconds());
            started = Instant::now();
            let mut batch = Vec::with_capacity(100);
            for i in 0..n {
                batch.push((key(LIVE, i).to_vec(), value(i).to_vec()));
                if batch.len() == 100 || i + 1 == n {
                    db.write_batch(&batch);
                    batch.clear();
                }
            }
            m.ops_per_sec = n as f64 / started.elapsed().as_secs_f64();
            ops = n;
        }
        "readrandom" | "absent" | "readseq" => {
            fill(&*db, n);
            db.settle();
            (written_before, cpu_before) = (written_bytes(), cpu_seconds());
            started = Instant::now();
            ops = match workload {
                "readseq" => db.scan(),
                _ => {
                    // Absent gets are ten times faster than reads of live keys: three per
                    // loaded key keep the timed window near a second (half a million took
                    // 0.15 s, and the row swung 0.92x-1.68x between sittings on noise).
                    let reads = if workload == "absent" { 3 * n } else { n / 2 };
                    let space = if workload == "absent" { ABSENT } else { LIVE };
                    let mut found = 0;
                    for i in 0..reads {
                        found += u64::from(db.get(&key(space, mix(i) % n)));
                    }
                    let expected = if workload == "absent" { 0 } else { reads };
                    assert_eq!(found, expected, "{engine} {workload}: keys found");
                    reads
                }
            };
            m.ops_per_sec = ops as f64 / started.elapsed().as_secs_f64();
        }
        _ => panic!("unknown workload {workload}"),
    }
    m.cpu_s = cpu_seconds() - cpu_before;
    if has_write_amp(workload) {
        // Everything the engine wrote (WAL, tables, MANIFEST, any preallocation) over what
        // the user wrote.
        m.write_amp = written_bytes().saturating_sub(written_before) as f64 / user_bytes(ops);
    }
    drop(db);
    m.rss_mib = peak_rss_kib() as f64 / 1024.0;
    println!(
        "result ops_per_sec={:.0} worst_ms={:.2} rss_mib={:.1} write_amp={:.2} cpu_s={:.2}",
        m.ops_per_sec, m.worst_ms, m.rss_mib, m.write_amp, m.cpu_s
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `workload` ends with its writes settled into tables, so that the bytes written
/// over the bytes put is the engine's write amplification.
fn has_write_amp(workload: &str) -> bool {
    matches!(workload, "fillrandom" | "fillseq" | "overwrite")
}

/// Loads `n` keys in random order, unsynced.
fn fill(db: &dyn Engine, n: u64) {
    for i in 0..n {
        db.put(&key(LIVE, i), &value(i), false);
    }
}

/// A field of `/proc/self/io`, or 0 where it cannot be read.
fn proc_io(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(": ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes this process has written through system calls: every engine writes its files with
/// `write`/`pwrite`, none through a mapping.
fn written_bytes() -> u64 {
    proc_io("wchar")
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// User and system CPU time of this process, from `/proc/self/stat` (in clock ticks of
/// 1/100 s, Linux's `USER_HZ`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing paren.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the paren.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn parse_result(line: &str) -> Option<Measured> {
    let rest = line.strip_prefix("result ")?;
    let mut m = Measured::default();
    for pair in rest.split_whitespace() {
        let (name, v) = pair.split_once('=')?;
        let v: f64 = v.parse().ok()?;
        match name {
            "ops_per_sec" => m.ops_per_sec = v,
            "worst_ms" => m.worst_ms = v,
            "rss_mib" => m.rss_mib = v,
            "write_amp" => m.write_amp = v,
            "cpu_s" => m.cpu_s = v,
            _ => {}
        }
    }
    Some(m)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn parent(cfg: &Config) {
    let me = std::env::current_exe().expect("this program's path");
    let mut results: BTreeMap<(String, String), Vec<Measured>> = BTreeMap::new();
    println!(
        "peers: {} keys of 16 bytes with {VALUE_BYTES}-byte values, {} MiB memtables, {} MiB \
         block cache, {} repetitions, engines {}",
        cfg.keys,
        cfg.memtable_mib,
        cfg.cache_mib,
        cfg.reps,
        cfg.engines.join(",")
    );
    for rep in 0..cfg.reps {
        for workload in &cfg.workloads {
            // Interleaved, and each repetition starts with another engine, so that a noisy
            // minute of the machine does not fall on one engine alone.
            let k = cfg.engines.len();
            for j in 0..k {
                let engine = &cfg.engines[(j + rep) % k];
                let out = Command::new(&me)
                    .arg("child")
                    .arg(engine)
                    .arg(workload)
                    .args(cfg.args())
                    .output()
                    .expect("run a child");
                let stdout = String::from_utf8_lossy(&out.stdout);
                let Some(m) = stdout.lines().find_map(parse_result) else {
                    eprintln!(
                        "{engine} {workload} failed: {}\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    std::process::exit(1);
                };
                eprintln!("rep {rep} {workload:>10} {engine:>7}: {m:?}");
                results.entry((workload.clone(), engine.clone())).or_default().push(m);
            }
        }
    }
    print_table(cfg, &results);
}

fn print_table(cfg: &Config, results: &BTreeMap<(String, String), Vec<Measured>>) {
    let med = |w: &str, e: &str, f: fn(&Measured) -> f64| {
        results.get(&(w.to_string(), e.to_string())).map(|ms| median(ms.iter().map(f).collect()))
    };
    // A measure, and whether a workload has it.
    type Row = (&'static str, fn(&Measured) -> f64, fn(&str) -> bool);
    let rows: [Row; 5] = [
        ("ops/s", |m| m.ops_per_sec, |_| true),
        ("worst put, ms", |m| m.worst_ms, has_write_amp),
        ("peak RSS, MiB", |m| m.rss_mib, |_| true),
        ("write amplification", |m| m.write_amp, has_write_amp),
        ("CPU seconds", |m| m.cpu_s, |_| true),
    ];
    let mut header = String::from("| workload | measure |");
    for e in &cfg.engines {
        header.push_str(&format!(" {e} |"));
    }
    let ratio_to: Vec<&String> = cfg.engines.iter().filter(|e| *e != "jadedb").collect();
    for e in &ratio_to {
        header.push_str(&format!(" jadedb/{e} |"));
    }
    println!("{header}");
    println!("{}", "| --- ".repeat(2 + cfg.engines.len() + ratio_to.len()) + "|");
    for w in &cfg.workloads {
        for (measure, f, applies) in &rows {
            if !applies(w) {
                continue;
            }
            let mut line = format!("| {w} | {measure} |");
            for e in &cfg.engines {
                match med(w, e, *f) {
                    Some(v) => line.push_str(&format!(" {} |", fmt(v))),
                    None => line.push_str(" - |"),
                }
            }
            for e in &ratio_to {
                match (med(w, "jadedb", *f), med(w, e, *f)) {
                    (Some(a), Some(b)) if b > 0.0 => line.push_str(&format!(" {:.2}x |", a / b)),
                    _ => line.push_str(" - |"),
                }
            }
            println!("{line}");
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        let (Some(engine), Some(workload)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: jadedb-peers child ENGINE WORKLOAD [options]");
            std::process::exit(2);
        };
        let cfg = Config::parse(&args[3..]).unwrap_or_else(|e| panic!("{e}"));
        child(&cfg, engine, workload);
        return;
    }
    let cfg = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    parent(&cfg);
}
