//! `jadedb-sim`: runs seeded crash-recovery scenarios against JadeDB.
//!
//! `cargo sim run --seeds 0..10000 [--jobs N]` sweeps seeds; `cargo sim replay --seed S` reruns
//! one with a readable trace and its hash; `cargo sim check-determinism --seeds A..B` runs each
//! seed twice and compares trace hashes.

#[cfg(not(madsim))]
fn main() {
    eprintln!("jadedb-sim must be built with the madsim cfg: use `cargo sim ...`");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(madsim)]
mod cli {
    use clap::{Parser, Subcommand};
    use jadedb_sim::config::Bug;
    use jadedb_sim::runner::{self, print_failure, run_one, run_seeds_of};
    use jadedb_sim::sweep::{Only, Shard};
    use jadedb_sim::trace::Trace;
    use std::ops::Range;

    #[derive(Parser)]
    #[command(name = "jadedb-sim", about = "Seeded crash-recovery simulation of JadeDB")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Run the scenarios of a range of seeds.
        Run {
            /// Seeds as START..END (END excluded).
            #[arg(long, value_parser = parse_range)]
            seeds: Range<u64>,
            /// Parallel workers (default: the number of cores).
            #[arg(long)]
            jobs: Option<usize>,
            /// Plant a known bug (see `Bug::ALL` for the names; an unknown name lists them).
            #[arg(long, value_parser = Bug::parse)]
            bug: Option<Bug>,
            /// Run only the standard scenarios of the range, or only its scale share.
            #[arg(long, value_enum, default_value_t = Only::All)]
            only: Only,
            /// Run one of N shards of the range, as INDEX/N: seed S is in shard S % N, so the
            /// N shards together run every seed of the range once.
            #[arg(long, value_parser = Shard::parse, default_value = "0/1")]
            shard: Shard,
        },
        /// Rerun one seed with a readable trace and its hash.
        Replay {
            #[arg(long)]
            seed: u64,
            #[arg(long, value_parser = Bug::parse)]
            bug: Option<Bug>,
        },
        /// Run each seed twice and compare the trace hashes.
        CheckDeterminism {
            #[arg(long, value_parser = parse_range)]
            seeds: Range<u64>,
        },
    }

    fn parse_range(s: &str) -> Result<Range<u64>, String> {
        let (a, b) = s.split_once("..").ok_or("expected START..END")?;
        let a: u64 = a.parse().map_err(|e| format!("bad start: {e}"))?;
        let b: u64 = b.parse().map_err(|e| format!("bad end: {e}"))?;
        if a >= b {
            return Err("START must be below END".into());
        }
        Ok(a..b)
    }

    pub fn main() -> i32 {
        match Cli::parse().command {
            Command::Run { seeds, jobs, bug, only, shard } => run(seeds, only, shard, jobs, bug),
            Command::Replay { seed, bug } => replay(seed, bug),
            Command::CheckDeterminism { seeds } => check_determinism(seeds),
        }
    }

    fn run(
        seeds: Range<u64>,
        only: Only,
        shard: Shard,
        jobs: Option<usize>,
        bug: Option<Bug>,
    ) -> i32 {
        let jobs =
            jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let range = format!("{}..{}", seeds.start, seeds.end);
        let s = run_seeds_of(seeds, only, shard, jobs, bug, false);
        let count = s.standard + s.scale;
        if shard != Shard::WHOLE {
            println!("shard: {shard} of {range}, {count} seeds");
        }
        let t = &s.totals;
        println!(
            "coverage: {} of {count} scenarios crashed and recovered with synced and unsynced writes; \
             memtable rotation in {}, torn write in {}, failed writes (faults) in {}, clean close in {}",
            s.full_coverage, s.with_rotation, s.with_torn_write, s.with_failed_writes, s.with_clean_close
        );
        println!(
            "tables: flush in {} scenarios, a crash during a flush in {}; compaction in {}, a \
             crash during a compaction in {}",
            s.with_flush, s.with_crash_in_flush, s.with_compaction, s.with_crash_in_compaction
        );
        println!(
            "totals: {} crashes, {} recoveries checked, {} writes acked ({} synced), {} failed, \
             {} reads, {} scans and {} snapshot reads checked, {} flushes, {} compactions, \
             {} compact_range and {} flush calls",
            t.crashes,
            t.recoveries,
            t.writes_acked,
            t.synced_acked,
            t.writes_failed,
            t.reads,
            t.scans,
            t.snapshot_reads,
            t.flushes,
            t.compactions,
            t.compact_ranges,
            t.user_flushes
        );
        for line in runner::coverage_lines(&s, count) {
            println!("{line}");
        }
        if let Some(line) = runner::latency_line(&s) {
            println!("{line}");
        }
        println!(
            "scale: {} scenarios at scale ({:.1}%), {} writes and {} tables flushed, in {:.1}s \
             ({:.1} per second); each ran at least {} operations, and a tree reached {} tables \
             over {} levels",
            s.scale,
            100.0 * s.scale as f64 / count.max(1) as f64,
            s.scale_writes,
            s.scale_tables_flushed,
            s.scale_secs,
            s.scale as f64 / s.scale_secs.max(1e-9),
            s.scale_ops_min,
            s.scale_tables_max,
            s.scale_levels_max
        );
        // The standard scenarios alone: the scale share is timed apart and reported above.
        println!(
            "speed: {:.0} scenarios per second ({} in {:.1}s on {jobs} jobs)",
            s.standard as f64 / s.standard_secs.max(1e-9),
            s.standard,
            s.standard_secs
        );
        if let Some(first) = s.failed_seeds.first() {
            println!(
                "first failing seed: {first}; replay with: {}",
                runner::replay_command(*first, bug)
            );
        }
        println!("sim: {} passed, {} failed", s.passed, s.failed);
        i32::from(s.failed > 0)
    }

    fn replay(seed: u64, bug: Option<Bug>) -> i32 {
        // The engine's own `tracing` events interleave with the simulator's trace lines.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .without_time()
            .with_target(false)
            .init();
        let outcome = run_one(seed, bug, Trace::printing());
        println!("options: {:?}", outcome.config);
        println!("trace hash: {:016x}", outcome.trace_hash);
        match outcome.failure {
            Some(_) => {
                print_failure(&outcome);
                1
            }
            None => {
                println!("seed {seed} passed");
                0
            }
        }
    }

    fn check_determinism(seeds: Range<u64>) -> i32 {
        let mut differ = 0u64;
        let count = seeds.end - seeds.start;
        for seed in seeds {
            let a = run_one(seed, None, Trace::default()).trace_hash;
            let b = run_one(seed, None, Trace::default()).trace_hash;
            if a != b {
                differ += 1;
                println!("seed {seed}: trace hashes differ: {a:016x} vs {b:016x}");
            }
        }
        println!("determinism: {} passed, {differ} failed", count - differ);
        i32::from(differ > 0)
    }
}
