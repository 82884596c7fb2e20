//! `jadedb-sim`: runs seeded crash-recovery scenarios against JadeDB.
//!
//! `cargo sim run --seeds 0..10000 [--jobs N]` sweeps seeds (`--seeds random:N`, `--shard I/N`,
//! `--time-budget`, `--json FILE`: see `--help`); `cargo sim merge A.json B.json ...` merges
//! the summaries of a sweep's shards; `cargo sim replay --seed S` reruns one seed with a
//! readable trace and its hash; `cargo sim check-determinism --seeds A..B` runs each seed twice
//! and compares trace hashes. Exit status: 0 all passed, 1 a scenario failed, 2 a usage error
//! or unreadable input.

#[cfg(not(madsim))]
fn main() {
    eprintln!("jadedb-sim must be built with the madsim cfg: use `cargo sim ...`");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    never_purge();
    no_huge_pages();
    std::process::exit(cli::main());
}

/// mimalloc (about 15% faster sweeps than the C allocator), for the simulator binary only: the
/// engine leaves the choice of allocator to the programs that embed it.
#[cfg(madsim)]
#[global_allocator]
static ALLOCATOR: SmallAligned = SmallAligned;

/// mimalloc's alignment for every allocation (`MI_MAX_ALIGN_SIZE`).
#[cfg(madsim)]
const MI_MAX_ALIGN: usize = 16;

/// mimalloc through its plain entry points whenever the alignment asked for is one it gives
/// every block anyway: `mimalloc::MiMalloc` always takes the aligned ones, whose extra checks
/// were 2% of a sweep's instructions.
#[cfg(madsim)]
struct SmallAligned;

// SAFETY: each call is the one `mimalloc::MiMalloc` makes, or its unaligned form where that
// form already gives `layout.align()`: in mimalloc v3 (pinned, without its `secure` or `debug`
// builds) size classes are multiples of two machine words on 16-aligned pages, so a block of
// 16 bytes or more is 16-aligned and a smaller one 8-aligned; an alignment of at most 16 and at
// most the size is thus met (one below 16 is at most 8). `mi_free` takes blocks of either.
#[cfg(madsim)]
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for SmallAligned {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if layout.align() <= MI_MAX_ALIGN && layout.align() <= layout.size() {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if layout.align() <= MI_MAX_ALIGN && layout.align() <= layout.size() {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        if layout.align() <= MI_MAX_ALIGN && layout.align() <= new {
            mi::mi_realloc(ptr.cast(), new).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new, layout.align()).cast()
        }
    }
}

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the crate names no constant for it).
#[cfg(madsim)]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns off mimalloc's delayed return of freed memory to the system, before any simulation
/// starts. Deciding when to purge is where mimalloc reads the clock after start-up, and inside
/// a simulation madsim answers `clock_gettime` itself, from its runtime's state: a read from
/// inside an allocation could re-enter madsim while it holds that state (a panic or deadlock in
/// the allocator). With purging off, the only clock reads left are at process start, before
/// any simulation (counted with callgrind over seeds 0..150: 3 reads, against 3,170 in seeds
/// 0..40 with purging on). A sweep keeps its memory anyway.
#[cfg(madsim)]
#[allow(unsafe_code)]
fn never_purge() {
    // SAFETY: both calls only store and load a value in mimalloc's option table; nothing else
    // runs yet (no thread is started before this).
    let set = unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    };
    assert_eq!(set, -1, "mimalloc's purge delay could not be turned off");
}

/// Turns off transparent huge pages for this process. mimalloc asks for them, and every new
/// one is a 2 MiB page the kernel zeroes on first touch: with a fresh thread per scenario, a
/// sweep kept faulting them in (5% of its cycles under perf; RSS 71 MiB against 36 MiB without
/// them over seeds 0..3000). mimalloc decides at start-up, before `main`, so its own option
/// comes too late; the process-wide flag is checked at each fault.
#[cfg(all(madsim, target_os = "linux"))]
#[allow(unsafe_code)]
fn no_huge_pages() {
    use std::ffi::{c_int, c_ulong};
    extern "C" {
        fn prctl(
            option: c_int,
            arg2: c_ulong,
            arg3: c_ulong,
            arg4: c_ulong,
            arg5: c_ulong,
        ) -> c_int;
    }
    const PR_SET_THP_DISABLE: c_int = 41;
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process; it reads no memory of ours.
    // A kernel without it refuses with an error, and the sweep runs as before.
    unsafe {
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(all(madsim, not(target_os = "linux")))]
fn no_huge_pages() {}

#[cfg(madsim)]
mod cli {
    use clap::{Parser, Subcommand};
    use jadedb_sim::config::Bug;
    use jadedb_sim::config::ScenarioConfig;
    use jadedb_sim::report::{self, SweepDoc};
    use jadedb_sim::runner::{
        print_failure, print_failure_with, run_config_within, run_one, run_seeds_of, SweepOptions,
        SEED_BUDGET,
    };
    use jadedb_sim::scenario_file::{check_of, describe, ScenarioFile};
    use jadedb_sim::sweep::{fmt_duration, os_entropy, parse_duration, Only, Seeds, Shard};
    use jadedb_sim::trace::Trace;
    use std::io::IsTerminal;
    use std::ops::Range;
    use std::path::PathBuf;
    use std::time::Duration;

    /// Exit status of a usage error, a build error, or input that cannot be read.
    const USAGE: i32 = 2;

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
            /// Seeds as START..END (END excluded), or random:N for N seeds from a random
            /// start (printed first, so that any failure replays).
            #[arg(long, value_parser = Seeds::parse)]
            seeds: Seeds,
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
            /// Stop starting seeds after this long (90s, 10m, 1h30m): the standard seeds get
            /// half of it when scale seeds follow, and the report says which seeds ran.
            #[arg(long, value_parser = parse_duration)]
            time_budget: Option<Duration>,
            /// The wall-clock time one scenario may take before it fails as livelocked.
            #[arg(long, value_parser = parse_duration, default_value = "120s")]
            seed_budget: Duration,
            /// Also write the summary as JSON to this file (for `merge`).
            #[arg(long)]
            json: Option<PathBuf>,
        },
        /// Merge the JSON summaries of a sweep's shards into the report of the whole sweep.
        Merge {
            /// The shards' summaries (`run --shard I/N --json FILE`), every shard once.
            #[arg(required = true)]
            summaries: Vec<PathBuf>,
            /// Also write the merged summary as JSON to this file.
            #[arg(long)]
            json: Option<PathBuf>,
        },
        /// Rerun one seed, or a scenario file, with a readable trace and its hash.
        Replay {
            #[command(flatten)]
            scenario: Which,
        },
        /// Check every crash state of a small workload: the first cycle of a seed's scenario
        /// (or of a scenario file), faults off; before each sync and at the crash, every disk
        /// a power loss could leave is recovered and checked.
        Exhaustive {
            #[command(flatten)]
            scenario: Which,
            /// The most crash states checked per moment.
            #[arg(long, default_value_t = 1000)]
            max_states: usize,
            /// Go on past the first failing state.
            #[arg(long)]
            all: bool,
        },
        /// Shrink the failing scenario of a seed to a small one that fails the same check, and
        /// write it as a scenario file.
        Shrink {
            #[arg(long)]
            seed: u64,
            #[arg(long, value_parser = Bug::parse)]
            bug: Option<Bug>,
            /// Where to write the scenario file (default:
            /// tests/scenarios/<bug or "seed">-<seed>.json, replayed by
            /// `cargo sim-test --test scenarios`).
            #[arg(long)]
            out: Option<PathBuf>,
            /// The most scenarios to run while shrinking.
            #[arg(long, default_value_t = 5000)]
            max_runs: u64,
        },
        /// Run each seed twice and compare the trace hashes.
        CheckDeterminism {
            #[arg(long, value_parser = parse_range)]
            seeds: Range<u64>,
        },
    }

    /// A scenario: a seed's (with a planted bug, if any) or a scenario file's.
    #[derive(clap::Args)]
    struct Which {
        /// The seed whose scenario to run.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        seed: Option<u64>,
        /// A scenario file (`cargo sim shrink` writes them), run with the bug it names planted.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Plant this bug (with --seed).
        #[arg(long, value_parser = Bug::parse, conflicts_with = "file")]
        bug: Option<Bug>,
        /// Run the file without the bug it names: it must pass.
        #[arg(long, requires = "file")]
        without_bug: bool,
    }

    impl Which {
        /// The scenario's configuration and the file it came from, if any; or the exit status
        /// of an unreadable file.
        fn config(self) -> Result<(ScenarioConfig, Option<PathBuf>), i32> {
            match (self.seed, self.file) {
                (Some(seed), _) => Ok((ScenarioConfig::draw(seed, self.bug), None)),
                (None, Some(path)) => {
                    let file = load(&path)?;
                    println!("scenario: {} ({})", path.display(), file.about);
                    let bug = if self.without_bug { None } else { file.config.bug };
                    Ok((ScenarioConfig { bug, ..file.config }, Some(path)))
                }
                (None, None) => Err(USAGE),
            }
        }
    }

    fn parse_range(s: &str) -> Result<Range<u64>, String> {
        match Seeds::parse(s)? {
            Seeds::Range(r) => Ok(r),
            Seeds::Random(_) => Err("expected START..END".into()),
        }
    }

    pub fn main() -> i32 {
        match Cli::parse().command {
            Command::Run { seeds, jobs, bug, only, shard, time_budget, seed_budget, json } => {
                let jobs = jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                let options = SweepOptions {
                    quiet: false,
                    progress: std::io::stderr().is_terminal(),
                    time_budget,
                    seed_budget,
                    ..SweepOptions::new(jobs, bug)
                };
                run(&seeds, only, shard, &options, json)
            }
            Command::Merge { summaries, json } => merge(&summaries, json),
            Command::Replay { scenario } => match scenario.config() {
                Ok((config, file)) => replay(config, file),
                Err(status) => status,
            },
            Command::Shrink { seed, bug, out, max_runs } => shrink(seed, bug, out, max_runs),
            Command::Exhaustive { scenario, max_states, all } => match scenario.config() {
                Ok((config, _)) => exhaustive(&config, max_states, all),
                Err(status) => status,
            },
            Command::CheckDeterminism { seeds } => check_determinism(seeds),
        }
    }

    fn run(
        seeds: &Seeds,
        only: Only,
        shard: Shard,
        options: &SweepOptions,
        json: Option<PathBuf>,
    ) -> i32 {
        if matches!(seeds, Seeds::Random(_)) && shard != Shard::WHOLE {
            // Each shard would draw its own start, and the shards would cover no one range.
            eprintln!(
                "error: shards of one sweep need one range: draw it once and give every shard \
                 --seeds START..END"
            );
            return USAGE;
        }
        let mut entropy_error = None;
        let range = seeds.resolve(|| {
            os_entropy().unwrap_or_else(|e| {
                entropy_error = Some(e);
                0
            })
        });
        if let Some(e) = entropy_error {
            eprintln!("error: cannot draw a random start from /dev/urandom: {e}");
            return USAGE;
        }
        if let Seeds::Random(n) = seeds {
            println!(
                "seeds: random:{n} drew {}..{}; run them again with --seeds {0}..{1}",
                range.start, range.end
            );
        }
        if options.seed_budget != SEED_BUDGET {
            println!("seed budget: {} per scenario", fmt_duration(options.seed_budget));
        }
        let summary = run_seeds_of(range.clone(), only, shard, options);
        let doc = SweepDoc::of_run(
            range,
            matches!(seeds, Seeds::Random(_)),
            only,
            options.bug,
            shard,
            options.jobs,
            options.time_budget,
            summary,
        );
        finish(&doc, json)
    }

    /// Prints the report, writes the JSON summary if asked, and gives the exit status.
    fn finish(doc: &SweepDoc, json: Option<PathBuf>) -> i32 {
        for line in report::lines(doc) {
            println!("{line}");
        }
        if let Some(path) = json {
            #[allow(clippy::disallowed_methods)] // the sweep's own output, not the engine's files
            if let Err(e) = std::fs::write(&path, doc.to_json()) {
                eprintln!("error: cannot write the summary to {}: {e}", path.display());
                return USAGE;
            }
        }
        i32::from(doc.summary.failed > 0)
    }

    fn merge(paths: &[PathBuf], json: Option<PathBuf>) -> i32 {
        let mut docs = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            let doc = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| SweepDoc::from_json(&text));
            match doc {
                Ok(doc) => docs.push((name, doc)),
                Err(e) => {
                    eprintln!("error: {name} is not a sweep summary: {e}");
                    return USAGE;
                }
            }
        }
        match report::merge(&docs) {
            Ok(merged) => finish(&merged, json),
            Err(e) => {
                eprintln!("error: {e}");
                USAGE
            }
        }
    }

    /// Reads a scenario file, or says why not and gives the exit status.
    fn load(path: &std::path::Path) -> Result<ScenarioFile, i32> {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| ScenarioFile::from_json(&text))
            .map_err(|e| {
                eprintln!("error: {} is not a scenario file: {e}", path.display());
                USAGE
            })
    }

    fn exhaustive(config: &ScenarioConfig, max_states: usize, all: bool) -> i32 {
        let r = jadedb_sim::exhaustive::run(config, max_states, !all);
        println!(
            "exhaustive: the first cycle of seed {}'s scenario, faults off: {} operations, {} \
             moments (before each sync and at the crash), {} crash states checked ({} moments \
             had more than {max_states}) in {:.1}s ({:.0} states per second; recording took \
             {:.2}s)",
            config.seed,
            r.ops,
            r.points,
            r.states,
            r.capped_points,
            r.check_secs,
            r.states as f64 / r.check_secs.max(1e-9),
            r.record_secs
        );
        if let Some(why) = &r.recording_failure {
            println!("the recorded run itself failed: {why}");
        }
        for (point, image, why) in r.failures.iter().take(10) {
            println!("failing state: moment {point}, crash image {image}: {why}");
        }
        let failed = r.failures.len() as u64 + u64::from(r.recording_failure.is_some());
        println!("exhaustive: {} passed, {failed} failed", r.states - r.failures.len() as u64);
        i32::from(failed > 0)
    }

    fn shrink(seed: u64, bug: Option<Bug>, out: Option<PathBuf>, max_runs: u64) -> i32 {
        let config = ScenarioConfig::draw(seed, bug);
        let mut log = |line: &str| println!("{line}");
        let shrunk = match jadedb_sim::shrink::shrink(config, max_runs, &mut log) {
            Ok(shrunk) => shrunk,
            Err(e) => {
                eprintln!("error: seed {seed}: {e}");
                return USAGE;
            }
        };
        for line in describe(&shrunk.config) {
            println!("{line}");
        }
        println!("fails: {}", shrunk.reason);
        if bug.is_some() {
            // The file will claim the bug is what fails it: the scenario must pass without it.
            let without = ScenarioConfig { bug: None, ..shrunk.config.clone() };
            let failure = run_config_within(without, Trace::silent(), SEED_BUDGET).failure;
            if let Some(why) = failure {
                println!("the shrunk scenario fails without the planted bug too: {why}");
                println!("that is a failure of the engine itself: shrink the seed without --bug");
                return 1;
            }
        }
        let name = format!("{}-{seed}", bug.map_or("seed", |b| b.name()));
        let path = out.unwrap_or_else(|| PathBuf::from(format!("tests/scenarios/{name}.json")));
        let about = match bug {
            Some(bug) => format!(
                "the planted bug {bug}, found by seed {seed} and shrunk: with the bug it fails \
                 the check below, without it it passes"
            ),
            None => {
                format!("seed {seed}, shrunk: a failure of the engine, kept as a regression test")
            }
        };
        let file = ScenarioFile {
            format: jadedb_sim::scenario_file::FORMAT.to_string(),
            about,
            check: shrunk.check.clone(),
            shrunk_from_seed: Some(seed),
            config: shrunk.config,
        };
        let written = path
            .parent()
            .map_or(Ok(()), |dir| {
                #[allow(clippy::disallowed_methods)] // the simulator's own output
                std::fs::create_dir_all(dir)
            })
            .and_then(|()| {
                #[allow(clippy::disallowed_methods)] // the simulator's own output
                std::fs::write(&path, file.to_json())
            });
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return USAGE;
        }
        // The file, read back, must fail as the shrinker saw: it is what the test replays.
        let again = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| ScenarioFile::from_json(&text))
            .map(|f| run_config_within(f.config, Trace::silent(), SEED_BUDGET).failure);
        match again {
            Ok(Some(why)) if check_of(&why) == shrunk.check => {}
            other => {
                eprintln!(
                    "error: {} read back does not fail the same check: {other:?}",
                    path.display()
                );
                return USAGE;
            }
        }
        println!(
            "shrunk: seed {seed} from {} to {} operations in {} runs, failing the check {:?}; \
             wrote {path} (replay: cargo sim replay --file {path}; regression test: cargo \
             sim-test --test scenarios)",
            shrunk.ops_before,
            shrunk.ops_after,
            shrunk.runs,
            shrunk.check,
            path = path.display()
        );
        0
    }

    fn replay(config: ScenarioConfig, file: Option<PathBuf>) -> i32 {
        let seed = config.seed;
        // The engine's own `tracing` events interleave with the simulator's trace lines.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .without_time()
            .with_target(false)
            .init();
        let outcome = run_config_within(config, Trace::printing(), SEED_BUDGET);
        println!("options: {:?}", outcome.config);
        println!("trace hash: {:016x}", outcome.trace_hash);
        match outcome.failure {
            Some(_) => {
                match file {
                    None => print_failure(&outcome),
                    Some(file) => {
                        let bug = if outcome.config.bug.is_some() { "" } else { " --without-bug" };
                        let replay = format!("cargo sim replay --file {}{bug}", file.display());
                        print_failure_with(&outcome, &replay, None);
                    }
                }
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
