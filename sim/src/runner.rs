//! Runs many seeds in parallel and reports, one fresh thread per scenario so nothing from one
//! seed leaks into the next (madsim keeps per-thread state; std's hasher seeds are per thread).

use crate::config::Bug;
use crate::scenario::{self, Outcome, Stats};
use crate::trace::Trace;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The result of a sweep over seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    /// Failed seeds in ascending order.
    pub failed_seeds: Vec<u64>,
    pub totals: Stats,
    /// Scenarios with at least one crash, one recovery, a synced and an unsynced write.
    pub full_coverage: u64,
    pub with_rotation: u64,
    pub with_flush: u64,
    pub with_crash_in_flush: u64,
    pub with_compaction: u64,
    pub with_crash_in_compaction: u64,
    pub with_torn_write: u64,
    pub with_failed_writes: u64,
    pub with_clean_close: u64,
}

/// Runs one scenario on a fresh thread; a panic becomes a failure.
pub fn run_one(seed: u64, bug: Option<Bug>, trace: Trace) -> Outcome {
    let t = trace.clone();
    #[allow(clippy::disallowed_methods)] // the fresh thread per scenario is the point
    let joined = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || scenario::run(seed, bug, t))
        .expect("start a scenario thread")
        .join();
    joined.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into());
        Outcome {
            seed,
            failure: Some(format!("panic: {msg}")),
            trace_hash: trace.hash(),
            stats: Stats::default(),
            recent: trace.recent(),
            config: crate::config::ScenarioConfig::draw(seed, bug),
        }
    })
}

/// Runs `seeds` on `jobs` threads. Failures are printed as they are found, unless `quiet`.
pub fn run_seeds(seeds: Range<u64>, jobs: usize, bug: Option<Bug>, quiet: bool) -> Summary {
    let next = Arc::new(AtomicU64::new(seeds.start));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (next, summary, end) = (Arc::clone(&next), Arc::clone(&summary), seeds.end);
            #[allow(clippy::disallowed_methods)]
            // worker threads of the sweep, outside any simulation
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let outcome = run_one(seed, bug, Trace::default());
                if outcome.failure.is_some() && !quiet {
                    print_failure(&outcome);
                }
                if std::env::var_os("JADEDB_SIM_SHOW_UNCOVERED").is_some()
                    && !covered(&outcome.stats)
                {
                    println!("uncovered seed {}: {:?}", outcome.seed, outcome.stats);
                }
                tally(&mut summary.lock().unwrap_or_else(PoisonError::into_inner), &outcome);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("sweep worker");
    }
    let mut summary = Arc::try_unwrap(summary)
        .expect("workers done")
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    summary.failed_seeds.sort_unstable();
    summary
}

fn tally(s: &mut Summary, o: &Outcome) {
    if o.failure.is_some() {
        s.failed += 1;
        s.failed_seeds.push(o.seed);
    } else {
        s.passed += 1;
    }
    let st = &o.stats;
    let t = &mut s.totals;
    t.crashes += st.crashes;
    t.recoveries += st.recoveries;
    t.writes_acked += st.writes_acked;
    t.synced_acked += st.synced_acked;
    t.writes_failed += st.writes_failed;
    t.reads += st.reads;
    t.clean_closes += st.clean_closes;
    t.rotations += st.rotations;
    t.torn_writes += st.torn_writes;
    t.flushes += st.flushes;
    t.crashes_in_flush += st.crashes_in_flush;
    t.compactions += st.compactions;
    t.crashes_in_compaction += st.crashes_in_compaction;
    t.compact_ranges += st.compact_ranges;
    t.user_flushes += st.user_flushes;
    t.snapshot_reads += st.snapshot_reads;
    t.scans += st.scans;
    let unsynced = st.writes_acked > st.synced_acked;
    s.full_coverage +=
        u64::from(st.crashes > 0 && st.recoveries > 1 && st.synced_acked > 0 && unsynced);
    s.with_rotation += u64::from(st.rotations > 0);
    s.with_flush += u64::from(st.flushes > 0);
    s.with_crash_in_flush += u64::from(st.crashes_in_flush > 0);
    s.with_compaction += u64::from(st.compactions > 0);
    s.with_crash_in_compaction += u64::from(st.crashes_in_compaction > 0);
    s.with_torn_write += u64::from(st.torn_writes > 0);
    s.with_failed_writes += u64::from(st.writes_failed > 0);
    s.with_clean_close += u64::from(st.clean_closes > 0);
}

/// Whether a scenario crashed with synced and unsynced writes acknowledged and recovered.
fn covered(st: &Stats) -> bool {
    let unsynced = st.writes_acked > st.synced_acked;
    st.crashes > 0 && st.recoveries > 1 && st.synced_acked > 0 && unsynced
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64, bug: Option<Bug>) -> String {
    match bug {
        Some(bug) => format!("cargo sim replay --seed {seed} --bug {bug}"),
        None => format!("cargo sim replay --seed {seed}"),
    }
}

/// Prints what a new user needs to chase a failure.
pub fn print_failure(o: &Outcome) {
    let why = o.failure.as_deref().unwrap_or("none");
    println!("FAILED seed={} : {why}", o.seed);
    println!("  options: {:?}", o.config);
    println!("  last events:");
    for e in &o.recent {
        println!("    {e}");
    }
    println!("  reproduce with seed={}: {}", o.seed, replay_command(o.seed, o.config.bug));
}
